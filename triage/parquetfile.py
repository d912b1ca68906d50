"""Append row groups to one Parquet file, in bounded memory, with polars' own writer.

polars can write a whole frame (``write_parquet``) or stream a lazy query
(``sink_parquet``), but it has no writer that a program appends frames to. The streaming sink
fed from a Python source can stand in for one, but it keeps ~150 KB per row group of a
49-column table until the file is closed: 15 MB more per million events at 10,000-row
groups, so a long log would grow without bound. pyarrow's writer keeps ~5 KB per row group,
but importing pyarrow costs ~40 MB, and its encoding of polars' string views held another
~60 MB at the peak of ``triage parse``.

So each row group is written by ``write_parquet`` into memory as a one-row-group file, its
pages are copied to the output, and its footer entry (Thrift compact protocol) is moved by
the output's offset and kept, encoded, in ~5 KB. On close the footer of the first file is
written again with every row group and the total row count. Page indexes (optional in
Parquet) are not carried over: their entries hold absolute page offsets, and a row group of
10,000 rows has one page per column anyway, whose statistics stay in the column chunk.

Format reference: the Parquet file layout and ``parquet.thrift`` (FileMetaData, RowGroup,
ColumnChunk, ColumnMetaData), and Thrift's compact protocol.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    import polars as pl

MAGIC = b"PAR1"

# compact protocol types
_TRUE, _FALSE, _BYTE, _I16, _I32, _I64, _DOUBLE, _BINARY, _LIST, _SET, _MAP, _STRUCT = range(
    1, 13)

# field ids in parquet.thrift
_FMD_NUM_ROWS, _FMD_ROW_GROUPS = 3, 4
_RG_COLUMNS, _RG_FILE_OFFSET, _RG_ORDINAL = 1, 5, 7
_CC_FILE_OFFSET, _CC_META = 2, 3
_CC_PAGE_INDEX = frozenset({4, 5, 6, 7})  # offset/column index offset and length
_CMD_TOTAL_COMPRESSED, _CMD_DATA_PAGE, _CMD_INDEX_PAGE, _CMD_DICT_PAGE = 7, 9, 10, 11
_CMD_BLOOM = frozenset({14, 15})  # bloom filter offset and length

Field = list[Any]  # [field id, type, value]


class ThriftError(ValueError):
    """The bytes are not the Thrift compact encoding this module reads."""


# ---- Thrift compact protocol: a generic reader and writer -----------------------------------

class _Reader:
    """Reads compact-protocol values from ``data`` at ``pos`` (an IndexError past the end is
    turned into a ThriftError by :func:`decode_struct`)."""

    def __init__(self, data: bytes, pos: int = 0):
        self.data, self.pos = data, pos

    def byte(self) -> int:
        b = self.data[self.pos]
        self.pos += 1
        return b

    def varint(self) -> int:
        data, pos = self.data, self.pos
        b = data[pos]
        pos += 1
        if b < 0x80:  # most values: one byte
            self.pos = pos
            return b
        result, shift = b & 0x7F, 7
        while True:
            b = data[pos]
            pos += 1
            result |= (b & 0x7F) << shift
            if b < 0x80:
                self.pos = pos
                return result
            shift += 7
            if shift > 70:
                raise ThriftError("varint too long")

    def zigzag(self) -> int:
        n = self.varint()
        return (n >> 1) ^ -(n & 1)

    def raw(self, n: int) -> bytes:
        end = self.pos + n
        if n < 0 or end > len(self.data):
            raise ThriftError("unexpected end of Thrift data")
        out = self.data[self.pos:end]
        self.pos = end
        return out

    def _size(self, head: int) -> int:
        return self.varint() if head >> 4 == 15 else head >> 4

    def value(self, ftype: int) -> Any:
        if ftype in (_I16, _I32, _I64):
            return self.zigzag()
        if ftype == _BINARY:
            return self.raw(self.varint())
        if ftype == _STRUCT:
            return self.struct()
        if ftype in (_TRUE, _FALSE, _BYTE):  # a boolean inside a list or map: one byte
            return self.byte()
        if ftype == _DOUBLE:
            return self.raw(8)
        if ftype in (_LIST, _SET):
            head = self.byte()
            etype, size = head & 0x0F, self._size(head)
            return (etype, [self.value(etype) for _ in range(size)])
        if ftype == _MAP:
            size = self.varint()
            if size == 0:
                return (0, 0, [])
            kv = self.byte()
            ktype, vtype = kv >> 4, kv & 0x0F
            return (ktype, vtype, [(self.value(ktype), self.value(vtype)) for _ in range(size)])
        raise ThriftError(f"unknown Thrift compact type {ftype}")

    def skip(self, ftype: int) -> None:
        """Move past a value without building it."""
        if ftype in (_I16, _I32, _I64):
            self.varint()
        elif ftype == _BINARY:
            self.raw(self.varint())
        elif ftype == _STRUCT:
            self.struct(keep=frozenset())
        elif ftype in (_TRUE, _FALSE, _BYTE):  # inside a list or map: one byte
            self.pos += 1
        elif ftype == _DOUBLE:
            self.raw(8)
        elif ftype in (_LIST, _SET):
            head = self.byte()
            etype, size = head & 0x0F, self._size(head)
            for _ in range(size):
                self.skip(etype)
        elif ftype == _MAP:
            size = self.varint()
            if size:
                kv = self.byte()
                for _ in range(size):
                    self.skip(kv >> 4)
                    self.skip(kv & 0x0F)
        else:
            raise ThriftError(f"unknown Thrift compact type {ftype}")

    def struct(self, keep: frozenset[int] | None = None) -> list[Field]:
        """The fields of a struct; with ``keep``, only the fields of those ids (the others
        are skipped)."""
        fields: list[Field] = []
        last = 0
        while True:
            head = self.byte()
            if head == 0:
                return fields
            ftype, delta = head & 0x0F, head >> 4
            fid = last + delta if delta else self.zigzag()
            last = fid
            if ftype in (_TRUE, _FALSE):  # a boolean field: its value is in the type
                if keep is None or fid in keep:
                    fields.append([fid, ftype, None])
            elif keep is not None and fid not in keep:
                self.skip(ftype)
            else:
                fields.append([fid, ftype, self.value(ftype)])


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _zigzag(n: int) -> bytes:
    return _varint((n << 1) ^ (n >> 63))


def _encode_value(ftype: int, value: Any) -> bytes:
    if ftype in (_TRUE, _FALSE, _BYTE):
        return bytes([value])
    if ftype in (_I16, _I32, _I64):
        return _zigzag(value)
    if ftype == _DOUBLE:
        return bytes(value)
    if ftype == _BINARY:
        return _varint(len(value)) + bytes(value)
    if ftype in (_LIST, _SET):
        etype, items = value
        return _list_header(etype, len(items)) + b"".join(_encode_value(etype, v)
                                                           for v in items)
    if ftype == _MAP:
        ktype, vtype, pairs = value
        if not pairs:
            return b"\x00"
        return (_varint(len(pairs)) + bytes([ktype << 4 | vtype])
                + b"".join(_encode_value(ktype, k) + _encode_value(vtype, v) for k, v in pairs))
    if ftype == _STRUCT:
        return encode_struct(value)
    raise ThriftError(f"unknown Thrift compact type {ftype}")


def _list_header(etype: int, size: int) -> bytes:
    return bytes([size << 4 | etype]) if size < 15 else bytes([0xF0 | etype]) + _varint(size)


def _field_header(last: int, fid: int, ftype: int) -> bytes:
    delta = fid - last
    return bytes([delta << 4 | ftype]) if 0 < delta <= 15 else bytes([ftype]) + _zigzag(fid)


def encode_struct(fields: list[Field], raw: dict[int, bytes] | None = None) -> bytes:
    """The compact encoding of a struct; ``raw`` gives already encoded values by field id."""
    out = bytearray()
    last = 0
    for fid, ftype, value in fields:
        out += _field_header(last, fid, ftype)
        if ftype not in (_TRUE, _FALSE):
            out += raw[fid] if raw and fid in raw else _encode_value(ftype, value)
        last = fid
    out.append(0)
    return bytes(out)


def decode_struct(data: bytes, pos: int = 0, keep: frozenset[int] | None = None
                  ) -> tuple[list[Field], int]:
    """A struct's fields ([id, type, value], in order) and the position after it; with
    ``keep``, only the top-level fields of those ids."""
    reader = _Reader(data, pos)
    try:
        fields = reader.struct(keep)
    except (IndexError, RecursionError) as exc:
        raise ThriftError("truncated or malformed Thrift data") from exc
    return fields, reader.pos


def _get(fields: list[Field], fid: int) -> Field | None:
    return next((f for f in fields if f[0] == fid), None)


def _require(fields: list[Field], fid: int, what: str) -> Field:
    f = _get(fields, fid)
    if f is None:
        raise ThriftError(f"Parquet footer without {what}")
    return f


def _shift(fields: list[Field], fid: int, by: int) -> None:
    f = _get(fields, fid)
    if f is not None:
        f[2] += by


# ---- the appender ---------------------------------------------------------------------------

class ParquetAppender:
    """Write frames to one Parquet file, a row group per ``row_group_rows`` rows or more.

    Frames must all have one schema. :meth:`close` completes the file; without it the file
    is not valid Parquet (callers write to a temporary name and rename it on success).
    """

    def __init__(self, path: Path, schema: pl.Schema, row_group_rows: int,
                 **write_options: Any):
        self._path = path
        self._file: IO[bytes] = open(path, "wb")  # noqa: SIM115 (closed in close/abort)
        self._file.write(MAGIC)
        self._pos = len(MAGIC)
        self._rows_per_group = row_group_rows
        self._options = write_options
        self._buffer: list[pl.DataFrame] = []
        self._buffered = 0
        self._groups: list[bytes] = []
        self._meta: list[Field] | None = None
        self._rows = 0
        self._schema = schema

    def write(self, frame: pl.DataFrame) -> None:
        """Append ``frame`` (in the schema given); a row group is written once enough rows
        are buffered."""
        if frame.height == 0:
            return
        self._buffer.append(frame)
        self._buffered += frame.height
        if self._buffered >= self._rows_per_group:
            self._flush()

    def _flush(self) -> None:
        import polars as pl

        if not self._buffer:
            return
        frame = pl.concat(self._buffer) if len(self._buffer) > 1 else self._buffer[0]
        self._buffer, self._buffered = [], 0
        data = io.BytesIO()
        # one row group for the whole frame
        frame.write_parquet(data, row_group_size=max(frame.height, 1), **self._options)
        del frame
        self._append(data.getbuffer())

    def _append(self, data: memoryview) -> None:
        if bytes(data[:4]) != MAGIC or bytes(data[-4:]) != MAGIC:
            raise ThriftError("polars wrote no Parquet file")
        footer_len = int.from_bytes(data[-8:-4], "little")
        # the first footer is kept whole (schema, key-value metadata), of the others only the
        # row groups and the row count are read
        keep = None if self._meta is None else frozenset({_FMD_NUM_ROWS, _FMD_ROW_GROUPS})
        meta, _ = decode_struct(bytes(data[len(data) - 8 - footer_len:-8]), keep=keep)
        groups = _require(meta, _FMD_ROW_GROUPS, "row groups")
        rows = _require(meta, _FMD_NUM_ROWS, "a row count")
        shift = self._pos - len(MAGIC)
        end = len(MAGIC)
        for group in groups[2][1]:
            for column in _require(group, _RG_COLUMNS, "column chunks")[2][1]:
                column[:] = [f for f in column if f[0] not in _CC_PAGE_INDEX]
                _shift(column, _CC_FILE_OFFSET, shift)
                md = _require(column, _CC_META, "column metadata")[2]
                md[:] = [f for f in md if f[0] not in _CMD_BLOOM]
                start = _get(md, _CMD_DICT_PAGE) or _require(md, _CMD_DATA_PAGE, "page offsets")
                size = _require(md, _CMD_TOTAL_COMPRESSED, "a column chunk size")
                end = max(end, start[2] + size[2])
                for fid in (_CMD_DATA_PAGE, _CMD_INDEX_PAGE, _CMD_DICT_PAGE):
                    _shift(md, fid, shift)
            _shift(group, _RG_FILE_OFFSET, shift)
            ordinal = _get(group, _RG_ORDINAL)
            if ordinal is not None:  # an i16: dropped rather than wrapped
                if len(self._groups) < 2**15:
                    ordinal[2] = len(self._groups)
                else:
                    group.remove(ordinal)
            self._groups.append(encode_struct(group))
        self._file.write(data[len(MAGIC):end])
        self._pos += end - len(MAGIC)
        self._rows += rows[2]
        if self._meta is None:
            groups[2] = (_STRUCT, [])
            self._meta = meta

    def close(self) -> None:
        self._flush()
        if self._meta is None:  # no rows: polars writes the file with the schema
            import polars as pl

            self._file.close()
            pl.DataFrame(schema=self._schema).write_parquet(self._path, **self._options)
            return
        rows = _get(self._meta, _FMD_NUM_ROWS)
        assert rows is not None
        rows[2] = self._rows
        groups = _list_header(_STRUCT, len(self._groups)) + b"".join(self._groups)
        footer = encode_struct(self._meta, raw={_FMD_ROW_GROUPS: groups})
        self._file.write(footer)
        self._file.write(len(footer).to_bytes(4, "little"))
        self._file.write(MAGIC)
        self._file.close()

    def abort(self) -> None:
        self._buffer = []
        self._file.close()

