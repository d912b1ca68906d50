"""Log files as blocks of whole lines: decompression by content (.gz, .bz2, .xz), seeking to a
content offset, overlong lines cut short, and damaged compressed files read up to the damage.

``iter_blocks`` is what ``maillog`` parses; ``BlockReader`` gives an incremental reader
(``logcursor``) the bytes around its offsets besides. Nothing here knows about syslog lines.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
import re
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO, cast

from triage.errors import InputError

MAX_LINE_BYTES = 16 * 1024  # syslog daemons cap messages far below this
TAIL_BYTES = 4096  # content bytes before the end of a block that BlockReader keeps (see tail)
# what reading a damaged or truncated file raises (gzip: EOFError, zlib.error, BadGzipFile;
# bz2: EOFError, OSError; xz: EOFError, LZMAError)
READ_ERRORS = (OSError, EOFError, zlib.error, lzma.LZMAError)
# mail.warn, mail.err.1, mail.warn.2.gz: rsyslog's copies of the mail.log lines of those
# levels (maillog reads them only for times no mail.log covers; logcursor not at all)
SECONDARY_NAME = re.compile(
    r"(?:^|[./])(?:warn|err|warning|error)(?:\.\d+)?(?:\.(?:gz|bz2|xz))?$")


def open_log(path: str | Path) -> IO[bytes]:
    """Open a log file, decompressing .gz, .bz2 and .xz by content, not by name."""
    p = Path(path)
    try:
        f = open(p, "rb")  # noqa: SIM115 - returned to the caller
    except OSError as exc:
        raise InputError(f"cannot open log: {exc.strerror}", file=p) from exc
    magic = f.read(6)
    f.seek(0)
    if magic[:2] == b"\x1f\x8b":
        return gzip.GzipFile(fileobj=f)  # type: ignore[return-value]
    if magic[:3] == b"BZh":
        return bz2.BZ2File(f)
    if magic[:6] == b"\xfd7zXZ\x00":
        return lzma.LZMAFile(f)
    return f


def is_compressed(f: IO[bytes]) -> bool:
    """Whether ``f``, from :func:`open_log`, decompresses its file."""
    return isinstance(f, gzip.GzipFile | bz2.BZ2File | lzma.LZMAFile)


def iter_blocks(path: str | Path, chunk_bytes: int, offset: int = 0,
                partial_tail: bool = True) -> Iterator[tuple[bytes, bool, int]]:
    """Yield (block of whole lines, is_last, offset after the block) from ``offset`` on.

    Offsets count bytes of the decompressed content. A final line without its newline is
    yielded as the last block when ``partial_tail`` is true, and left unread otherwise (an
    incremental reader comes back for it: the line may still be being written). A line
    longer than MAX_LINE_BYTES may be handed on cut short (still overlong, see BlockReader).
    """
    with BlockReader(path, chunk_bytes, offset, partial_tail) as reader:
        yield from reader


class BlockReader:
    """The blocks of :func:`iter_blocks`, with what an incremental reader needs besides.

    Used as a context manager (or ``open``, ``close``), then iterated. Once open, ``lead``
    holds the ``lead`` content bytes just before ``offset`` (fewer when the content ends
    before ``offset``; then nothing is read), read on the way to ``offset``: a reader can check
    that what it read last time is still there without decompressing twice. After each
    block, ``tail`` holds the TAIL_BYTES content bytes before the block's end offset (from the
    file, also where a line was cut short).

    A line longer than MAX_LINE_BYTES is not carried whole from read to read (a crash can
    leave a hole of gigabytes of NULs without a newline): its first MAX_LINE_BYTES + 1 bytes
    stand for it, one line that the parser reports as overlong; the rest of it is skipped.
    (One that a single read holds is handed on whole: it costs no more than the read.)

    A read error raises InputError after the blocks before it; for a damaged or truncated
    compressed file these include the whole lines that can still be decompressed. ``at_end``
    is then true when nothing more can be read from the file as it is (compressed), and
    otherwise tells whether the whole content was consumed.
    """

    def __init__(self, path: str | Path, chunk_bytes: int, offset: int = 0,
                 partial_tail: bool = True, lead: int = 0) -> None:
        self.path = Path(path)
        self.chunk_bytes = chunk_bytes
        self.offset = offset
        self.partial_tail = partial_tail
        self._want_lead = min(lead, offset)
        self.lead = b""
        self.tail = b""
        self.at_end = False
        self.compressed = False
        self.error: InputError | None = None
        self._f: IO[bytes] | None = None
        self._pos = offset  # content offset of the stream
        self._finished = False

    def __enter__(self) -> BlockReader:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def open(self) -> None:
        """Open the file and go to ``offset`` (reading ``lead`` on the way)."""
        f = open_log(self.path)
        self.compressed = is_compressed(f)
        start = self.offset - self._want_lead
        try:
            if start:
                f.seek(start)  # compressed streams seek forward by decompressing
            self.lead = f.read(self._want_lead) if self._want_lead else b""
        except (*READ_ERRORS, ValueError) as exc:
            f.close()
            what = ("damaged or truncated compressed data before" if self.compressed
                    else "cannot seek to")
            raise InputError(f"{what} content byte {self.offset}: {_why(exc)}",
                             file=self.path) from exc
        self.tail = self.lead
        self._f = f

    def identity(self) -> tuple[int, int]:
        """(device, inode) of the open file: which file was opened, whatever its name now."""
        assert self._f is not None
        st = os.fstat(self._f.fileno())
        return st.st_dev, st.st_ino

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None

    def __iter__(self) -> Iterator[tuple[bytes, bool, int]]:
        if len(self.lead) < self._want_lead:
            self.at_end = True  # the content ends before ``offset``: nothing here to read
            return
        read, rest, skipping = self.offset, b"", False
        window = self.lead  # the content just before ``read``
        while True:
            data = self._read()
            if not data:
                if rest and self.partial_tail and self.error is None:
                    self.tail = window
                    yield rest, True, read
                    rest = b""
                self.at_end = not rest or (self.error is not None and self.compressed)
                if self.error is not None:
                    raise self.error
                return
            start = read
            read += len(data)
            view = memoryview(data)
            lo = 0
            if skipping:  # inside an overlong line: skip to its end
                nl = data.find(b"\n")
                if nl < 0:
                    window = _keep(window, view)
                    continue
                skipping, lo = False, nl + 1
                self.tail = window = _keep(window, view[:lo])
                line, rest = rest + b"\n", b""
                yield line, False, start + lo
            cut = data.rfind(b"\n", lo) + 1
            if not cut:
                rest += data[lo:] if lo else data
                window = _keep(window, view[lo:])
                if len(rest) > MAX_LINE_BYTES:
                    rest, skipping = rest[:MAX_LINE_BYTES + 1], True
                continue
            # the lines carried over and this read's whole lines, copied once (no copy at
            # all when none is carried and the read ends a line); only the block is held
            # while the caller parses it
            if rest or lo or cut < len(data):
                block = b"".join((rest, view[lo:cut]))
                rest = data[cut:]
            else:
                block = data
            self.tail = _keep(window, view[lo:cut])
            window = _keep(window, view[lo:])
            if len(rest) > MAX_LINE_BYTES:
                rest, skipping = rest[:MAX_LINE_BYTES + 1], True
            del data, view
            yield block, False, start + cut

    def _read(self) -> bytes:
        """The next piece of content; b"" at its end or after a read error (``error``)."""
        if self._finished or self._f is None:
            return b""
        try:
            data = self._f.read(self.chunk_bytes)
        except READ_ERRORS as exc:
            data = self._salvage(exc)
        if not data:
            self._finished = True
        self._pos += len(data)
        return data

    def _salvage(self, exc: BaseException) -> bytes:
        """After a failed read of a compressed file, the content up to the damage (``read``
        drops what it had decompressed), at most ``chunk_bytes`` of it, from a new stream.
        Sets ``error`` unless the new stream reads on without failing (a transient error:
        reading goes on from it)."""
        pieces: list[bytes] = []
        got = 0
        failure: BaseException | None = exc
        if self.compressed and self._f is not None:
            self._f.close()
            self._f = None
            try:
                self._f = again = open_log(self.path)
                again.seek(self._pos)
                failure = None
                while got < self.chunk_bytes:
                    piece = cast("io.BufferedIOBase", again).read1(
                        min(64 * 1024, self.chunk_bytes - got))
                    if not piece:
                        break
                    pieces.append(piece)
                    got += len(piece)
            except (*READ_ERRORS, InputError) as later:
                failure = later
        if failure is not None:
            self._finished = True
            what = "damaged or truncated compressed data" if self.compressed else "read error"
            self.error = InputError(f"{what} after content byte {self._pos + got}: "
                                    f"{_why(failure)}", file=self.path)
        return b"".join(pieces)


def _keep(window: bytes, piece: memoryview) -> bytes:
    """The last TAIL_BYTES of ``window`` followed by ``piece``."""
    if len(piece) >= TAIL_BYTES:
        return bytes(piece[-TAIL_BYTES:])
    return (window + bytes(piece))[-TAIL_BYTES:]


def _why(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__
