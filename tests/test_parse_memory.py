"""The memory-saving paths of `triage parse` read and hand over the same data as before."""

from __future__ import annotations

import gzip
import random
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest

from triage.ingest.kindframes import KindFrames
from triage.ingest.logtables import batched
from triage.ingest.maillog import Chunk, iter_blocks


def _reference_blocks(path: Path, chunk_bytes: int, offset: int = 0,
                      partial_tail: bool = True) -> Iterator[tuple[bytes, bool, int]]:
    """The straightforward reading (carry the partial line, cut at the last newline) that
    iter_blocks does with fewer copies: same blocks, same offsets."""
    with open(path, "rb") as f:
        f.seek(offset)
        read, rest = offset, b""
        while True:
            data = f.read(chunk_bytes)
            if not data:
                if rest and partial_tail:
                    yield rest, True, read
                return
            read += len(data)
            buf = rest + data
            cut = buf.rfind(b"\n")
            if cut < 0:
                rest = buf
                continue
            rest = buf[cut + 1:]
            yield buf[:cut + 1], False, read - len(rest)


def test_blocks_match_the_reference_reading(tmp_path: Path) -> None:
    rng = random.Random(7)
    path = tmp_path / "mail.log"
    for _ in range(150):
        lines = [b"x" * rng.choice([0, 1, 3, 11, 60, 300]) for _ in range(rng.randint(0, 30))]
        content = b"\n".join(lines) + rng.choice([b"", b"\n", b"partial"])
        path.write_bytes(content)
        for chunk in (1, 2, 7, 64, 1000):
            for offset in (0, len(content) // 3):
                for tail in (True, False):
                    got = list(iter_blocks(path, chunk, offset, partial_tail=tail))
                    want = list(_reference_blocks(path, chunk, offset, partial_tail=tail))
                    assert got == want


@pytest.mark.parametrize("tail", [b"", b"\n", b"no newline"])
def test_blocks_of_a_compressed_file(tmp_path: Path, tail: bytes) -> None:
    content = b"".join(b"line %d\n" % i for i in range(500)) + tail
    plain, packed = tmp_path / "mail.log", tmp_path / "mail.log.1.gz"
    plain.write_bytes(content)
    packed.write_bytes(gzip.compress(content))
    got = list(iter_blocks(packed, 100))
    assert got == list(_reference_blocks(plain, 100))
    assert b"".join(block for block, _, _ in got) == content
    # an incremental reader leaves the unfinished last line for later
    whole = list(iter_blocks(packed, 100, partial_tail=False))
    assert b"".join(block for block, _, _ in whole) == content[:content.rfind(b"\n") + 1]



def _chunk(file: str, events: int, tag: int) -> Chunk:
    frame = pl.DataFrame({"line_no": list(range(tag * 1000, tag * 1000 + events))},
                         schema={"line_no": pl.Int64})
    return Chunk(kinds=KindFrames({"connect": frame}, file), unparsed=pl.DataFrame(),
                 lines=events, file=file)


def _reference_batches(sizes: list[tuple[str, int]], limit: int) -> list[list[int]]:
    """Chunk indexes per batch: a batch ends once it holds ``limit`` events, or at a new
    file."""
    out: list[list[int]] = []
    held = 0
    for i, (file, n) in enumerate(sizes):
        if out and (file != sizes[out[-1][-1]][0] or held >= limit):
            out.append([])
            held = 0
        if not out:
            out.append([])
        out[-1].append(i)
        held += n
    return out


def test_batches_group_the_same_chunks() -> None:
    rng = random.Random(3)
    for _ in range(200):
        sizes = [(rng.choice("ab"), rng.randint(0, 40)) for _ in range(rng.randint(0, 12))]
        sizes.sort(key=lambda s: s[0])  # files come one after the other
        limit = rng.choice([1, 10, 50])
        chunks = [_chunk(f, n, i) for i, (f, n) in enumerate(sizes)]
        got = [batch.kinds.frames["connect"]["line_no"].to_list() if batch.kinds.frames else []
               for batch in batched(iter(chunks), limit)]
        want = [[v for i in group for v in range(i * 1000, i * 1000 + sizes[i][1])]
                for group in _reference_batches(sizes, limit)]
        assert got == want
