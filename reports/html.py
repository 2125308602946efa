"""One self-contained HTML page per run (``reports/out/<run-id>/index.html``, jinja2): the
tables (sortable: click a header), the plots embedded as data URIs, the failures, the
provenance summary, and a selection strip per test video and method: the candidates' thumbnails
in time order, the selected ones outlined, the labelled events marked beneath. Nothing is
fetched from the network; a script on load records in ``body[data-check]`` how many images
loaded and how many rows each table has (the browser test reads it)."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import jinja2
import numpy as np
import pandas as pd
from PIL import Image

TEMPLATE = jinja2.Template("""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{{ title }}</title>
<style>
body { font: 14px/1.45 system-ui, sans-serif; margin: 1.5em 2em; color: #222; max-width: 1500px }
h2 { margin-top: 1.6em; border-bottom: 1px solid #ddd } figure { margin: 1em 0 } img.plot { max-width: 100% }
table { border-collapse: collapse; margin: .6em 0; font-size: 13px }
th, td { border: 1px solid #ccc; padding: 2px 7px; text-align: right; white-space: nowrap }
th { background: #f2f2f2; cursor: pointer } td:first-child, th:first-child { text-align: left }
p.caption { font-size: 12px; color: #555; max-width: 1200px } dl { display: grid; grid-template-columns: max-content auto; gap: 2px 12px }
.strip { display: flex; gap: 2px; align-items: flex-start; margin: 2px 0 } .strip .name { width: 150px; font-size: 12px; flex: none }
.th { width: {{ thumb }}px; height: {{ thumb }}px; background-size: cover; border: 2px solid transparent; opacity: .45; box-sizing: content-box }
.th.sel { border-color: #d62728; opacity: 1 } .th.ev { border-bottom: 4px solid #2ca02c }
div.scroll { overflow-x: auto } dd { overflow-wrap: anywhere; margin: 0 }
{{ thumb_css }}
</style></head>
<body>
<h1>{{ title }}</h1>
<p>{{ summary }}</p>
{% for t in tables %}<h2>{{ t.title }}</h2>
<div class="scroll"><table class="sortable" id="{{ t.id }}"><thead><tr>{% for c in t.columns %}<th>{{ c }}</th>{% endfor %}</tr></thead>
<tbody>{% for r in t.rows %}<tr>{% for v in r %}<td>{{ v }}</td>{% endfor %}</tr>{% endfor %}</tbody></table></div>
<p class="caption">{{ t.caption }}</p>
{% endfor %}
{% for f in figures %}<figure><img class="plot" alt="{{ f.title }}" src="{{ f.uri }}"><figcaption>{{ f.title }}</figcaption></figure>{% endfor %}
{% if strips %}<h2>What each method picked</h2>
<p class="caption">{{ strip_note }}</p>
{% for v in strips %}<h3>{{ v.video }}</h3>
{% for m in v.methods %}<div class="strip"><span class="name">{{ m.name }}</span>{% for c in m.cells %}<div class="th t{{ v.i }}-{{ loop.index0 }}{{ ' sel' if c.sel }}{{ ' ev' if c.ev }}" title="frame {{ c.frame }}"></div>{% endfor %}</div>
{% endfor %}{% endfor %}{% endif %}
<h2>Failures</h2>
{% if failures %}<div class="scroll"><table class="sortable" id="failures"><thead><tr>{% for c in failure_columns %}<th>{{ c }}</th>{% endfor %}</tr></thead>
<tbody>{% for r in failures %}<tr>{% for v in r %}<td>{{ v }}</td>{% endfor %}</tr>{% endfor %}</tbody></table></div>{% else %}<p>None: every video was evaluated by every method.</p>{% endif %}
<h2>Provenance</h2>
<dl>{% for k, v in provenance %}<dt>{{ k }}</dt><dd>{{ v }}</dd>{% endfor %}</dl>
<script>
for (const table of document.querySelectorAll("table.sortable")) {
  table.querySelectorAll("th").forEach((th, col) => th.addEventListener("click", () => {
    const body = table.tBodies[0], rows = Array.from(body.rows), asc = th.dataset.asc !== "1";
    const key = r => { const t = r.cells[col].textContent.trim(), x = parseFloat(t); return isNaN(x) ? t : x; };
    rows.sort((a, b) => { const x = key(a), y = key(b); return (x > y ? 1 : x < y ? -1 : 0) * (asc ? 1 : -1); });
    th.dataset.asc = asc ? "1" : "0"; rows.forEach(r => body.appendChild(r));
  }));
}
window.addEventListener("load", () => {
  const imgs = Array.from(document.images);
  const tables = {}; for (const t of document.querySelectorAll("table")) tables[t.id] = t.tBodies[0].rows.length;
  document.body.dataset.check = JSON.stringify({images: imgs.length, loaded: imgs.filter(i => i.complete && i.naturalWidth > 0).length,
                                                tables: tables, thumbs: document.querySelectorAll(".th").length});
});
</script>
</body></html>
""", autoescape=True)

THUMB = 40


def _png_uri(path_or_array) -> str:
    if isinstance(path_or_array, np.ndarray):
        buf = io.BytesIO()
        Image.fromarray(path_or_array).save(buf, format="PNG")
        data = buf.getvalue()
    else:
        data = Path(path_or_array).read_bytes()
    return "data:image/png;base64," + base64.b64encode(data).decode()


def _table(csv: Path) -> dict:
    """A report table from its CSV, with the caption its Markdown twin starts with."""
    df = pd.read_csv(csv, keep_default_na=False)
    md = csv.with_suffix(".md")
    caption = md.read_text().split("\n\n", 1)[0] if md.is_file() else ""
    return {"id": csv.stem, "title": csv.stem.removeprefix("table_").replace("_", " "), "columns": list(df.columns),
            "rows": df.astype(str).values.tolist(), "caption": caption}


def _strips(run_dir: Path, budget_pick: int | None) -> tuple[list[dict], str, str]:
    """Per stored test video (``strips.npz``, written by the run) and method, at one budget and the
    first seed: which candidates were selected and which lie in a labelled event."""
    path = Path(run_dir) / "strips.npz"
    sel_path = Path(run_dir) / "classification_selections.jsonl"
    if not path.is_file() or not sel_path.is_file():
        return [], "", ""
    with np.load(path, allow_pickle=False) as z:
        thumbs, cands, videos = z["thumbs"], z["candidates"], [str(v) for v in z["videos"]]
    sel = pd.read_json(sel_path, lines=True)
    sel = sel[sel["video"].isin(videos)]
    parts = sel["cell"].str.extract(r"^(?P<m>.+)__n(?P<n>\d+)__s(?P<s>\d+)$")
    sel = sel.assign(m=parts["m"], n=parts["n"].astype(int), s=parts["s"].astype(int))
    per_method = sel.groupby("m")["n"].unique()
    budgets = sorted({int(b) for bs in per_method for b in bs if len(bs) > 1}) or sorted(sel["n"].unique())
    if not budgets:
        return [], "", ""
    budget = budget_pick if budget_pick in budgets else budgets[len(budgets) // 2]
    seed = int(sel["s"].min())
    # a method that ignores the budget (dense) has one cell: shown at its own
    own = {m: (budget if budget in bs else int(bs[0])) for m, bs in per_method.items() if budget in bs or len(bs) == 1}
    sel = sel[sel["m"].map(own).eq(sel["n"]) & (sel["s"] == seed)]
    rows_csv = Path(run_dir) / "rows.csv"
    labels = {}
    if rows_csv.is_file():  # the method's key in the cell name -> its display label
        r = pd.read_csv(rows_csv, usecols=["method", "label"]).drop_duplicates("method")
        labels = dict(zip(r["method"], r["label"], strict=True))
    css, out = [], []
    for i, vid in enumerate(videos):
        for j in range(thumbs.shape[1]):
            css.append(f".t{i}-{j} {{ background-image: url({_png_uri(thumbs[i, j].transpose(1, 2, 0))}) }}")
        rows = sel[sel["video"] == vid]
        methods = []
        for r in rows.itertuples():
            chosen = set(int(f) for f in r.frames)
            events = [tuple(e) for e in (r.events or [])]
            methods.append({"name": labels.get(r.m, r.m), "cells": [{"frame": int(f), "sel": int(f) in chosen,
                                                    "ev": any(a <= f < b for a, b in events)} for f in cands[i]]})
        out.append({"i": i, "video": vid, "methods": methods})
    note = (f"Budget N={budget}, seed {seed} (methods that ignore the budget at theirs). Each square is a candidate "
            "frame in time order; outlined in red: selected (for token samplers: a frame one of its tokens comes "
            "from); green underline: inside a labelled event.")
    return out, note, "\n".join(css)


def _table_order(path: Path) -> tuple[int, str]:
    """The headline table first, then the others by name."""
    first = ("table_top1", "table_pareto", "table_hit_rate", "table_detail")
    return (first.index(path.stem) if path.stem in first else len(first), path.stem)


def render_page(run_dir: Path, out: Path, provs: list[dict], budget: int | None = None) -> Path:
    """``index.html`` in ``out`` from the report's tables (CSV, captions from their Markdown) and
    PNG plots already there, the run's failures, its provenance records (``provs``, oldest
    first, as the renderer read them) and selection strips."""
    run_dir, out = Path(run_dir), Path(out)
    p0 = provs[-1] if provs else {}
    hw = p0.get("hardware", {})
    provenance = [("run", run_dir.name), ("suite", f"{p0.get('suite')} ({str(p0.get('suite_hash'))[:12]})"),
                  ("dataset", f"{p0.get('dataset')} / {p0.get('split')}, manifest {str(p0.get('manifest_hash'))[:12]}"),
                  ("commit", f"{str(p0.get('git_commit'))[:10]}{' (dirty)' if p0.get('git_dirty') else ''}"),
                  ("hardware", f"{hw.get('cpu')}, {hw.get('cpu_cores')} cores, device {hw.get('device')}"),
                  ("threads", json.dumps(hw.get("threads", {}))), ("decode backend", hw.get("decode_backend", "–")),
                  ("torch", (p0.get("packages") or {}).get("torch")), ("recorded", p0.get("time_utc")),
                  ("command", " ".join(p0.get("command", [])) if isinstance(p0.get("command"), list) else p0.get("command"))]
    failures_csv = run_dir / "failures.csv"
    fails = pd.read_csv(failures_csv) if failures_csv.is_file() and failures_csv.stat().st_size else pd.DataFrame()
    fails = failures_by_video(fails)
    strips, note, css = _strips(run_dir, budget)
    page = TEMPLATE.render(
        title=f"samplerbench: {run_dir.name}", summary=f"{p0.get('suite')} suite on {p0.get('dataset')}; "
        f"{len(provs)} invocation(s) recorded.",
        tables=[_table(p) for p in sorted(out.glob("table_*.csv"), key=_table_order)],
        figures=[{"title": p.stem.replace("_", " "), "uri": _png_uri(p)} for p in sorted(out.glob("*.png"))],
        strips=strips, strip_note=note, thumb=THUMB, thumb_css=css,
        failures=fails.astype(str).values.tolist(), failure_columns=list(fails.columns),
        provenance=[(k, v) for k, v in provenance if v not in (None, "")])
    path = out / "index.html"
    path.write_text(page)
    return path


def failures_by_video(fails: pd.DataFrame, shown: int = 4) -> pd.DataFrame:
    """One row per (task, video): its first error and the cells it failed in (how many, the
    first few); ``failures.csv`` keeps every (cell, video)."""
    if fails.empty or not {"task", "cell", "video", "error"} <= set(fails.columns):
        return fails

    def cells(c: pd.Series) -> str:
        names = list(c)
        return f"{len(names)}: " + ", ".join(names[:shown]) + (", ..." if len(names) > shown else "")

    return (fails.groupby(["task", "video"], sort=False)
            .agg(cells=("cell", cells), error=("error", "first")).reset_index())

