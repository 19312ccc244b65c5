"""Small file helpers: outputs are written whole or not at all; inputs are fingerprinted.

Output folders are checked before anything is read (a file, a read-only folder, a link to
nowhere: one sentence), never written over an input, written in a private folder beside
the target and renamed into place, and locked against a second run writing there.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from outcomes.errors import OutcomesError


@contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `target`; rename it onto `target` only on success."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.stem}.", suffix=target.suffix,
                               dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp_path, 0o666 & ~umask)  # mkstemp makes 0600; outputs get normal permissions
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_atomic(target: str | Path, write: Callable[[Path], object]) -> Path:
    """Call `write(tmp_path)` and move the result onto `target` (whole or not at all)."""
    with atomic_path(target) as tmp:
        write(tmp)
    return Path(target)


def sha256(path: str | Path) -> str:
    """SHA-256 of a file, read in blocks so big exports do not fill memory."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------
# output folders: checked before anything is read, written whole, never over an input


class OutputError(OutcomesError):
    """An output place that cannot be used; the message is one sentence."""


TMP_TAG = "outcomes-tmp"
OLD_TAG = "outcomes-old"
LEGACY_AGE_S = 3600  # temporary folders of older versions (no process id) older than this


def output_folder(path: str | Path, flag: str = "--out", replace: bool = False) -> Path:
    """The folder `path` names, checked for writing; a symbolic link to a folder is followed.

    Refused in one sentence: a file, a link to a file or to nothing, a folder (or the
    nearest existing parent of a missing one) that is read-only. `replace`: the folder
    itself is renamed into place, so its parent must be writable too.
    """
    given = Path(path)
    p = given
    if given.is_symlink():
        real = given.resolve()
        if not real.is_dir():
            what = "a file" if real.exists() else "nothing"
            raise OutputError(f"{flag} {given} is a symbolic link to {what} ({real}); give a "
                              "folder or a link to a folder")
        p = real
    if p.exists() and not p.is_dir():
        raise OutputError(f"{flag} {given} is a file, not a folder; give a folder (it is made "
                          "if it does not exist)")
    if p.is_dir() and not os.access(p, os.W_OK | os.X_OK):
        raise OutputError(f"{flag} {given} is read-only; give a folder you can write to")
    parent = p.parent if (replace or not p.exists()) else p
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise OutputError(f"{flag} {given} cannot be made: {parent} is a file, not a folder")
    if (replace or not p.exists()) and not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"{flag} {given} cannot be written: {parent} is read-only; give a "
                          "folder you can write to")
    return p


def _same(a: Path, b: Path) -> bool:
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)  # hard links too
    except OSError:
        return False


def refuse_overwriting_inputs(outputs: Iterable[str | Path],
                              inputs: Iterable[str | Path | None], flag: str = "--out") -> None:
    """One sentence if an output would replace an input (resolved paths, through links)."""
    ins = [Path(i) for i in inputs if i is not None and str(i) != ""]
    for out in map(Path, outputs):
        for i in ins:
            if _same(out, i):
                raise OutputError(f"{flag} would replace the input {i} with {out.name}; "
                                  "inputs are never overwritten, give another output folder")


def refuse_inputs_inside(folder: str | Path, inputs: Iterable[str | Path | None],
                         flag: str = "--out") -> None:
    """One sentence if an input lies inside `folder`, which is replaced as a whole."""
    real = Path(os.path.realpath(folder))
    for i in inputs:
        if i is None or str(i) == "":
            continue
        r = Path(os.path.realpath(i))
        if r == real or real in r.parents:
            raise OutputError(f"the input {i} is inside {flag} {folder}, which the output "
                              "replaces as a whole; give another output folder")


def _ours(entry: Path, target: Path, tag: str) -> int | None:
    """The process id in the name of one of our temporary folders for `target`, else None."""
    m = re.fullmatch(re.escape(f".{target.name}.{tag}-") + r"(\d+)-\w+", entry.name)
    return int(m.group(1)) if m else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_stale_temp(target: str | Path) -> list[Path]:
    """Remove the temporary folders an interrupted earlier run left beside `target`.

    Ours are named `.NAME.outcomes-tmp-PID-…` (and `.NAME.outcomes-old-PID-…`); one is
    stale when its process is gone. Folders of older versions (`.NAME.….tmp`, `.NAME.old-…`)
    are stale after an hour. Returns what was removed.
    """
    target = Path(target)
    removed: list[Path] = []
    if not target.parent.is_dir():
        return removed
    legacy = re.compile(re.escape(f".{target.name}.") + r"(\w+\.tmp|old-\w+)")
    for entry in target.parent.iterdir():
        if not entry.is_dir() or entry.is_symlink():
            continue
        pid = _ours(entry, target, TMP_TAG) or _ours(entry, target, OLD_TAG)
        if pid is not None:
            stale = pid != os.getpid() and not _alive(pid)
        else:
            try:
                stale = bool(legacy.fullmatch(entry.name)) and \
                    time.time() - entry.stat().st_mtime > LEGACY_AGE_S
            except OSError:
                stale = False
        if stale:
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
    return removed


def private_dir(target: str | Path, tag: str = TMP_TAG) -> Path:
    """A new folder beside `target` that only this user can enter (mode 0700)."""
    target = Path(target)
    return Path(tempfile.mkdtemp(prefix=f".{target.name}.{tag}-{os.getpid()}-",
                                 dir=target.parent))


def publish_dir(tmp: str | Path, target: str | Path) -> Path:
    """Give `tmp` the usual permissions and rename it onto `target` (replacing a folder).

    A folder already at `target` is moved into a private folder first and removed after.
    """
    tmp, target = Path(tmp), Path(target)
    umask = os.umask(0)
    os.umask(umask)
    if target.is_dir() and any(target.iterdir()):
        old = private_dir(target, OLD_TAG)
        os.replace(target, old / target.name)
        os.chmod(tmp, 0o777 & ~umask)
        os.replace(tmp, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        if target.is_dir():
            target.rmdir()
        os.chmod(tmp, 0o777 & ~umask)
        os.replace(tmp, target)
    return target


@contextmanager
def locked(target: str | Path) -> Iterator[Path]:
    """Hold an exclusive lock for writing `target` (a lock file `.NAME.lock` beside it).

    A second run writing to the same place is refused in one sentence instead of mixing
    its files with the first one's. The lock goes with the process (fcntl.flock), so a
    killed run never leaves it held; the small lock file stays.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    lock = target.parent / f".{target.name}.lock"
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise OutputError(f"another outcomes run is writing to {target}; wait for it to "
                              "finish or give another folder") from None
        yield lock
    finally:
        os.close(fd)
