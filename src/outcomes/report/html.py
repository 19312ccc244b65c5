"""The quality-review report: run the notebooks on a data set, write one standalone HTML file.

The HTML holds no code, needs no network (charts are embedded images, styles inline), and
opens with what it was made from: the input files with row counts and SHA-256, the
protocol id and version, the software version and the date. `audit.xlsx` is written beside
it. Outputs are written whole or not at all.
"""

from __future__ import annotations

import gc
import html
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# jsonschema (which nbformat imports) builds an IRI grammar at import, for a format check
# it never runs on notebooks: 2 s of every report. Declining that optional module (it
# imports it as optional) skips the work; nothing else here uses it.
sys.modules.setdefault("rfc3987_syntax", None)  # type: ignore[arg-type]

import nbformat
import pandas as pd
import pyarrow as pa
from nbconvert.filters import markdown2html_mistune

from outcomes import __version__
from outcomes.audit import write_audit
from outcomes.dataset import Dataset
from outcomes.files import write_atomic
from outcomes.progress import Progress
from outcomes.protocol import Protocol, load_protocol
from outcomes.report.feedback import write_clinician_pages
from outcomes.report.notebooks import (
    REPORT_NOTEBOOKS,
    Kernel,
    NotebookError,
    execute_notebook,
    notebook_dir,
)
from outcomes.safe import neutralise
from outcomes.study import SAMPLE
from outcomes.study import open as open_study

ANCHOR_LINK = re.compile(r'<a class="anchor-link"[^>]*>.*?</a>', re.DOTALL)
CSS = """
body{font-family:-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;max-width:1100px;
margin:2em auto;padding:0 1.5em;color:#1a1a1a;line-height:1.45}
h1{border-bottom:3px solid #0072B2;padding-bottom:.2em;margin-top:2.2em}
h2{margin-top:1.8em;border-bottom:1px solid #ddd;padding-bottom:.15em}
h3{margin-top:1.4em}
table{border-collapse:collapse;margin:.6em 0 1.2em;font-size:.86em;max-width:100%}
th,td{border:1px solid #ccc;padding:.25em .5em;text-align:right;vertical-align:top;
overflow-wrap:anywhere}
th{background:#f2f2f2}td:first-child,th:first-child{text-align:left}
td{white-space:normal}
img{max-width:100%;height:auto;display:block;margin:.6em 0 1.4em}
.meta td{text-align:left}.meta{font-size:.9em}
nav{background:#f7f7f7;border:1px solid #e2e2e2;padding:.6em 1.2em;margin:1em 0}
nav ol{margin:.2em 0}pre{background:#f7f7f7;padding:.6em;white-space:pre-wrap;font-size:.85em}
.note,.small{color:#555;font-size:.85em}
.scorecard td:first-child{max-width:22em}.scorecard th{overflow-wrap:normal;white-space:nowrap}
.status{display:inline-block;padding:.05em .45em;border-radius:.3em;font-weight:600;
white-space:nowrap}
.status.ok{background:#d9ecf7;color:#00466e}.status.bad{background:#f9dccb;color:#7a2e00}
.status.warn{background:#fbeed0;color:#6b4a00}.status.none{background:#eee;color:#444}
@page{size:A4;margin:14mm 12mm}
@media print{
body{max-width:none;margin:0;padding:0;font-size:9pt;line-height:1.3}
header h1{margin-top:.2em}h1{margin-top:.6em;font-size:16pt}h2{font-size:13pt;margin-top:1em}
h3{font-size:11pt;margin-top:.8em}
nav{display:none}
section.notebook{break-before:page}
section.notebook.first{break-before:auto}
h1,h2,h3{break-after:avoid}
tr,img{break-inside:avoid}
table{font-size:7.5pt;margin:.3em 0 .6em}
th,td{padding:.1em .35em}
img{max-height:80mm;width:auto;max-width:100%;margin:.3em 0 .6em}
a{color:inherit;text-decoration:none}
}
"""


@dataclass
class ReportResult:
    """Where the report went and how long each part took."""

    html: Path
    workbook: Path
    pdf: Path | None
    clinicians: list[Path]
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
    if "text/markdown" in data:  # our Markdown never means raw HTML: data values stay text
        text = "".join(data["text/markdown"]).replace("&", "&amp;").replace("<", "&lt;")
        return markdown2html_mistune(text)
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


def _write_full_lists(study: Any, out: Path) -> None:
    """flagged_sessions.csv and rejected_rows.csv: the full lists the notebooks only show
    the start of (notebooks write no files)."""
    for name, table in (("flagged_sessions.csv", study.audit.flagged()),
                        ("rejected_rows.csv", study.dataset.rejections())):
        safe = neutralise(table)
        write_atomic(out / name, lambda tmp, t=safe: t.to_csv(tmp, index=False))


def build_report(data_dir: str | Path | None = None, protocol: str | Path = "flexsys-hair-regrowth",
                 out_dir: str | Path = "report", progress: bool | None = None,
                 period: str = "quarter") -> ReportResult:
    """Execute the notebooks on DATA_DIR (default: the sample data) and write
    OUT/report.html, report.pdf (when a Chromium is installed), audit.xlsx, and the full
    lists flagged_sessions.csv and rejected_rows.csv."""
    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    data_dir = Path(data_dir if data_dir is not None else SAMPLE).resolve()
    out = Path(out_dir).resolve()
    proto = load_protocol(protocol)
    folder = notebook_dir()
    missing = [n for n in REPORT_NOTEBOOKS if not (folder / f"{n}.ipynb").is_file()]
    if missing:
        raise NotebookError(f"notebook {missing[0]}.ipynb is missing from {folder}")
    bar = Progress(len(REPORT_NOTEBOOKS) + 3, "report", enabled=progress, lines=True)
    study = open_study(data_dir, proto)  # loaded and audited once, for every notebook
    ds = study.dataset
    out.mkdir(parents=True, exist_ok=True)
    workbook = write_audit(study.audit, out, ds.files(), csv=False,
                           rejections=ds.rejections())["workbook"]
    _write_full_lists(study, out)
    timings["load, audit and audit.xlsx"] = time.perf_counter() - t0
    bar.step("audit.xlsx")
    is_file = Path(str(protocol)).suffix == ".toml"
    protocol_arg = str(Path(protocol).resolve()) if is_file else proto.id
    used: set[str] = set()
    bodies: list[str] = []
    toc: list[tuple[int, str, str]] = []
    pages = write_clinician_pages(study, out, pdf=False)  # printed with the report below
    # what the page needs of the study once the notebooks have it
    meta, data_end = _meta_table(ds, proto, data_dir), study.audit.info.get("data_end")
    sessions = len(study.sessions)
    private = Path(tempfile.mkdtemp(prefix="outcomes-report-"))  # mode 0700: holds patient data
    try:
        saved = study.save(private / "study.pickle")
        # the kernels load the saved study: this process lets go of its copy meanwhile
        # (a large study is held once, not twice)
        del study, ds
        gc.collect()
        pa.default_memory_pool().release_unused()
        params = {"DATA_DIR": str(data_dir), "PROTOCOL": protocol_arg, "OUT_DIR": str(out),
                  "SAVED": str(saved), "PERIOD": period}
        executed = run_notebooks(folder, params, out, bar, timings, sessions=sessions)
    finally:
        shutil.rmtree(private, ignore_errors=True)
    for name in REPORT_NOTEBOOKS:  # rendered in the report's order (ids stay unique)
        try:
            body, heads = render_notebook(executed[name], used)
        except NotebookError as exc:
            raise NotebookError(f"notebook {name}.ipynb: {exc}") from None
        first = " first" if not bodies else ""
        bodies.append(f'<section class="notebook{first}">{body}</section>')
        toc += heads
    title = f"Protocol audit and outcomes — {proto.title}"
    made = pd.Timestamp.now().strftime("%d %b %Y")
    nav = _contents(toc)
    doc = (f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
           f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
           f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>"
           f"<header><p class=\"note\">Quality review meeting · {html.escape(made)} · "
           f"data to {html.escape(str(data_end or '—'))}</p>"
           f"<h1 id=\"top\">{html.escape(title)}</h1></header>"
           f"{bodies[0]}{nav}{''.join(bodies[1:])}"
           f"<section class=\"about\"><h1 id=\"about\">About this report</h1>"
           f"<p class=\"note\">Made from the data below; every flagged session names the "
           f"file and row it came from. The Excel workbook <code>audit.xlsx</code> beside "
           f"this file holds the compliance tables and the flagged sessions; "
           f"<code>flagged_sessions.csv</code> and <code>rejected_rows.csv</code> hold "
           f"the full lists.</p>"
           f"{meta}</section>"
           f"<footer class=\"note\"><p>outcomes {__version__} · protocol "
           f"{html.escape(proto.id)} v{html.escape(proto.version)}</p></footer></body></html>")
    path = write_atomic(out / "report.html", lambda p: p.write_text(doc, encoding="utf-8"))
    bar.step("report.html")
    printed = print_pdfs([(path, out / "report.pdf")]
                         + [(p, p.with_suffix(".pdf")) for p in pages])
    pdf = printed[0]
    clinicians = [q for pair in zip(pages, printed[1:], strict=True) for q in pair
                  if q is not None]
    bar.step("report.pdf and clinicians/")
    bar.close()
    timings["total"] = time.perf_counter() - t0
    return ReportResult(html=path, workbook=workbook, pdf=pdf, clinicians=clinicians,
                        timings=timings)


#: Notebooks run two at a time (one kernel per core) up to this many audited sessions;
#: above it one at a time, so two kernels never each hold a very large study.
CONCURRENT_UP_TO = 300_000


def run_notebooks(folder: Path, params: dict[str, Any], out: Path, bar: Progress,
                  timings: dict[str, float], sessions: int = 0) -> dict[str, Any]:
    """Execute the report's notebooks (they are independent): two kernels on two cores,
    each taking the next notebook, the longest first; a kernel runs its notebooks in turn
    (imports paid once). Each notebook is timed from its own start."""
    import queue

    todo: queue.SimpleQueue[str] = queue.SimpleQueue()
    for name in sorted(REPORT_NOTEBOOKS, key=lambda n: n != "02_protocol_compliance"):
        todo.put(name)
    executed: dict[str, Any] = {}

    def worker() -> None:
        with Kernel() as kernel:
            while True:
                try:
                    name = todo.get_nowait()
                except queue.Empty:
                    return
                t = time.perf_counter()
                executed[name] = execute_notebook(folder / f"{name}.ipynb", params, cwd=out,
                                                  kernel=kernel)
                timings[name] = time.perf_counter() - t
                bar.step(name)

    workers = 2 if (os.cpu_count() or 1) >= 2 and sessions <= CONCURRENT_UP_TO else 1
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for job in [pool.submit(worker) for _ in range(workers)]:
            job.result()
    return executed


def print_pdfs(jobs: list[tuple[Path, Path]]) -> list[Path | None]:
    """Print pages to PDFs, two Chromiums at a time (a launch is most of a small page's
    cost). The first job is the report: without a Chromium it says so once, and the
    others are not tried."""
    if not jobs:
        return []
    if chromium() is None:
        return [print_pdf(*jobs[0])] + [None] * (len(jobs) - 1)
    with ThreadPoolExecutor(max_workers=2) as pool:
        first = pool.submit(print_pdf, *jobs[0])
        rest = [pool.submit(print_pdf, page, pdf, quiet=True) for page, pdf in jobs[1:]]
        return [first.result()] + [f.result() for f in rest]


CHROMIUM = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def chromium() -> str | None:
    """The installed Chromium (the Debian package `chromium`), or None."""
    found = os.environ.get("OUTCOMES_CHROMIUM")
    if found:
        return found if shutil.which(found) else None
    return next((p for p in map(shutil.which, CHROMIUM) if p), None)


def print_pdf(page: Path, pdf: Path, timeout: int = 300, quiet: bool = False) -> Path | None:
    """Print an HTML file to an A4 PDF with headless Chromium (whole or not at all).

    Without a Chromium, or when it fails, one sentence on stderr says so and None is
    returned: the HTML report stands on its own.
    """
    exe = chromium()
    if exe is None:
        if quiet:
            return None
        print("outcomes report: report.pdf not written: no Chromium found (install the "
              "Debian package chromium); report.html is complete", file=sys.stderr)
        return None
    with tempfile.TemporaryDirectory(prefix="outcomes-pdf-") as profile:
        def run(tmp: Path) -> None:
            res = subprocess.run(
                [exe, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--disable-extensions", f"--user-data-dir={profile}",
                 "--no-pdf-header-footer", f"--print-to-pdf={tmp}",
                 page.resolve().as_uri()],
                capture_output=True, text=True, timeout=timeout, check=False)
            if res.returncode != 0 or not tmp.is_file() or tmp.stat().st_size == 0:
                raise RuntimeError(f"Chromium exited with {res.returncode}")

        try:
            return write_atomic(pdf, run)
        except (OSError, RuntimeError, subprocess.TimeoutExpired) as exc:
            print(f"outcomes report: report.pdf not written: {exc}; report.html is complete",
                  file=sys.stderr)
            return None


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
