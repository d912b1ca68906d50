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
  message; the content does not. ``#n`` tells identical copies apart. The headers in which
  mail clients keep their state (``MBOX_CLIENT_HEADERS``) are left out of the digest, so a
  message read in mutt or over Dovecot IMAP keeps its key. A message without them has the
  key it always had; one read before they were left out is still recognised by its old key.

A file of 0 bytes or only white space holds no message. An mbox is read under a shared
``fcntl`` lock (the lock Procmail, mutt and Dovecot take to write), released while the caller
handles each message, and not at all while a ``FILE.lock`` dot-lock is held. Its last
message is left for the next read while it may still be being written. What is left out is
reported to ``on_skip(path, reason)``.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import re
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from triage.errors import InputError

__all__ = ["MBOX_CLIENT_HEADERS", "OnSkip", "RawMessage", "detect_format", "iter_messages",
           "message_keys"]

OnSkip = Callable[[str, str], None]
"""Told ``(path, reason)`` of what was left out: a locked or half-written mbox, an empty file."""


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

# Headers in which mail clients keep their state inside an mbox message, added or rewritten
# when a message is read, flagged or the folder expunged: Status and X-Status (mutt, elm,
# pine, Dovecot), X-Keywords, X-UID, X-IMAPbase (on the folder's first message) and X-IMAP
# (UW-IMAP's and Dovecot's folder data), Content-Length (mutt, Dovecot) and Lines (mutt).
# Only these: any other header that changes makes a different message.
MBOX_CLIENT_HEADERS = ("Status", "X-Status", "X-Keywords", "X-UID", "X-IMAPbase", "X-IMAP",
                       "Content-Length", "Lines")
# A whole field: its line and the continuation lines after it.
_CLIENT_FIELD = re.compile(
    rb"^(?:" + b"|".join(re.escape(h.encode()) for h in MBOX_CLIENT_HEADERS)
    + rb")[ \t]*:[^\n]*\n?(?:[ \t][^\n]*\n?)*", re.I | re.M)
_BLANK_LINE = re.compile(rb"\n\r?\n")

# Locks on an mbox. Procmail (Debian's build: "Locking strategies: dotlocking, fcntl()"),
# mutt and Dovecot take FILE.lock and an exclusive fcntl lock to write; a shared fcntl lock
# keeps them out while bytes are read, and is let go while the caller parses a message, so
# a delivery waits milliseconds, not for the whole folder. Without it a reader sees half a
# message: Procmail writes the first byte ("F") and, when the mbox was read in the same
# second, sleeps a second before the rest (its NFS atime trick), holding its locks.
_LOCK_WAIT = 3.0  # seconds to wait for a delivery or a client to let go, else skip the mbox
_LOCK_POLL = 0.05
_STALE_DOTLOCK = 1024  # seconds: Procmail's LOCKTIMEOUT; it breaks older FILE.lock files
# A last message with no blank line after it may still be being written while the mbox is
# younger than this.
_SETTLE_SECONDS = 5.0
_HOLD_SECONDS = 0.5  # let go of the lock this often even while reading only seen messages
_MAX_RESTARTS = 3  # rewritten (a client expunged) while read: read it again at most this often
_TAIL = 1024  # bytes before the read position compared to tell an append from a rewrite


def detect_format(path: str | Path) -> str:
    """``maildir``, ``mh``, ``dir``, ``mbox``, ``file`` (a single message) or ``empty`` (a
    file of 0 bytes or only white space: no message)."""
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
            if head and b"From ".startswith(head):  # or the first line still being written
                return "mbox"
            while not head.strip():  # white space so far
                if not head:
                    return "empty"
                head = fh.read(1 << 16)
        return "file"
    raise InputError("no such mail folder or file", file=p)


def _no_message(data: bytes) -> bool:
    """A file of 0 bytes or only white space."""
    return not data or data.isspace()


def _looks_mh(p: Path) -> bool:
    """An MH folder holds only numbered message files (and dot files)."""
    names = [n for n in os.listdir(p) if not n.startswith(".")]
    return bool(names) and all(_MH_NAME.match(n) for n in names)


def iter_messages(paths: Iterable[str | Path], *, subfolders: bool = False,
                  skip_keys: frozenset[str] | set[str] = frozenset(),
                  on_skip: OnSkip | None = None) -> Iterator[RawMessage]:
    """Stream every message under ``paths``; memory stays bounded by the largest message.

    ``subfolders`` also reads Maildir++ subfolders (``.Spam``, ``.Archive.2024`` ...) and
    subdirectories of plain directories. Keys in ``skip_keys`` are not read (MH, Maildir and
    plain directories) or not returned (mbox, which must be read to find the boundaries).
    ``on_skip(path, reason)`` hears of what is left out for now: an mbox locked by a
    delivery, the last message of an mbox still being written (both read next time), a
    message file that is empty.
    """
    for path in paths:
        fmt = detect_format(path)
        if fmt == "maildir":
            yield from _maildir(Path(path), subfolders, skip_keys, on_skip)
        elif fmt in ("mh", "dir"):
            yield from _directory(Path(path), subfolders, skip_keys, on_skip)
        elif fmt == "mbox":
            yield from _mbox(Path(path), skip_keys, on_skip)
        elif fmt == "empty":
            continue
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


def _maildir(root: Path, subfolders: bool, skip: frozenset[str] | set[str],
             on_skip: OnSkip | None) -> Iterator[RawMessage]:
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
                if _no_message(data):
                    _tell(on_skip, entry.path, "empty file: no message")
                    continue
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

def _directory(root: Path, recursive: bool, skip: frozenset[str] | set[str],
               on_skip: OnSkip | None) -> Iterator[RawMessage]:
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
                yield from iter_messages([p], subfolders=True, skip_keys=skip,
                                         on_skip=on_skip)
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
            data = _read(p)
            if _no_message(data):
                _tell(on_skip, str(p), "empty file: no message")
                continue
            yield RawMessage(str(p), key, data)


def _tell(on_skip: OnSkip | None, path: str, reason: str) -> None:
    if on_skip is not None:
        on_skip(path, reason)


def _num(name: str) -> int:
    return int(name) if _MH_NAME.match(name) else 0


def _mbox(path: Path, skip: frozenset[str] | set[str], on_skip: OnSkip | None
          ) -> Iterator[RawMessage]:
    """Split an mbox at ``From `` lines that follow a blank line (or start the file),
    undoing mboxrd quoting; a Content-Length header that lands on the next ``From `` line
    (mboxcl) wins, so unquoted ``From `` lines in such bodies do not split the message.

    Bytes are read under a shared lock, let go while the caller has a message (and every
    ``_HOLD_SECONDS``). A writer that appended meanwhile is read on; one that rewrote the
    mbox (a client expunged) has it read again from the start, no message returned twice.
    """
    try:
        fh = path.open("rb")
    except OSError as exc:
        raise InputError(f"cannot read: {exc.strerror}", file=path) from exc
    name, prefix = str(path), f"mbox:{path.resolve()}:"
    dotlocks = _dotlock_paths(path)
    returned: set[str] = set()
    with fh:  # closing the file lets go of the lock
        why = _lock(fh, dotlocks)
        if why is not None:
            _tell(on_skip, name, f"not read this time: {why}")
            return
        for _ in range(_MAX_RESTARTS + 1):
            _seek_fresh(fh, 0)
            new_n: dict[str, int] = {}
            old_n: dict[str, int] = {}
            held = time.monotonic()
            for offset, data, unfinished in _mbox_chunks(fh):
                if unfinished is not None:
                    _tell(on_skip, name, unfinished)
                    return
                key, old_key = _mbox_keys(prefix, data, new_n, old_n)
                fresh = not (key in skip or key in returned or old_key in skip)
                if not fresh and time.monotonic() - held < _HOLD_SECONDS:
                    continue
                mark = _Mark(fh)
                _unlock(fh)
                if fresh:
                    returned.add(key)
                    yield RawMessage(name, key, data, offset)
                else:
                    time.sleep(_LOCK_POLL)  # a delivery waiting for the lock goes first
                why = _lock(fh, dotlocks)
                if why is not None:
                    _tell(on_skip, name, f"the rest not read this time: {why}")
                    return
                held = time.monotonic()
                if mark.rewritten(fh):
                    break
            else:
                return
        _tell(on_skip, name, f"rewritten {_MAX_RESTARTS + 1} times while being read: "
                             "the rest is read next time")


def _mbox_keys(prefix: str, data: bytes, new_n: dict[str, int], old_n: dict[str, int]
               ) -> tuple[str, str]:
    """The key of an mbox message, and the key it had before ``MBOX_CLIENT_HEADERS`` were
    left out of the digest (the same key when it has none of them). ``new_n`` and ``old_n``
    count the copies of each digest so far."""
    stripped = _without_client_headers(data)
    old = hashlib.sha1(data, usedforsecurity=False).hexdigest()[:20]
    new = old if stripped is None else (
        hashlib.sha1(stripped, usedforsecurity=False).hexdigest()[:20])
    return _numbered(prefix, new, new_n), _numbered(prefix, old, old_n)


def _numbered(prefix: str, digest: str, counts: dict[str, int]) -> str:
    n = counts[digest] = counts.get(digest, 0) + 1
    return f"{prefix}{digest}" + (f"#{n}" if n > 1 else "")


def _without_client_headers(data: bytes) -> bytes | None:
    """``data`` without the ``MBOX_CLIENT_HEADERS`` fields of its header section (the body
    is left alone); None when it has none."""
    m = _BLANK_LINE.search(data)
    end = m.start() + 1 if m else len(data)
    head, n = _CLIENT_FIELD.subn(b"", data[:end])
    return head + data[end:] if n else None


def _dotlock_paths(path: Path) -> tuple[Path, ...]:
    """``FILE.lock`` beside the mbox as named and, when that is a symbolic link, beside the
    file it points to: the name a delivery used is not known."""
    return tuple(sorted({Path(f"{path}.lock"), Path(f"{path.resolve()}.lock")}))


def _dotlocked(dotlocks: tuple[Path, ...]) -> str | None:
    for lock in dotlocks:
        try:
            age = time.time() - lock.stat().st_mtime
        except OSError:
            continue
        if age < _STALE_DOTLOCK:  # an older one is stale: Procmail itself would break it
            return f"{lock.name} exists (a delivery or a mail client is writing it)"
    return None


def _lock(fh: BinaryIO, dotlocks: tuple[Path, ...]) -> str | None:
    """Take a shared fcntl lock on the mbox once no dot-lock and no writer's lock is held,
    waiting up to ``_LOCK_WAIT`` seconds; None when locked (or when the file system has no
    fcntl locks), else why not."""
    deadline = time.monotonic() + _LOCK_WAIT
    while True:
        why = _dotlocked(dotlocks)
        if why is None:
            try:
                fcntl.lockf(fh.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
                return None
            except OSError as exc:
                if exc.errno not in (errno.EACCES, errno.EAGAIN):
                    return None  # no fcntl locks here (ENOLCK on some NFS): read unlocked
                why = "another program holds a write lock on it"
        if time.monotonic() >= deadline:
            return f"{why}; waited {_LOCK_WAIT:g} s"
        time.sleep(_LOCK_POLL)


def _unlock(fh: BinaryIO) -> None:
    with contextlib.suppress(OSError):
        fcntl.lockf(fh.fileno(), fcntl.LOCK_UN)


def _seek_fresh(fh: BinaryIO, offset: int) -> None:
    """Seek to ``offset`` dropping the read-ahead, which the file may no longer hold: a seek
    inside the buffer keeps it, a seek from the end never does."""
    fh.seek(0, os.SEEK_END)
    fh.seek(offset)


class _Mark:
    """The mbox as far as it was read under the lock: once locked again, tells an append
    (read on, from fresh bytes) from a rewrite (read again)."""

    __slots__ = ("pos", "stat", "tail")

    def __init__(self, fh: BinaryIO):
        fd = fh.fileno()
        st = os.fstat(fd)
        self.stat = (st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        self.pos = fh.tell()
        self.tail = os.pread(fd, min(self.pos, _TAIL), max(0, self.pos - _TAIL))

    def rewritten(self, fh: BinaryIO) -> bool:
        fd = fh.fileno()
        st = os.fstat(fd)
        if (st.st_size, st.st_mtime_ns, st.st_ctime_ns) == self.stat:
            return False
        if (st.st_size < self.pos
                or os.pread(fd, len(self.tail), max(0, self.pos - _TAIL)) != self.tail):
            return True
        _seek_fresh(fh, self.pos)
        return False


def _mbox_chunks(fh: BinaryIO) -> Iterator[tuple[int, bytes, str | None]]:
    """``(offset, message, None)`` for each message; for a last message that may still be
    being written, ``(offset, b"", why)`` instead. White space before the first ``From ``
    line is no message."""
    lines: list[bytes] = []
    start = pos = 0
    prev_blank = True
    in_headers = False
    content_length: int | None = None
    body_end = -1  # file offset where a verified Content-Length says the body ends
    while line := fh.readline():
        if prev_blank and pos >= body_end and _FROM_LINE.match(line):
            if _has_text(lines):
                yield start, _join(lines), None
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
    if _has_text(lines):
        # A verified Content-Length that ends here says the message is whole.
        why = None if start < body_end <= pos else _unfinished(fh, lines[-1])
        yield start, (b"" if why else _join(lines)), why


def _has_text(lines: list[bytes]) -> bool:
    return any(not ln.isspace() for ln in lines)


def _unfinished(fh: BinaryIO, last: bytes) -> str | None:
    """Why the last message of the mbox, whose last line is ``last``, may still be being
    written; None when it looks whole. Procmail, mutt and Dovecot end every message with
    a newline and a blank line; a newline alone is whole once the mbox has been left
    alone for ``_SETTLE_SECONDS``."""
    if last in (b"\n", b"\r\n"):
        return None
    if not last.endswith(b"\n"):
        return ("last message not read: it stops in the middle of a line (still being "
                "written?); it is read once complete")
    age = time.time() - os.fstat(fh.fileno()).st_mtime
    if abs(age) < _SETTLE_SECONDS:
        return (f"last message left for the next read: no blank line after it yet and the "
                f"mbox was modified {max(age, 0):.0f} s ago")
    return None


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
