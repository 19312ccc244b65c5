"""What a new user meets first: the README's commands and what git leaves alone."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _section(heading: str) -> str:
    start = README.index(heading)
    nxt = README.find("\n## ", start + len(heading))
    return README[start:nxt if nxt >= 0 else None]


def test_set_up_commands_are_unchanged():
    """CI runs the second command as written; the first is the one a new user types."""
    assert ("python3 -m venv .venv && .venv/bin/pip install -e . && .venv/bin/outcomes report"
            in README)
    assert ("python3 -m venv .venv && .venv/bin/pip install -e '.[test]' && "
            ".venv/bin/python -m pytest" in README)


def test_using_it_examples_run_after_set_up_without_activating():
    """After set-up `outcomes` is not on the PATH: every example names .venv/bin/outcomes."""
    blocks = re.findall(r"```sh\n(.*?)```", _section("## Using it"), flags=re.DOTALL)
    assert blocks
    commands = [line for b in blocks for line in b.splitlines()
                if line.strip() and not line.startswith((" ", "\t"))]
    assert commands
    for line in commands:
        assert line.startswith(".venv/bin/"), f"README example does not run as written: {line}"


IGNORED = ["secret.key", "clinic/secret.key", "report/report.html", "audit/audit.xlsx",
           "research/manifest.json", "notebooks/.ipynb_checkpoints/01-checkpoint.ipynb"]
TRACKED = ["src/outcomes/audit/write.py", "src/outcomes/report.py", "data/sample/sessions.csv"]


@pytest.mark.skipif(shutil.which("git") is None or not (ROOT / ".git").exists(),
                    reason="needs git and a checkout")
def test_gitignore_covers_outputs_and_keys_but_not_the_source():
    def ignored(path: str) -> bool:
        res = subprocess.run(["git", "check-ignore", "-q", "--no-index", path], cwd=ROOT,
                             check=False)
        return res.returncode == 0

    for path in IGNORED:
        assert ignored(path), f".gitignore does not cover {path}"
    for path in TRACKED:
        assert not ignored(path), f".gitignore hides {path}"


# ---------------------------------------------------------------------------------------------
# the sample data: the source tree's data/sample and the copy shipped in the package


def _files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_the_packaged_sample_is_a_byte_identical_copy_of_data_sample():
    from outcomes.study import PACKAGED_SAMPLE

    source = _files(ROOT / "data" / "sample")
    assert {"sessions.csv", "outcomes.csv", "de/sessions.xlsx",
            "de/sessions.mapping.toml"} <= set(source)
    assert _files(PACKAGED_SAMPLE) == source, (
        "src/outcomes/sample_data/ differs from data/sample/: copy data/sample/ over it")


def test_the_packaged_sample_is_package_data():
    import tomllib

    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    patterns = pyproject["tool"]["setuptools"]["package-data"]["outcomes"]
    package = ROOT / "src" / "outcomes"
    shipped = {p.relative_to(package).as_posix() for pat in patterns for p in package.glob(pat)}
    for name in _files(package / "sample_data"):
        assert f"sample_data/{name}" in shipped, f"{name} is not in package-data"


def test_sample_falls_back_to_the_packaged_copy(tmp_path):
    """Installed without the source tree (no data/sample beside src/), the default data is
    the copy inside the package; with it, the source tree's folder."""
    from outcomes.study import PACKAGED_SAMPLE, SAMPLE, SOURCE_SAMPLE, sample_dir

    assert SAMPLE.is_absolute() and (SAMPLE / "sessions.csv").is_file()
    assert sample_dir() == SOURCE_SAMPLE
    assert sample_dir(source=tmp_path / "data" / "sample") == PACKAGED_SAMPLE
    assert (PACKAGED_SAMPLE / "sessions.csv").is_file()


def test_the_default_data_does_not_depend_on_the_working_folder(tmp_path, monkeypatch):
    import outcomes

    monkeypatch.chdir(tmp_path)
    study = outcomes.open()
    assert study.files()["rows_loaded"].sum() > 0
