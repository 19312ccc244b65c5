"""Outputs are whole per folder and never written over inputs, whatever --out is given."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

import outcomes.files
from outcomes.cli import main

ROOT = Path(__file__).resolve().parents[1]
KEY_HEX = "ab" * 32


@pytest.fixture
def data(tmp_path) -> Path:
    """A folder with a small sessions export and a key file beside it."""
    d = tmp_path / "data"
    d.mkdir()
    rows = [{"patient_id": f"P00{i}", "session_date": f"2025-0{1 + j}-1{i}",
             "clinic": "Nordstadt", "operator": "Dr. Keller", "indication": "hair_regrowth",
             "area": "scalp_vertex", "energy_start_mj": 25, "passes": 2}
            for i in range(4) for j in range(2)]
    pd.DataFrame(rows).to_csv(d / "sessions.csv", index=False)
    (tmp_path / "k.key").write_text(KEY_HEX + "\n")
    return d


def one_sentence(capsys, code: int) -> str:
    err = capsys.readouterr().err.strip()
    assert code == 1, err
    assert len(err.splitlines()) == 1 and "unexpected error" not in err, err
    return err


def test_audit_refuses_to_overwrite_its_inputs(data, capsys, tmp_path):
    assert main(["audit", str(data / "sessions.csv"), "--out", str(data)]) == 0
    verdicts, compliance = data / "verdicts.csv", data / "compliance.csv"
    before = {p: p.read_bytes() for p in (verdicts, compliance)}
    capsys.readouterr()
    err = one_sentence(capsys, main(["audit", str(verdicts), "--outcomes", str(compliance),
                                     "--out", str(data)]))
    assert "would replace the input" in err and "never overwritten" in err
    link = tmp_path / "link"
    link.symlink_to(data, target_is_directory=True)  # the same folder through a link
    err = one_sentence(capsys, main(["audit", str(link / "verdicts.csv"), "--out", str(data)]))
    assert "would replace the input" in err
    assert {p: p.read_bytes() for p in before} == before


@pytest.mark.parametrize("command", ["audit", "export"])
def test_an_existing_file_as_out_is_refused(data, capsys, tmp_path, command):
    target = tmp_path / "report.txt"
    target.write_text("mine")
    extra = ["--key-file", str(tmp_path / "k.key")] if command == "export" else []
    err = one_sentence(capsys, main([command, str(data / "sessions.csv"), *extra,
                                     "--out", str(target)]))
    assert "is a file, not a folder" in err
    assert target.read_text() == "mine"


@pytest.mark.parametrize("command", ["audit", "export"])
def test_a_link_to_a_folder_is_followed_and_other_links_refused(data, capsys, tmp_path,
                                                                 command):
    real = tmp_path / "real"
    real.mkdir()
    link = tmp_path / "out-link"
    link.symlink_to(real, target_is_directory=True)
    extra = ["--key-file", str(tmp_path / "k.key")] if command == "export" else []
    assert main([command, str(data / "sessions.csv"), *extra, "--out", str(link)]) == 0
    assert link.is_symlink() and link.resolve() == real.resolve()  # still the user's link
    assert (real / ("verdicts.csv" if command == "audit" else "manifest.json")).is_file()
    capsys.readouterr()
    for name, to in (("to-file", data / "sessions.csv"), ("dangling", tmp_path / "nothing")):
        bad = tmp_path / name
        bad.symlink_to(to)
        err = one_sentence(capsys, main([command, str(data / "sessions.csv"), *extra,
                                         "--out", str(bad)]))
        assert "symbolic link to" in err
        assert bad.is_symlink()
    assert (data / "sessions.csv").read_text().startswith("patient_id")


def test_help_says_how_links_are_treated(capsys):
    for command in ("audit", "export"):
        assert main([command, "--help"]) == 0
        text = " ".join(capsys.readouterr().out.split())
        assert "symbolic link to a folder is followed" in text


@pytest.fixture
def read_only(monkeypatch):
    """Make a folder read-only, for root too (root may write anywhere: access is faked)."""
    def make(folder: Path) -> None:
        folder.chmod(0o555)
        if os.geteuid() == 0:
            real = os.access
            monkeypatch.setattr(outcomes.files.os, "access", lambda p, mode, **kw: (
                False if Path(p).resolve() == folder.resolve() and mode & os.W_OK
                else real(p, mode, **kw)))
    return make


@pytest.mark.parametrize("command", ["audit", "export"])
def test_a_read_only_out_is_refused(data, capsys, tmp_path, read_only, command):
    target = tmp_path / "locked-out"
    target.mkdir()
    read_only(target)
    extra = ["--key-file", str(tmp_path / "k.key")] if command == "export" else []
    try:
        err = one_sentence(capsys, main([command, str(data / "sessions.csv"), *extra,
                                         "--out", str(target)]))
    finally:
        target.chmod(0o755)
    assert "read-only" in err and list(target.iterdir()) == []


def test_rejects_log_that_cannot_be_written_is_one_sentence(data, capsys, monkeypatch):
    def denied(*_a, **_k):
        raise PermissionError(13, "Permission denied")
    monkeypatch.setattr("outcomes.cli.write_atomic", denied)
    err = one_sentence(capsys, main(["validate", str(data / "sessions.csv"), "--rejects",
                                     str(data / "r.csv")]))
    assert "could not be written (Permission denied)" in err


KILLER = """
import os, sys
import outcomes.export as export
def die(folder, *a, **k):
    os.kill(os.getpid(), 9)  # the moment before the check: everything written but unchecked
export.leak_check = die
from outcomes.cli import main
main(sys.argv[1:])
"""


def test_a_killed_export_leaves_no_readable_or_passed_folder(data, tmp_path):
    out = tmp_path / "e"
    args = ["export", str(data / "sessions.csv"), "--key-file", str(tmp_path / "k.key"),
            "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    res = subprocess.run([sys.executable, "-c", KILLER, *args], env=env, capture_output=True,
                         text=True, timeout=300, check=False)
    assert res.returncode == -9, res.stderr
    assert not out.exists()
    left = [p for p in tmp_path.iterdir() if p.name.startswith(".e.outcomes-tmp-")]
    assert len(left) == 1
    assert stat.S_IMODE(left[0].stat().st_mode) == 0o700  # nobody else can read it
    manifest = json.loads((left[0] / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["leak_check"]["result"] == "pending"  # never "passed" before the check
    # the next run removes what the killed one left, and writes the export
    assert main(args) == 0
    assert not left[0].exists()
    assert json.loads((out / "manifest.json").read_text())["leak_check"]["result"] == "passed"
    assert stat.S_IMODE(out.stat().st_mode) != 0o700  # the released folder: usual permissions


def test_a_second_report_into_the_same_folder_is_refused(tmp_path):
    """While one report writes a folder, another into it is one sentence, exit 1: the
    folder never mixes report.html of one run with audit.xlsx of another."""
    import subprocess
    import sys

    from outcomes.files import locked

    out = tmp_path / "pack"
    with locked(out):
        res = subprocess.run([sys.executable, "-m", "outcomes", "report", "--out", str(out)],
                             check=False, capture_output=True, text=True, timeout=120)
    assert res.returncode == 1
    err = res.stderr.strip().splitlines()
    assert len(err) == 1 and "another outcomes run is writing to" in err[0]
    assert not (out / "report.html").exists()
