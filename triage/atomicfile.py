"""Writing files so that a crash or Ctrl-C leaves the old version or the new one, never a mix:
temp file in the same directory, fsync, rename; the previous version kept as a backup."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

# atomic_target's temp file for <name>: ".<name>.<mkstemp's 8 random characters>.tmp"
_TEMP_NAME = re.compile(r"\.(?P<name>.+)\.[a-z0-9_]{8}\.tmp\Z")


def fsync_dir(directory: Path) -> None:
    """Make a rename in ``directory`` durable (the directory entry itself is data)."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_target(path: Path, mode: int | None = None, *,
                  replace: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is fsynced and renamed over
    ``path`` (and the directory fsynced), on any error or Ctrl-C it is removed.

    ``mode`` defaults to what a new file would get (0666 less the umask), not mkstemp's 0600.
    ``replace=False`` never replaces an existing ``path``: the file is linked into place,
    which fails with FileExistsError when ``path`` exists by then (even if it was created
    after the caller last looked).
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    if mode is None:
        umask = os.umask(0)
        os.umask(umask)
        mode = 0o666 & ~umask
    try:
        yield Path(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        if replace:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)
            os.unlink(tmp)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


def remove_stale_temps(directory: Path, target: Callable[[str], bool] = lambda _name: True,
                       older_than: float | None = None) -> list[Path]:
    """Remove the temp files :func:`atomic_target` left in ``directory`` (not below it) when
    its process was killed (``kill -9``, a power cut): those for a file name that
    ``target`` accepts. With ``older_than``, only those not modified for that many seconds:
    another process may be writing a younger one right now. Without it, the caller must
    know that nobody else writes there (it holds the directory's lock). Returns the paths
    removed; a directory that cannot be listed has none.
    """
    removed: list[Path] = []
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return removed
    now = time.time()
    for entry in entries:
        m = _TEMP_NAME.match(entry.name)
        if m is None or not target(m.group("name")):
            continue
        try:
            if not entry.is_file(follow_symlinks=False) or (
                    older_than is not None
                    and now - entry.stat(follow_symlinks=False).st_mtime < older_than):
                continue
            os.unlink(entry.path)
        except OSError:  # gone already, or not ours to remove
            continue
        removed.append(Path(entry.path))
    return removed


def write_atomic(path: Path, data: str | bytes, *, backup_dir: Path | None = None,
                 mode: int = 0o644) -> None:
    """Replace ``path`` with ``data`` atomically. With ``backup_dir``, the current version (if
    any) is first copied there under the same name, so one step back is always possible."""
    path = Path(path)
    raw = data.encode("utf-8") if isinstance(data, str) else data
    if backup_dir is not None and path.exists():
        backup_dir.mkdir(parents=True, exist_ok=True)
        write_atomic(backup_dir / path.name, path.read_bytes(), mode=mode)
    with atomic_target(path, mode) as tmp:
        tmp.write_bytes(raw)


def copy_atomic(src: Path, dst: Path) -> None:
    """Copy ``src`` over ``dst`` atomically, keeping ``src``'s permission bits."""
    with atomic_target(dst, src.stat().st_mode & 0o7777) as tmp:
        shutil.copy2(src, tmp)
