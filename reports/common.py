"""What every table of the report shares: the upper-bound and did-not-learn marks and the
same-videos note."""

from __future__ import annotations

import numpy as np
import pandas as pd

from samplerbench.metrics.stats import NOT_LEARNED

UPPER = "†"
UPPER_NOTE = f" {UPPER} sees the labels: an upper bound, not a baseline."


def mark_upper_bounds(df: pd.DataFrame, column: str = "label") -> pd.DataFrame:
    """``column`` with † appended on the rows of upper-bound methods (rows carry ``upper_bound``)."""
    df = df.copy()
    if "upper_bound" in df:
        df[column] = df[column].astype(str) + np.where(df["upper_bound"].astype(bool), UPPER, "")
    return df


UNLEARNED = "⊘"
UNLEARNED_NOTE = (f" {UNLEARNED} its reader (or the method's own trained piece) did not learn: validation score "
                  "within 3 binomial standard errors of chance. Those numbers are no comparison.")


def mark_unlearned(df: pd.DataFrame, column: str = "label") -> pd.DataFrame:
    """``column`` with ⊘ appended on every row of a method any of whose cells has a reader that
    did not learn (rows carry ``reader``)."""
    df = df.copy()
    if "reader" in df:
        bad = set(df.loc[df["reader"].astype("string").fillna("") == NOT_LEARNED, "label"])
        df[column] = df[column].astype(str) + np.where(df["label"].isin(bad), UNLEARNED, "")
    return df


def plain(label: str) -> str:
    """A table's method name without its marks (the rows' label)."""
    return label.removesuffix(UNLEARNED).removesuffix(UPPER).removesuffix(UNLEARNED).strip()


def same_videos_note(df: pd.DataFrame) -> str:
    """A caption sentence: how many videos the methods are compared on, and how many of some
    method's videos were left out because another method failed on them."""
    if "n_videos" not in df or df.empty:
        return ""
    n = int(df["n_videos"].min())
    excluded = int(df["n_excluded"].max()) if "n_excluded" in df else 0
    failed = int(df["n_failed"].max()) if "n_failed" in df else 0
    note = f"Every method is scored on the same {n} videos"
    if excluded:
        note += (f"; {excluded} video(s) that some method failed on are excluded from every method's numbers "
                 "(see failures.csv and the Videos/Failed columns)")
    elif failed:
        note += f"; {failed} video(s) could not be evaluated by any method (failures.csv)"
    return note + ". "


def mean_std(mean: float, std: float, n: int, fmt: str) -> str:
    """``mean ± std`` over n seeds, or the mean alone when the seeds agree: the std of equal
    floats comes out as 4e-16 and printed as a spurious ``± 0.0``."""
    if pd.isna(mean):
        return "–"
    s = fmt.format(mean)
    if n > 1 and not pd.isna(std) and std > 1e-9 * max(1.0, abs(mean)):
        s += " ± " + fmt.format(std)
    return s
