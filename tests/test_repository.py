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
