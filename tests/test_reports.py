"""Report formatting: a spread over seeds is shown only where the seeds differ."""

import pandas as pd

from samplerbench.reports.common import mean_std


def test_equal_seeds_show_no_spread():
    # the three seeds of a deterministic method at a matched count: pandas' std of the equal
    # floats is 5.4e-16, which printed as "2.7 ± 0.0" in the retrieval table
    v = pd.Series([2.666666666666667] * 3)
    assert v.std() > 0
    assert mean_std(v.mean(), v.std(), len(v), "{:.1f}") == "2.7"
    w = pd.Series([2.0, 3.0, 4.0])
    assert mean_std(w.mean(), w.std(), len(w), "{:.1f}") == "3.0 ± 1.0"
    assert mean_std(float("nan"), 0.0, 3, "{:.1f}") == "–"
    assert mean_std(5.0, 1.0, 1, "{:.1f}") == "5.0"
