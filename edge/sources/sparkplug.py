"""Sparkplug B payloads (the Eclipse Tahu protobuf ``Payload``), the subset VerTac reads: the
payload's timestamp and seq, and per metric its name, alias, timestamp, datatype and scalar value.
Decoded by hand from the protobuf wire format (a few dozen lines beat a generated module and a
protoc step). ``encode`` exists for tests and simulators.

Topics: ``spBv1.0/<group>/<NBIRTH|NDATA|DBIRTH|DDATA|...>/<edge_node>[/<device>]``. A birth
certificate names every metric and may give it an alias; data messages may then carry only the
alias.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

# Sparkplug B datatypes that carry a number
INT_TYPES = {1, 2, 3, 4, 5, 6, 7, 8}  # Int8..UInt64
SIGNED_BITS = {1: 8, 2: 16, 3: 32, 4: 64}  # Int8, Int16, Int32, Int64
FLOAT, DOUBLE, BOOLEAN, DATETIME = 9, 10, 11, 13


class SparkplugError(ValueError):
    """A payload that is not valid protobuf for the fields VerTac reads."""


@dataclass(frozen=True, slots=True)
class Metric:
    name: str | None
    alias: int | None
    timestamp_ms: int | None
    datatype: int | None
    value: float | None
    raw_int: int | None = None  # an integer field as sent (two's complement for signed types)

    def number(self, datatype: int | None = None) -> float | None:
        """The value as a float, an integer read by ``datatype`` (this metric's own, else the
        one its birth certificate gave): signed Int8..Int64 travel as two's complement in
        unsigned fields, and are turned back in integer arithmetic before the one rounding to
        float (exact up to 2**53)."""
        if self.raw_int is None:
            return self.value
        kind = self.datatype if self.datatype is not None else datatype
        raw = self.raw_int
        if kind in SIGNED_BITS:
            bits = SIGNED_BITS[kind]
            raw &= (1 << bits) - 1
            if raw >= 1 << (bits - 1):
                raw -= 1 << bits
        return float(raw)


@dataclass(frozen=True, slots=True)
class Payload:
    timestamp_ms: int | None
    seq: int | None
    metrics: list[Metric]


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data):
            raise SparkplugError("truncated varint")
        b = data[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 70:
            raise SparkplugError("varint too long")


def _fields(data: bytes) -> list[tuple[int, int, int | bytes]]:
    out: list[tuple[int, int, int | bytes]] = []
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(data, pos)
            out.append((number, wire, value))
        elif wire == 1:
            out.append((number, wire, data[pos : pos + 8]))
            pos += 8
        elif wire == 2:
            length, pos = _varint(data, pos)
            out.append((number, wire, data[pos : pos + length]))
            pos += length
        elif wire == 5:
            out.append((number, wire, data[pos : pos + 4]))
            pos += 4
        else:
            raise SparkplugError(f"unsupported wire type {wire}")
        if pos > len(data):
            raise SparkplugError("truncated field")
    return out


def _metric(data: bytes) -> Metric:
    name = alias = ts = datatype = raw_int = None
    value: float | None = None
    for number, wire, raw in _fields(data):
        if number == 1 and isinstance(raw, bytes):
            name = raw.decode("utf-8", "replace")
        elif number == 2 and isinstance(raw, int):
            alias = raw
        elif number == 3 and isinstance(raw, int):
            ts = raw
        elif number == 4 and isinstance(raw, int):
            datatype = raw
        elif number in (10, 11, 14) and isinstance(raw, int):
            raw_int = raw
        elif number == 12 and wire == 5 and isinstance(raw, bytes):
            value = struct.unpack("<f", raw)[0]
        elif number == 13 and wire == 1 and isinstance(raw, bytes):
            value = struct.unpack("<d", raw)[0]
    return Metric(name, alias, ts, datatype, value, raw_int)


def decode(data: bytes) -> Payload:
    ts = seq = None
    metrics = []
    for number, _wire, raw in _fields(data):
        if number == 1 and isinstance(raw, int):
            ts = raw
        elif number == 2 and isinstance(raw, bytes):
            metrics.append(_metric(raw))
        elif number == 3 and isinstance(raw, int):
            seq = raw
    return Payload(ts, seq, metrics)


def _put_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        b = value & 0x7F
        value >>= 7
        if value:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _key(number: int, wire: int) -> bytes:
    return _put_varint(number << 3 | wire)


def encode(metrics: list[Metric], timestamp_ms: int | None = None, seq: int | None = None) -> bytes:
    """A payload with double (or named-type) metrics; for tests and simulators."""
    out = bytearray()
    if timestamp_ms is not None:
        out += _key(1, 0) + _put_varint(timestamp_ms)
    for m in metrics:
        body = bytearray()
        if m.name is not None:
            raw = m.name.encode()
            body += _key(1, 2) + _put_varint(len(raw)) + raw
        if m.alias is not None:
            body += _key(2, 0) + _put_varint(m.alias)
        if m.timestamp_ms is not None:
            body += _key(3, 0) + _put_varint(m.timestamp_ms)
        body += _key(4, 0) + _put_varint(m.datatype or DOUBLE)
        if m.value is not None:
            body += _key(13, 1) + struct.pack("<d", m.value)
        out += _key(2, 2) + _put_varint(len(body)) + body
    if seq is not None:
        out += _key(3, 0) + _put_varint(seq)
    return bytes(out)
