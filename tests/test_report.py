"""The report end to end: `outcomes report` as a subprocess, the HTML checked as a reader sees it."""

from __future__ import annotations

import hashlib
import html
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import openpyxl
import pytest

from outcomes.report.notebooks import REPORT_NOTEBOOKS
from outcomes.sample import write_sample

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "sample"
NB_DIR = ROOT / "notebooks"


def run_report(*args: str, env: dict | None = None, cwd: Path | None = None):
    import os

    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "outcomes.cli", "report", *args],
                          capture_output=True, text=True, check=False, env=full_env,
                          cwd=cwd or ROOT, timeout=900)


def headings(level: str = "## ") -> list[str]:
    out = []
    for name in REPORT_NOTEBOOKS:
        nb = json.loads((NB_DIR / f"{name}.ipynb").read_text(encoding="utf-8"))
        for cell in nb["cells"]:
            if cell["cell_type"] == "markdown":
                src = "".join(cell["source"])
                out += [ln[len(level):].strip() for ln in src.splitlines()
                        if ln.startswith(level)]
    return out


@pytest.fixture(scope="module")
def sample_report(tmp_path_factory):
    """The README's first command, `outcomes report`, run from a folder that is not the
    repository: no DATA_DIR (the default is the sample data, wherever the command runs).
    Slow (the report takes a minute or more): every report test shares this one run."""
    out = tmp_path_factory.mktemp("report")
    elsewhere = tmp_path_factory.mktemp("cwd")
    trace = out.parent / "trace.txt"
    res = run_report("--out", str(out), env={"OUTCOMES_TRACE": str(trace)}, cwd=elsewhere)
    assert res.returncode == 0, res.stderr
    assert not (elsewhere / "report").exists()
    return out, res, trace


def test_the_default_data_is_the_sample_from_any_folder(sample_report):
    out, _, _ = sample_report
    page = (out / "report.html").read_text(encoding="utf-8")
    sha = hashlib.sha256((SAMPLE / "sessions.csv").read_bytes()).hexdigest()
    assert sha in page and html.escape(str(SAMPLE.resolve())) in page


def test_the_report_writes_the_full_lists_beside_it(sample_report):
    """The notebooks show the first rows; the report writes every row (the notebooks
    write no file, so running one in JupyterLab cannot overwrite these)."""
    import pandas as pd

    from outcomes import open as open_study

    out, _, _ = sample_report
    study = open_study(SAMPLE)
    flagged = pd.read_csv(out / "flagged_sessions.csv")
    assert len(flagged) == len(study.flagged()) > 0
    rejected = pd.read_csv(out / "rejected_rows.csv")
    assert list(rejected.columns) == ["file", "row", "field", "value", "reason"]
    assert len(rejected) == study.files()["rows_rejected"].sum()


def test_without_a_terminal_progress_is_one_line_per_step(sample_report):
    _, res, _ = sample_report
    assert "\r" not in res.stderr
    steps = [ln for ln in res.stderr.splitlines() if ln.startswith("report: ")]
    total = len(REPORT_NOTEBOOKS) + 3
    assert len(steps) == total, res.stderr
    # the notebooks run two at a time: each is said as it finishes, numbered in turn
    done = []
    for i in range(2, len(REPORT_NOTEBOOKS) + 2):
        found = re.fullmatch(rf"report: {i}/{total} (\S+) done \(\d+ s\)", steps[i - 1])
        assert found, steps
        done.append(found.group(1))
    assert sorted(done) == sorted(REPORT_NOTEBOOKS)


def test_one_report_loads_and_audits_once(sample_report):
    """The report opens the study once; every notebook reuses it (kernels included)."""
    _, _, trace = sample_report
    events = [line.split()[0] for line in trace.read_text(encoding="utf-8").splitlines()]
    assert events == ["load", "audit"]


PROTOCOLS = [ROOT / "docs" / "example-protocol.toml",
             ROOT / "tests" / "protocols" / "course-focus.toml",
             ROOT / "tests" / "protocols" / "three-criteria.toml"]


def _sections(page: str) -> dict[str, str]:
    """Each criterion section of the compliance part: its h3 title → its HTML."""
    part = page[page.index("Each step of the protocol"):]
    part = part[:part.index('id="monitored-indicators"')]
    out = {}
    for chunk in part.split("<h3")[1:]:
        title = re.sub(r"<[^>]+>", "", chunk[chunk.index(">") + 1:chunk.index("</h3>")])
        out[html.unescape(title).strip()] = chunk
    return out


@pytest.mark.parametrize("protocol", PROTOCOLS, ids=lambda p: p.stem)
def test_any_protocol_gets_a_full_report_audit_and_export(tmp_path, protocol):
    """Each criterion of any protocol file: its own section, a chart and its table."""
    from outcomes.protocol import load_protocol

    proto = load_protocol(protocol)
    res = run_report(str(SAMPLE), "--protocol", str(protocol), "--out", str(tmp_path / "r"))
    assert res.returncode == 0, res.stderr
    page = (tmp_path / "r" / "report.html").read_text(encoding="utf-8")
    sections = _sections(page)
    for c in proto.criteria:
        assert c.title in sections, (c.id, list(sections))
        body = sections[c.title]
        assert 'src="data:image/png;base64,' in body, c.id
        assert f"(target {c.target:g} %)" in body, c.id  # the clinician table
    for topic, _ in proto.topics():
        assert f">{html.escape(topic)}</h2>" in page
    audit = subprocess.run([sys.executable, "-m", "outcomes", "audit", str(SAMPLE / "sessions.csv"),
                            "--outcomes", str(SAMPLE / "outcomes.csv"), "--protocol",
                            str(protocol), "--json"], check=False, capture_output=True, text=True,
                           timeout=300)
    assert audit.returncode == 0, audit.stderr
    got = [c["id"] for c in json.loads(audit.stdout)["criteria"]]
    assert got == [c.id for c in proto.criteria]
    key = tmp_path / "k.key"
    key.write_text("ab" * 32, encoding="utf-8")
    export = subprocess.run([sys.executable, "-m", "outcomes", "export",
                             str(SAMPLE / "sessions.csv"), "--outcomes",
                             str(SAMPLE / "outcomes.csv"), "--protocol", str(protocol),
                             "--key-file", str(key), "--out", str(tmp_path / "x")],
                            check=False, capture_output=True, text=True, timeout=300)
    assert export.returncode == 0, export.stderr
    compliance = (tmp_path / "x" / "compliance.csv").read_text(encoding="utf-8")
    assert all(c.id in compliance for c in proto.criteria)


def test_report_html_is_complete_and_standalone(sample_report):
    out, res, _ = sample_report
    page = (out / "report.html").read_text(encoding="utf-8")
    assert "report written to" in res.stdout
    # every section heading of every notebook is in the report, and in the contents list
    nav = page[page.index("<nav>"):page.index("</nav>")]
    for h in headings("# ") + headings("## "):
        text = re.sub(r"[*_`]", "", h)
        assert text.split("(")[0].strip()[:30] in page, h
    assert nav.count("<a href=") >= len(headings("## "))
    # charts embedded as images; nothing fetched from a network
    images = re.findall(r'<img [^>]*src="data:image/png;base64,', page)
    assert len(images) >= 20
    assert not re.search(r'(src|href)="https?://', page)
    assert "<script" not in page
    # no code and no error output shown
    assert "load_data_dir(" not in page and "import " not in page
    assert "Traceback" not in page
    assert 'class="ansi' not in page
    # what it was made from
    sha = hashlib.sha256((SAMPLE / "sessions.csv").read_bytes()).hexdigest()
    assert sha in page
    assert "flexsys-hair-regrowth" in page and "version 1.0" in page
    from outcomes import __version__
    assert f"outcomes {__version__}" in page
    assert "sessions.csv" in page and "outcomes.csv" in page


def test_the_pack_opens_with_the_scorecard(sample_report):
    """Every criterion title and its status come before the first chart."""
    from outcomes.protocol import load_protocol

    out, _, _ = sample_report
    page = (out / "report.html").read_text(encoding="utf-8")
    first_chart = page.index("<img ")
    card = page[:first_chart]
    assert 'class="scorecard"' in card
    for c in load_protocol().criteria:
        row = card[card.index(html.escape(c.title)):]
        assert 'class="status' in row[:row.index("</tr>")], c.id
    assert "Headline outcomes" in card and "Adverse events" in card


def test_the_pack_is_meeting_material_only(sample_report):
    """No research export, no JSON for tools, no pandas leftovers, unique ids, real alt."""
    out, _, _ = sample_report
    page = (out / "report.html").read_text(encoding="utf-8")
    for gone in ("Research export", "data dictionary", "The same numbers for", "manifest"):
        assert gone not in page, gone
    text = re.sub(r"<[^>]+>", " ", re.sub(r'src="data:[^"]+"', "", page))
    for bad in ("NaN", "NaT", "None", "<NA>"):
        assert not re.search(rf"(?<![\w]){re.escape(bad)}(?![\w])", text), bad
    assert not re.search(r"…\s*</td>", page)  # no cell cut short
    ids = re.findall(r'\sid="([^"]+)"', page)
    assert len(ids) == len(set(ids))
    assert not re.search(r"<h\d[^>]*id=[^>]*id=", page)
    alts = re.findall(r'<img alt="([^"]*)"', page)
    assert alts and all(a.startswith("Chart: ") and "Figure size" not in a for a in alts)
    assert "<th></th><th>0</th>" not in page  # no row-number index column


def test_pdf_is_a4_and_at_most_30_pages(sample_report):
    out, res, _ = sample_report
    pdf = out / "report.pdf"
    if not pdf.exists():
        assert "no Chromium found" in res.stderr
        pytest.skip("no Chromium here: .ci/run installs the Debian package")
    data = pdf.read_bytes()
    assert data.startswith(b"%PDF")
    pages = _pdf_pages(pdf)
    assert 1 <= pages <= 30, pages
    sizes = set(re.findall(rb"/MediaBox\s*\[\s*0 0 ([\d.]+) ([\d.]+)", data))
    assert sizes and all(abs(float(w) - 595) < 2 and abs(float(h) - 842) < 2 for w, h in sizes)


def _pdf_pages(pdf: Path) -> int:
    """Pages of a PDF: pdfinfo when installed, else the page objects counted."""
    if shutil.which("pdfinfo"):
        info = subprocess.run(["pdfinfo", str(pdf)], capture_output=True, text=True,
                              check=True).stdout
        return int(re.search(r"Pages:\s+(\d+)", info).group(1))
    return len(re.findall(rb"/Type\s*/Page(?!s)", pdf.read_bytes()))


def test_one_feedback_file_per_clinician_naming_no_other(sample_report):
    import pandas as pd

    out, _, _ = sample_report
    sessions = pd.read_csv(SAMPLE / "sessions.csv", dtype=str)
    names = sorted(set(sessions["operator"].dropna()))
    pages = sorted((out / "clinicians").glob("*.html"))
    assert len(pages) == len(names)
    for page in pages:
        text = page.read_text(encoding="utf-8")
        mine = [n for n in names if html.escape(n) in text]
        assert len(mine) == 1, (page.name, mine)
        assert "<img alt=\"Chart: " in text
    if (out / "report.pdf").exists():
        assert len(list((out / "clinicians").glob("*.pdf"))) == len(names)


def test_workbook_beside_the_report(sample_report):
    out, _, _ = sample_report
    wb = openpyxl.load_workbook(out / "audit.xlsx", read_only=True)
    assert wb.sheetnames[:2] == ["About", "Compliance"]
    assert "Flagged sessions" in wb.sheetnames


def test_report_on_another_small_data_set(tmp_path):
    data = tmp_path / "data"
    write_sample(data, patients=40, seed=3)
    res = run_report(str(data), "--out", str(tmp_path / "r"))
    assert res.returncode == 0, res.stderr
    page = (tmp_path / "r" / "report.html").read_text(encoding="utf-8")
    assert "Traceback" not in page and page.count("data:image/png") >= 10


def test_report_on_several_exports_lists_files_repeats_and_conflicts(tmp_path):
    """data/sample/multi: three overlapping exports and a German device log."""
    res = run_report(str(SAMPLE / "multi"), "--out", str(tmp_path / "r"))
    assert res.returncode == 0, res.stderr
    page = (tmp_path / "r" / "report.html").read_text(encoding="utf-8")
    assert "Traceback" not in page
    section = page[page.index("Several exports combined</h2>"):]
    section = section[:section.index("<h2")]
    for name in ("sessions-2025-08.csv", "sessions-2026-03.csv", "sessions-2026-10.csv",
                 "sessions-geraet.csv", "outcomes-2025-12.csv", "outcomes-2026-12.csv"):
        assert name in section
    assert "combined into 1,172 sessions" in section
    assert re.search(r"conflicts with sessions-2025-08\.csv row \d+ on post_cooling_min",
                     section)
    assert "Sources" in page  # the flagged sessions name every file and row


def test_failing_notebook_names_notebook_and_cell(tmp_path):
    nbs = tmp_path / "nbs"
    shutil.copytree(NB_DIR, nbs)
    nb = json.loads((nbs / "02_protocol_compliance.ipynb").read_text(encoding="utf-8"))
    nb["cells"].insert(3, {"cell_type": "code", "metadata": {}, "execution_count": None,
                           "outputs": [], "source": "1 / 0"})
    (nbs / "02_protocol_compliance.ipynb").write_text(json.dumps(nb), encoding="utf-8")
    res = run_report(str(SAMPLE), "--out", str(tmp_path / "r"),
                     env={"OUTCOMES_NOTEBOOKS": str(nbs)})
    assert res.returncode == 1
    assert "02_protocol_compliance.ipynb" in res.stderr and "cell 4" in res.stderr
    assert "ZeroDivisionError" in res.stderr and "Traceback" not in res.stderr
    assert "\x1b" not in res.stderr  # the kernel's colour codes are not passed on
    assert not (tmp_path / "r" / "report.html").exists()


def test_missing_data_folder_is_exit_1(tmp_path):
    res = run_report(str(tmp_path / "nope"), "--out", str(tmp_path / "r"))
    assert res.returncode == 1 and "does not exist" in res.stderr


def test_data_with_nothing_to_audit_is_one_sentence(tmp_path):
    """Sessions only for another indication: exit 1 naming what the export holds."""
    data = tmp_path / "d"
    data.mkdir()
    (data / "sessions.csv").write_text("patient_id,session_date,indication\n"
                                       "P1,2025-02-01,acne\nP2,2025-02-03,acne\n",
                                       encoding="utf-8")
    res = run_report(str(data), "--out", str(tmp_path / "r"))
    assert res.returncode == 1 and len(res.stderr.strip().splitlines()) == 1
    assert "none of the 2 sessions" in res.stderr and "acne (2)" in res.stderr
    assert "--protocol" in res.stderr and not (tmp_path / "r" / "report.html").exists()


def test_data_values_are_escaped_in_every_html_output(tmp_path):
    """A clinician named like a script reaches the pages as text, never as markup."""
    import pandas as pd

    data = tmp_path / "data"
    write_sample(data, patients=40, seed=3)
    sessions = pd.read_csv(data / "sessions.csv", dtype=str, keep_default_na=False)
    payload = "<img src=x onerror=prompt(7)>"
    first = sessions["operator"].iloc[0]
    sessions.loc[sessions["operator"] == first, "operator"] = payload
    sessions.to_csv(data / "sessions.csv", index=False)
    res = run_report(str(data), "--out", str(tmp_path / "r"))
    assert res.returncode == 0, res.stderr
    pages = [tmp_path / "r" / "report.html", *(tmp_path / "r" / "clinicians").glob("*.html")]
    assert len(pages) > 2
    for page in pages:
        text = page.read_text(encoding="utf-8")
        assert "<img src=x" not in text and "onerror=prompt" not in text.replace(
            "&lt;img src=x onerror=prompt(7)&gt;", ""), page.name
    assert "&lt;img src=x onerror=prompt(7)&gt;" in pages[0].read_text(encoding="utf-8")


CHECK = """<script>
window.addEventListener('load', () => {
  const imgs = [...document.images];
  const broken = imgs.filter(i => !(i.complete && i.naturalWidth > 0)).length;
  const out = document.createElement('pre');
  out.id = 'outcomes-check';
  out.textContent = JSON.stringify({images: imgs.length, broken: broken,
    scroll: document.documentElement.scrollWidth, width: window.innerWidth});
  document.body.appendChild(out);
});
</script>"""


def test_report_in_headless_chromium(sample_report, tmp_path):
    """The page as a browser shows it at 1280 px: every image loads, nothing overflows
    sideways, no console error."""
    from outcomes.report.html import chromium

    exe = chromium()
    if exe is None:
        pytest.skip("no Chromium here: .ci/run installs the Debian package chromium")
    out, _, _ = sample_report
    page = (out / "report.html").read_text(encoding="utf-8")
    probe = tmp_path / "probe.html"
    probe.write_text(page.replace("</body>", CHECK + "</body>"), encoding="utf-8")
    res = subprocess.run(
        [exe, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1280,900",
         "--enable-logging=stderr", "--v=0", "--virtual-time-budget=15000", "--dump-dom",
         probe.as_uri()], capture_output=True, text=True, timeout=300, check=False)
    assert res.returncode == 0, res.stderr[-2000:]
    found = re.search(r'<pre id="outcomes-check">(.*?)</pre>', res.stdout)
    assert found, res.stdout[-500:]
    check = json.loads(html.unescape(found.group(1)))
    assert check["images"] >= 20 and check["broken"] == 0
    assert check["scroll"] <= check["width"], check
    console = [ln for ln in res.stderr.splitlines() if "CONSOLE" in ln]
    assert not [ln for ln in console if "error" in ln.lower() or "Uncaught" in ln], console


def test_workbook_opens_in_libreoffice(sample_report, tmp_path):
    """LibreOffice converts audit.xlsx (headless) without an error."""
    exe = shutil.which("soffice") or shutil.which("libreoffice")
    if exe is None:
        pytest.skip("no LibreOffice here: .ci/run installs the Debian package libreoffice-calc")
    out, _, _ = sample_report
    res = subprocess.run([exe, "--headless", f"-env:UserInstallation={(tmp_path / 'lo').as_uri()}",
                          "--convert-to", "pdf", "--outdir", str(tmp_path),
                          str(out / "audit.xlsx")], capture_output=True, text=True,
                         timeout=600, check=False)
    assert res.returncode == 0, res.stderr
    pdf = tmp_path / "audit.pdf"
    assert pdf.is_file() and pdf.read_bytes().startswith(b"%PDF")
