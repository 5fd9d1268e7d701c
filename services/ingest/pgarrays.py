"""Columns of numbers sent to PostgreSQL as binary arrays built by numpy in one go.

psycopg dumps a Python list element by element; a batch of rollups is thousands of numbers per
column. :class:`Int8s`, :class:`Float8s` and :class:`Texts` wrap a column and are
dumped in PostgreSQL's binary array format (``%b`` placeholders) with a few numpy calls.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import psycopg
from psycopg.adapt import Dumper
from psycopg.pq import Format

_HEAD = struct.Struct(">iiiii")  # ndim, has nulls, element oid, length, lower bound
_EMPTY = struct.Struct(">iii")
_LEN = struct.Struct(">i")


def binary_array(values: npt.ArrayLike, dtype: str, element_oid: int) -> bytes:
    """A one-dimensional array without NULLs in PostgreSQL's binary format."""
    v = np.asarray(values)
    if v.ndim != 1:
        raise ValueError(f"a column must be one-dimensional, not {v.ndim}-dimensional")
    if len(v) == 0:
        return _EMPTY.pack(0, 0, element_oid)
    item = np.dtype(dtype)
    rows = np.empty(len(v), dtype=[("len", ">i4"), ("v", item)])
    rows["len"] = item.itemsize
    rows["v"] = v
    return _HEAD.pack(1, 0, element_oid, len(v), 1) + rows.tobytes()


class _Column:
    __slots__ = ("values",)

    def __init__(self, values: Any) -> None:
        self.values = values


class Int8s(_Column):
    """A bigint[] column."""


class Float8s(_Column):
    """A float8[] column (NaN stays NaN)."""


class Texts(_Column):
    """A text[] column (strings without NUL)."""


_TEXT_PIECES: dict[str, bytes] = {}  # a string's length-prefixed UTF-8 (ids repeat row after row)
_TEXT_PIECES_MAX = 100_000


def _text_piece(s: str) -> bytes:
    piece = _TEXT_PIECES.get(s)
    if piece is None:
        data = s.encode()
        piece = _LEN.pack(len(data)) + data
        if len(_TEXT_PIECES) < _TEXT_PIECES_MAX:
            _TEXT_PIECES[s] = piece
    return piece


def text_array(values: Sequence[str]) -> bytes:
    if not values:
        return _EMPTY.pack(0, 0, 25)
    return _HEAD.pack(1, 0, 25, len(values), 1) + b"".join(map(_text_piece, values))


class _Int8sDumper(Dumper):
    format = Format.BINARY
    oid = 1016  # int8[]

    def dump(self, obj: Any) -> bytes:
        return binary_array(obj.values, ">i8", 20)


class _Float8sDumper(Dumper):
    format = Format.BINARY
    oid = 1022  # float8[]

    def dump(self, obj: Any) -> bytes:
        return binary_array(obj.values, ">f8", 701)


class _TextsDumper(Dumper):
    format = Format.BINARY
    oid = 1009  # text[]

    def dump(self, obj: Any) -> bytes:
        return text_array(obj.values)


for _kind, _dumper in (
    (Int8s, _Int8sDumper),
    (Float8s, _Float8sDumper),
    (Texts, _TextsDumper),
):
    psycopg.adapters.register_dumper(_kind, _dumper)
