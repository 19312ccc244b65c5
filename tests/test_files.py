"""File helpers: output folders checked, written privately, renamed whole, locked."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time

import pytest

from outcomes.files import (
    OutputError,
    clean_stale_temp,
    locked,
    output_folder,
    private_dir,
    publish_dir,
    refuse_inputs_inside,
    refuse_overwriting_inputs,
)


def test_output_folder_follows_a_link_to_a_folder_and_refuses_the_rest(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real, target_is_directory=True)
    assert output_folder(tmp_path / "link") == real.resolve()
    assert output_folder(tmp_path / "new" / "deeper") == tmp_path / "new" / "deeper"
    (tmp_path / "f.txt").write_text("x")
    (tmp_path / "to-file").symlink_to(tmp_path / "f.txt")
    (tmp_path / "dangling").symlink_to(tmp_path / "nothing")
    for bad, says in (("f.txt", "is a file, not a folder"), ("to-file", "link to a file"),
                      ("dangling", "link to nothing"), ("f.txt/sub", "is a file, not a folder")):
        with pytest.raises(OutputError, match=says):
            output_folder(tmp_path / bad, "--out")


def test_outputs_never_replace_inputs_through_links_or_hard_links(tmp_path):
    src = tmp_path / "verdicts.csv"
    src.write_text("x")
    os.link(src, tmp_path / "hard.csv")
    (tmp_path / "soft.csv").symlink_to(src)
    for given in ("verdicts.csv", "hard.csv", "soft.csv"):
        with pytest.raises(OutputError, match="would replace the input"):
            refuse_overwriting_inputs([src], [tmp_path / given, None])
    refuse_overwriting_inputs([tmp_path / "other.csv"], [src])
    with pytest.raises(OutputError, match="inside --out"):
        refuse_inputs_inside(tmp_path, [src])
    refuse_inputs_inside(tmp_path / "elsewhere", [src])


def test_private_dir_is_0700_and_published_with_usual_permissions(tmp_path):
    target = tmp_path / "e"
    tmp = private_dir(target)
    assert stat.S_IMODE(tmp.stat().st_mode) == 0o700
    assert tmp.name.startswith(f".e.outcomes-tmp-{os.getpid()}-")
    (tmp / "a.csv").write_text("new")
    target.mkdir()
    (target / "a.csv").write_text("old")
    publish_dir(tmp, target)
    assert (target / "a.csv").read_text() == "new"
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o777 & ~umask
    assert [p.name for p in tmp_path.iterdir()] == ["e"]  # the old folder is gone too


def test_stale_temporary_folders_are_removed_live_ones_kept(tmp_path):
    target = tmp_path / "e"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    dead_pid = int(dead.stdout)
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        stale = tmp_path / f".e.outcomes-tmp-{dead_pid}-abc"
        old = tmp_path / f".e.outcomes-old-{dead_pid}-abc"
        running = tmp_path / f".e.outcomes-tmp-{live.pid}-abc"
        legacy = tmp_path / ".e.x1y2.tmp"
        fresh_legacy = tmp_path / ".e.z9.tmp"
        other = tmp_path / ".f.outcomes-tmp-1-abc"  # another target's
        for p in (stale, old, running, legacy, fresh_legacy, other):
            p.mkdir()
        hour_ago = time.time() - 7200
        os.utime(legacy, (hour_ago, hour_ago))
        removed = clean_stale_temp(target)
        assert sorted(removed) == sorted([stale, old, legacy])
        assert running.exists() and fresh_legacy.exists() and other.exists()
    finally:
        live.kill()
        live.wait()


def test_locked_refuses_a_second_writer(tmp_path):
    target = tmp_path / "out"
    with locked(target):
        code = ("import sys; from outcomes.files import locked, OutputError\n"
                "try:\n    with locked(sys.argv[1]): pass\n"
                "except OutputError as e:\n    print(e); sys.exit(3)\n")
        res = subprocess.run([sys.executable, "-c", code, str(target)], capture_output=True,
                             text=True, check=False,
                             env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
        assert res.returncode == 3, res.stderr
        assert "another outcomes run is writing to" in res.stdout
    with locked(target):  # released with the first holder
        pass
