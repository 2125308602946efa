"""``samplerbench compare``'s summary: Markdown and a self-contained HTML page (jinja2) of two
runs' differences per cell and metric, with their paired intervals, and the one-sided cells."""

from __future__ import annotations

from pathlib import Path

import jinja2
import pandas as pd

from samplerbench.reports.intervals import SIGNIFICANT

PAGE = jinja2.Template("""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{{ title }}</title>
<style>
body { font: 14px/1.4 system-ui, sans-serif; margin: 2em; color: #222 }
table { border-collapse: collapse; margin: 1em 0 } th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: right }
th { background: #f3f3f3 } td.l { text-align: left } tr.sig td { background: #fff3cd }
caption { caption-side: bottom; text-align: left; font-size: 12px; color: #555; padding-top: 4px }
</style></head><body>
<h1>{{ title }}</h1>
<p>{{ summary }}</p>
<table id="differences"><caption>{{ note }}</caption>
<thead><tr>{% for c in columns %}<th>{{ c }}</th>{% endfor %}</tr></thead>
<tbody>{% for r in rows %}<tr class="{{ 'sig' if r.significant else '' }}">{% for c in columns %}<td class="{{ 'l' if c in left else '' }}">{{ r[c] }}</td>{% endfor %}</tr>{% endfor %}</tbody>
</table>
{% if alone %}<h2>Cells in one run only</h2>
<table id="alone"><thead><tr><th>Task</th><th>Cell</th><th>Only in</th></tr></thead>
<tbody>{% for r in alone %}<tr><td class="l">{{ r.task }}</td><td class="l">{{ r.cell }}</td><td>{{ r.only_in }}</td></tr>{% endfor %}</tbody></table>{% endif %}
</body></html>
""", autoescape=True)


def render_compare(diffs: pd.DataFrame, alone: pd.DataFrame, run_a: Path, run_b: Path, out: Path, alpha: float = 0.05) -> Path:
    """``compare.md`` and ``compare.html`` in ``out``; returns the folder."""
    out.mkdir(parents=True, exist_ok=True)
    title = f"{Path(run_b).name} (B) against {Path(run_a).name} (A)"
    changed = diffs[diffs["changed"]] if len(diffs) else diffs
    summary = (f"{diffs['cell'].nunique() if len(diffs) else 0} cells in both runs; {len(changed)} (cell, metric) "
               f"values differ, {int(diffs['significant'].sum()) if len(diffs) else 0} of them significantly; "
               f"{len(alone)} cells in one run only.")
    note = (f"B - A on the videos both runs evaluated, with its {int(round(100 * (1 - alpha)))}% paired bootstrap "
            f"interval (the same resampled videos for both). {SIGNIFICANT}: two-sided p < {alpha:g}.")
    table = pd.DataFrame()
    if len(diffs):
        table = pd.DataFrame({
            "Task": diffs["task"], "Cell": diffs["label"].astype(str) + " N=" + diffs["budget"].astype(str)
            + " seed " + diffs["seed"].astype(str), "Metric": diffs["metric"],
            "A": diffs["a"].map("{:.4f}".format), "B": diffs["b"].map("{:.4f}".format),
            "B - A": [f"{d:+.4f}" + (f" {SIGNIFICANT}" if s else "") for d, s in zip(diffs["diff"], diffs["significant"], strict=True)],
            "Interval": [f"[{lo:+.4f}, {hi:+.4f}]" for lo, hi in zip(diffs["lo"], diffs["hi"], strict=True)],
            "p": diffs["p_bootstrap"].map("{:.3g}".format), "Videos": diffs["n_videos"]})
    md = [f"# {title}", "", summary, "", note, ""]
    md.append(table.to_markdown(index=False) if len(table) else "(no cell in both runs)")
    if len(alone):
        md += ["", "## Cells in one run only", "", alone[["task", "cell", "only_in"]].to_markdown(index=False)]
    (out / "compare.md").write_text("\n".join(md) + "\n")
    rows = [{**r, "significant": bool(s)} for r, s in zip(table.to_dict("records"), diffs.get("significant", []),
                                                           strict=False)]
    (out / "compare.html").write_text(PAGE.render(title=title, summary=summary, note=note, columns=list(table.columns),
                                                  rows=rows, left={"Task", "Cell", "Metric"},
                                                  alone=alone.to_dict("records") if len(alone) else []))
    return out
