"""Mail folders as Procmail and mail clients write them -> a stream of raw messages.

Formats: Maildir (``cur/`` and ``new/``; ``tmp/`` holds deliveries in progress and is
skipped; Maildir++ subfolders such as ``.Spam`` on request), mbox (mboxo and mboxrd ``From ``
lines, ``Content-Length`` when it points at the next message), MH folders (numbered files) and
plain directories of message files. Files are only ever opened for reading.

Each message has a stable key, so a store can remember what it has read and skip it next time:

* Maildir: ``maildir:<folder>:<unique name>``. The part before ``:2,`` stays the same when a
  client moves the message from ``new/`` to ``cur/`` or changes its flags.
* MH and plain directories: ``file:<path>:<size>:<mtime_ns>``, known without reading the file.
* mbox: ``mbox:<path>:<sha1 of the message>[#n]``. Offsets move when a client deletes a
  message; the content does not. ``#n`` tells identical copies apart.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from triage.errors import InputError

__all__ = ["RawMessage", "detect_format", "iter_messages", "message_keys"]


@dataclass(frozen=True, slots=True)
class RawMessage:
    """One message's bytes and where they came from."""

    path: str  # the file (for mbox: the mbox file, with ``offset``)
    key: str
    data: bytes
    offset: int | None = None


_MH_NAME = re.compile(r"^\d+$")
_FROM_LINE = re.compile(rb"^From \S*\s")
_MBOXRD_QUOTED = re.compile(rb"^>(>*From )")
_CONTENT_LENGTH = re.compile(rb"^Content-Length:\s*(\d+)\s*$", re.I)


def detect_format(path: str | Path) -> str:
    """``maildir``, ``mh``, ``dir``, ``mbox`` or ``file`` (a single message)."""
    p = Path(path)
    if p.is_dir():
        if (p / "cur").is_dir() or (p / "new").is_dir():
            return "maildir"
        if (p / ".mh_sequences").exists() or _looks_mh(p):
            return "mh"
        return "dir"
    if p.is_file():
        with p.open("rb") as fh:
            head = fh.read(5)
        return "mbox" if head == b"From " else "file"
    raise InputError("no such mail folder or file", file=p)


def _looks_mh(p: Path) -> bool:
    """An MH folder holds only numbered message files (and dot files)."""
    names = [n for n in os.listdir(p) if not n.startswith(".")]
    return bool(names) and all(_MH_NAME.match(n) for n in names)


def iter_messages(paths: Iterable[str | Path], *, subfolders: bool = False,
                  skip_keys: frozenset[str] | set[str] = frozenset()) -> Iterator[RawMessage]:
    """Stream every message under ``paths``; memory stays bounded by the largest message.

    ``subfolders`` also reads Maildir++ subfolders (``.Spam``, ``.Archive.2024`` ...) and
    subdirectories of plain directories. Keys in ``skip_keys`` are not read (MH, Maildir and
    plain directories) or not returned (mbox, which must be read to find the boundaries).
    """
    for path in paths:
        fmt = detect_format(path)
        if fmt == "maildir":
            yield from _maildir(Path(path), subfolders, skip_keys)
        elif fmt in ("mh", "dir"):
            yield from _directory(Path(path), subfolders, skip_keys)
        elif fmt == "mbox":
            yield from (m for m in _mbox(Path(path)) if m.key not in skip_keys)
        else:
            ref = _file_key(Path(path))
            if ref not in skip_keys:
                yield RawMessage(str(path), ref, _read(Path(path)))


def message_keys(paths: Iterable[str | Path], *, subfolders: bool = False) -> Iterator[str]:
    """The stable key of every message under ``paths`` (see the module docstring)."""
    for msg in iter_messages(paths, subfolders=subfolders):
        yield msg.key


def _read(path: Path) -> bytes:
    try:
        with open(path, "rb", buffering=0) as fh:
            return fh.read()
    except OSError as exc:
        raise InputError(f"cannot read: {exc.strerror}", file=path) from exc


def _file_key(path: Path) -> str:
    st = path.stat()
    return f"file:{path.resolve()}:{st.st_size}:{st.st_mtime_ns}"


def _maildir(root: Path, subfolders: bool, skip: frozenset[str] | set[str]
             ) -> Iterator[RawMessage]:
    folders = [root]
    if subfolders:
        folders += sorted(p for p in root.iterdir()
                          if p.name.startswith(".") and p.name not in (".", "..")
                          and p.is_dir() and ((p / "cur").is_dir() or (p / "new").is_dir()))
    for folder in folders:
        base = str(folder.resolve())
        for sub in ("new", "cur"):
            d = folder / sub
            if not d.is_dir():
                continue
            # Plain strings and directory entries: a Path and a stat per message cost more
            # than reading a small message.
            with os.scandir(d) as it:
                entries = sorted((e for e in it if not e.name.startswith(".")),
                                 key=lambda e: e.name)
            for entry in entries:
                name = entry.name
                key = f"maildir:{base}:{name.split(':2,', 1)[0].split('!2,', 1)[0]}"
                if key in skip or not _is_file(entry):
                    continue
                try:
                    with open(entry.path, "rb", buffering=0) as fh:  # one read, no buffer
                        data = fh.read()
                except OSError:
                    continue  # moved by a client (new/ -> cur/) while we were reading
                yield RawMessage(entry.path, key, data)


# The errors on which Path.is_file/is_dir answer False instead of raising.
_IGNORED_ERRNOS = frozenset({errno.ENOENT, errno.ENOTDIR, errno.EBADF, errno.ELOOP})


def _is_file(entry: os.DirEntry[str]) -> bool:
    """``Path.is_file`` for a directory entry (following symbolic links)."""
    return _entry_test(entry.is_file)


def _is_dir(entry: os.DirEntry[str]) -> bool:
    """``Path.is_dir`` for a directory entry (following symbolic links)."""
    return _entry_test(entry.is_dir)


def _entry_test(test: Callable[[], bool]) -> bool:
    try:
        return test()
    except OSError as exc:
        if exc.errno not in _IGNORED_ERRNOS:
            raise
        return False

def _directory(root: Path, recursive: bool, skip: frozenset[str] | set[str]
               ) -> Iterator[RawMessage]:
    with os.scandir(root) as it:
        entries = {e.name: e for e in it}
    real_root: str | None = None
    for name in sorted(entries, key=lambda n: (not _MH_NAME.match(n), _num(n), n)):
        if name.startswith("."):
            continue
        entry = entries[name]
        p = root / name
        if _is_dir(entry):
            if recursive:
                yield from iter_messages([p], subfolders=True, skip_keys=skip)
            continue
        if not _is_file(entry):
            continue
        # The key of _file_key without resolving every path: a file that is not a
        # symbolic link resolves to the resolved folder joined with its name.
        st = entry.stat()
        if entry.is_symlink():
            resolved = str(p.resolve())
        else:
            if real_root is None:
                real_root = os.path.realpath(root)
            resolved = os.path.join(real_root, name)
        key = f"file:{resolved}:{st.st_size}:{st.st_mtime_ns}"
        if key not in skip:
            yield RawMessage(str(p), key, _read(p))


def _num(name: str) -> int:
    return int(name) if _MH_NAME.match(name) else 0


def _mbox(path: Path) -> Iterator[RawMessage]:
    """Split an mbox at ``From `` lines that follow a blank line (or start the file),
    undoing mboxrd quoting; a Content-Length header that lands on the next ``From `` line
    (mboxcl) wins, so unquoted ``From `` lines in such bodies do not split the message."""
    seen: dict[str, int] = {}
    try:
        fh = path.open("rb")
    except OSError as exc:
        raise InputError(f"cannot read: {exc.strerror}", file=path) from exc
    with fh:
        for offset, data in _mbox_chunks(fh):
            digest = hashlib.sha1(data, usedforsecurity=False).hexdigest()[:20]
            n = seen.get(digest, 0) + 1
            seen[digest] = n
            key = f"mbox:{path.resolve()}:{digest}" + (f"#{n}" if n > 1 else "")
            yield RawMessage(str(path), key, data, offset)


def _mbox_chunks(fh: BinaryIO) -> Iterator[tuple[int, bytes]]:
    lines: list[bytes] = []
    start = pos = 0
    prev_blank = True
    in_headers = False
    content_length: int | None = None
    body_end = -1  # file offset where a verified Content-Length says the body ends
    while line := fh.readline():
        if prev_blank and pos >= body_end and _FROM_LINE.match(line):
            if lines:
                yield start, _join(lines)
            lines, start = [line], pos
            in_headers, content_length = True, None
        else:
            if in_headers:
                m = _CONTENT_LENGTH.match(line)
                if m:
                    content_length = int(m.group(1))
                elif line in (b"\n", b"\r\n"):
                    in_headers = False
                    if content_length is not None:
                        body_end = _verified_end(fh, pos + len(line) + content_length)
            lines.append(line)
        pos += len(line)
        prev_blank = line in (b"\n", b"\r\n")
    if lines:
        yield start, _join(lines)


def _verified_end(fh: BinaryIO, end: int) -> int:
    """``end`` if a message boundary (end of file, or an optional blank line and a ``From ``
    line) is there, else -1: spam carries bogus Content-Length headers too."""
    size = os.fstat(fh.fileno()).st_size
    if end > size:
        return -1
    here = fh.tell()
    try:
        fh.seek(end)
        peek = fh.read(7)
    finally:
        fh.seek(here)
    at_eof = peek.strip() == b"" and end >= size - 2
    ok = at_eof or peek.lstrip(b"\r\n").startswith(b"From ")
    return end if ok else -1


def _join(lines: list[bytes]) -> bytes:
    """Drop the separating blank line; unquote mboxrd ``>From `` lines."""
    if lines and lines[-1] in (b"\n", b"\r\n"):
        lines = lines[:-1]
    return b"".join(_MBOXRD_QUOTED.sub(rb"\1", ln) if ln.startswith(b">") else ln
                    for ln in lines)
