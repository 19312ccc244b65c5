"""The quality-review report: run the notebooks on a data set, write one standalone HTML file.

The HTML holds no code, needs no network (charts are embedded images, styles inline), and
opens with what it was made from: the input files with row counts and SHA-256, the
protocol id and version, the software version and the date. `audit.xlsx` is written beside
it. Outputs are written whole or not at all.
"""

from __future__ import annotations

import html
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nbformat
import pandas as pd
from nbconvert.filters import markdown2html_mistune

from outcomes import __version__
from outcomes.audit import write_audit
from outcomes.dataset import Dataset
from outcomes.files import write_atomic
from outcomes.notebooks import NOTEBOOKS, NotebookError, execute_notebook, notebook_dir
from outcomes.progress import Progress
from outcomes.protocol import Protocol, load_protocol
from outcomes.study import open as open_study

ANCHOR_LINK = re.compile(r'<a class="anchor-link"[^>]*>.*?</a>', re.DOTALL)
CSS = """
body{font-family:-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;max-width:1100px;
margin:2em auto;padding:0 1.5em;color:#1a1a1a;line-height:1.45}
h1{border-bottom:3px solid #0072B2;padding-bottom:.2em;margin-top:2.2em}
h2{margin-top:1.8em;border-bottom:1px solid #ddd;padding-bottom:.15em}
table{border-collapse:collapse;margin:.6em 0 1.2em;font-size:.88em;display:block;
overflow-x:auto;max-width:100%}
th,td{border:1px solid #ccc;padding:.25em .55em;text-align:right}
th{background:#f2f2f2}td:first-child,th:first-child{text-align:left}
img{max-width:100%;height:auto;display:block;margin:.6em 0 1.4em}
.meta td{text-align:left}.meta{font-size:.9em}
nav{background:#f7f7f7;border:1px solid #e2e2e2;padding:.6em 1.2em;margin:1em 0}
nav ol{margin:.2em 0}pre{background:#f7f7f7;padding:.6em;overflow-x:auto;font-size:.85em}
.note{color:#555;font-size:.9em}
"""


@dataclass
class ReportResult:
    """Where the report went and how long each part took."""

    html: Path
    workbook: Path
    timings: dict[str, float]


def _slug(text: str, used: set[str]) -> str:
    base = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "section"
    slug, n = base, 2
    while slug in used:
        slug, n = f"{base}-{n}", n + 1
    used.add(slug)
    return slug


def render_notebook(nb: nbformat.NotebookNode, used: set[str]) -> tuple[str, list[tuple[int, str, str]]]:
    """One executed notebook as HTML without code, and its headings (level, id, text)."""
    parts: list[str] = []
    heads: list[tuple[int, str, str]] = []

    def anchor(m: re.Match[str]) -> str:
        level, text = int(m.group(1)), re.sub(r"<[^>]+>", "", m.group(3))
        ident = _slug(html.unescape(text), used)
        heads.append((level, ident, html.unescape(text)))
        attrs = re.sub(r'\s*id="[^"]*"', "", m.group(2))
        return f'<h{level} id="{ident}"{attrs}>{m.group(3)}</h{level}>'

    def headed(body: str) -> str:
        """Headings get one unique id each and enter the contents list."""
        body = ANCHOR_LINK.sub("", body)
        return re.sub(r"<h([1-3])([^>]*)>(.*?)</h\1>", anchor, body, flags=re.DOTALL)

    for cell in nb.cells:
        if cell.cell_type == "markdown":
            parts.append(headed(markdown2html_mistune(cell.source)))
        elif cell.cell_type == "code":
            for out in cell.get("outputs", []):
                parts.append(headed(_render_output(out)))
    return "\n".join(p for p in parts if p), heads


def _render_output(out: dict[str, Any]) -> str:
    kind = out.get("output_type")
    if kind == "error":
        raise NotebookError(f"a cell produced an error: {out.get('ename')}: {out.get('evalue')}")
    if kind == "stream":
        if out.get("name") == "stderr":
            return ""  # warnings from libraries are not for the reader
        return f"<pre>{html.escape(''.join(out.get('text', '')))}</pre>"
    data = out.get("data", {})
    if "image/png" in data:
        alt = html.escape(str(data.get("text/plain", "chart"))[:120])
        return f'<img alt="{alt}" src="data:image/png;base64,{data["image/png"].strip()}">'
    if "text/html" in data:
        return "".join(data["text/html"])
    if "text/markdown" in data:
        return markdown2html_mistune("".join(data["text/markdown"]))
    if "text/plain" in data:
        return f"<pre>{html.escape(''.join(data['text/plain']))}</pre>"
    return ""


def _meta_table(ds: Dataset, protocol: Protocol, data_dir: Path) -> str:
    files = ds.files()
    rows = [("Made", pd.Timestamp.now().strftime("%Y-%m-%d %H:%M")),
            ("Data folder", str(data_dir)),
            ("Protocol", f"{protocol.title} — id {protocol.id}, version {protocol.version}"),
            ("Software", f"outcomes {__version__}")]
    for f in files.itertuples():
        text = (f"{html.escape(Path(f.file).name)}: {f.rows_read:,} rows read, "
                f"{f.rows_loaded:,} loaded, {f.rows_rejected:,} rejected; "
                f"SHA-256 <code>{f.sha256}</code>")
        rows.append((f"Input ({f.table})", text))
    cells = "".join(f"<tr><th>{html.escape(k)}</th><td>{v if k.startswith('Input') else html.escape(v)}"
                    "</td></tr>" for k, v in rows)
    return f'<table class="meta">{cells}</table>'


def build_report(data_dir: str | Path = "data/sample", protocol: str | Path = "flexsys-hair-regrowth",
                 out_dir: str | Path = "report", progress: bool | None = None) -> ReportResult:
    """Execute the notebooks on DATA_DIR and write OUT/report.html and OUT/audit.xlsx."""
    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    data_dir = Path(data_dir).resolve()
    out = Path(out_dir).resolve()
    proto = load_protocol(protocol)
    folder = notebook_dir()
    missing = [n for n in NOTEBOOKS if not (folder / f"{n}.ipynb").is_file()]
    if missing:
        raise NotebookError(f"notebook {missing[0]}.ipynb is missing from {folder}")
    bar = Progress(len(NOTEBOOKS) + 2, "report", enabled=progress)
    study = open_study(data_dir, proto)  # loaded and audited once, for every notebook
    ds = study.dataset
    out.mkdir(parents=True, exist_ok=True)
    workbook = write_audit(study.audit, out, ds.files(), csv=False,
                           rejections=ds.rejections())["workbook"]
    timings["load, audit and audit.xlsx"] = time.perf_counter() - t0
    bar.step("audit.xlsx")
    is_file = Path(str(protocol)).suffix == ".toml"
    protocol_arg = str(Path(protocol).resolve()) if is_file else proto.id
    used: set[str] = set()
    bodies: list[str] = []
    toc: list[tuple[int, str, str]] = []
    private = Path(tempfile.mkdtemp(prefix="outcomes-report-"))  # mode 0700: holds patient data
    try:
        saved = study.save(private / "study.pickle")
        params = {"DATA_DIR": str(data_dir), "PROTOCOL": protocol_arg, "OUT_DIR": str(out),
                  "SAVED": str(saved)}
        for name in NOTEBOOKS:
            t = time.perf_counter()
            nb = execute_notebook(folder / f"{name}.ipynb", params, cwd=out)
            try:
                body, heads = render_notebook(nb, used)
            except NotebookError as exc:
                raise NotebookError(f"notebook {name}.ipynb: {exc}") from None
            bodies.append(f'<section class="notebook">{body}</section>')
            toc += heads
            timings[name] = time.perf_counter() - t
            bar.step(name)
    finally:
        shutil.rmtree(private, ignore_errors=True)
    title = f"Protocol audit and outcomes — {proto.title}"
    nav = _contents(toc)
    doc = (f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
           f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
           f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>"
           f"<header><h1 id=\"top\">{html.escape(title)}</h1>"
           f"<p class=\"note\">For the quality review meeting. Made from the data below; every "
           f"flagged session names the file and row it came from. The Excel workbook "
           f"<code>audit.xlsx</code> beside this file holds the same compliance tables and "
           f"the full list of flagged sessions.</p>"
           f"{_meta_table(ds, proto, data_dir)}</header>{nav}{''.join(bodies)}"
           f"<footer class=\"note\"><p>outcomes {__version__} · protocol {proto.id} "
           f"v{proto.version}</p></footer></body></html>")
    path = write_atomic(out / "report.html", lambda p: p.write_text(doc, encoding="utf-8"))
    bar.step("report.html")
    bar.close()
    timings["total"] = time.perf_counter() - t0
    return ReportResult(html=path, workbook=workbook, timings=timings)


def _contents(toc: list[tuple[int, str, str]]) -> str:
    items: list[str] = []
    open_sub = False
    for level, ident, text in toc:
        if level == 1:
            if open_sub:
                items.append("</ol></li>")
                open_sub = False
            elif items:
                items.append("</li>")
            items.append(f'<li><a href="#{ident}">{html.escape(text)}</a>')
        elif level == 2:
            if not open_sub:
                items.append("<ol>")
                open_sub = True
            items.append(f'<li><a href="#{ident}">{html.escape(text)}</a></li>')
    if open_sub:
        items.append("</ol>")
    if items:
        items.append("</li>")
    return f"<nav><strong>Contents</strong><ol>{''.join(items)}</ol></nav>"
