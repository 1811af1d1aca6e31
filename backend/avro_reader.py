"""Avro readers generated once per event schema, for the hot path of Kafka ingest.

Why: fastavro's generic reader walks the schema for every message (about 34 us per event on a
2-core dev VM, the largest cost of ingest); straight-line code generated once per schema reads the
same bytes in about half that. Only what the event schemas use is supported (primitives,
records, unions, maps, arrays); anything else falls back to fastavro. The generated reader is
checked against fastavro on random and damaged events in tests/test_backend_ingest.py.
"""

from __future__ import annotations

import io
import struct
from functools import lru_cache
from typing import Any, Callable

from ..stages import events
from . import avro_wire

__all__ = ["compile_reader", "strip_logical", "raw_readers"]


class _Unsupported(Exception):
    """A schema construct :class:`_ReaderSource` does not generate code for."""


class _ReaderSource:
    """Python source of a reader for one fixed Avro schema: straight-line code, one local per
    value. Every length and count is checked against the buffer, so corrupt bytes raise (and then
    take the precise-error path of :class:`~alpr_topo.backend.avro_wire.AvroDecoder`) instead of
    looping."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.n = 0

    def var(self) -> str:
        self.n += 1
        return f"v{self.n}"

    def emit(self, depth: int, line: str) -> None:
        self.lines.append("    " * depth + line)

    def long(self, depth: int, out: str) -> None:
        """A zig-zag varint into ``out``, inline (a function call per value costs as much as the
        decoding): one byte for most lengths, counts and union branches."""
        self.emit(depth, "b = data[pos]; pos += 1")
        self.emit(depth, f"if b < 128: {out} = (b >> 1) ^ -(b & 1)")
        self.emit(depth, "else:")
        self.emit(depth + 1, "n = b & 127; shift = 7")
        self.emit(depth + 1, "while True:")
        self.emit(depth + 2, "b = data[pos]; pos += 1; n |= (b & 127) << shift")
        self.emit(depth + 2, "if b < 128: break")
        self.emit(depth + 2, "shift += 7")
        self.emit(depth + 2, "if shift > 63: raise ValueError('varint longer than 10 bytes')")
        self.emit(depth + 1, f"{out} = (n >> 1) ^ -(n & 1)")

    def value(self, schema: Any, depth: int) -> str:
        """Emit code that reads one ``schema`` value; returns the expression holding it."""
        if isinstance(schema, list):
            return self.union(schema, depth)
        t = schema["type"] if isinstance(schema, dict) else schema
        if isinstance(t, (dict, list)):
            return self.value(t, depth)
        if t == "null":
            return "None"
        out = self.var()
        if t in ("int", "long"):
            self.long(depth, out)
        elif t in ("string", "bytes"):
            n = self.var()
            self.long(depth, n)
            self.emit(depth, f"if {n} < 0 or pos + {n} > end: raise ValueError('bad length')")
            self.emit(depth, f"{out} = data[pos:pos + {n}]{'.decode()' if t == 'string' else ''}; pos += {n}")
        elif t == "double":
            self.emit(depth, f"{out} = _double(data, pos)[0]; pos += 8")
        elif t == "float":
            self.emit(depth, f"{out} = _float(data, pos)[0]; pos += 4")
        elif t == "boolean":
            self.emit(depth, f"{out} = data[pos] == 1; pos += 1")
        elif t == "record":
            fields = [(f["name"], self.value(f["type"], depth)) for f in schema["fields"]]
            self.emit(depth, f"{out} = {{{', '.join(f'{name!r}: {v}' for name, v in fields)}}}")
        elif t in ("map", "array"):
            item = schema["values"] if t == "map" else schema["items"]
            if item == "null":
                raise _Unsupported("items of type null")  # they take no bytes: counts unchecked
            count = self.var()
            self.emit(depth, f"{out} = {{}}" if t == "map" else f"{out} = []")
            self.emit(depth, "while True:")
            self.long(depth + 1, count)
            self.emit(depth + 1, f"if {count} == 0: break")
            self.emit(depth + 1, f"if {count} < 0:")  # a block with its size in bytes
            self.emit(depth + 2, f"{count} = -{count}")
            self.long(depth + 2, self.var())
            self.emit(depth + 1, f"if {count} > end - pos: raise ValueError('bad count')")
            self.emit(depth + 1, f"for _ in range({count}):")
            if t == "map":
                key = self.value("string", depth + 2)
                self.emit(depth + 2, f"{out}[{key}] = {self.value(item, depth + 2)}")
            else:
                self.emit(depth + 2, f"{out}.append({self.value(item, depth + 2)})")
        else:
            raise _Unsupported(str(t))
        return out

    def union(self, branches: list[Any], depth: int) -> str:
        out, index = self.var(), self.var()
        self.long(depth, index)
        for i, branch in enumerate(branches):
            self.emit(depth, f"{'if' if i == 0 else 'elif'} {index} == {i}:")
            self.emit(depth + 1, f"{out} = {self.value(branch, depth + 1)}")
        self.emit(depth, "else: raise ValueError('bad union branch')")
        return out


def compile_reader(schema: Any) -> Callable[[bytes, int], Any] | None:
    """``read(data, pos)``: the value of ``schema`` (logical types already stripped) encoded at
    ``data[pos:]``, which must end exactly at the end of ``data``; raises on anything malformed.
    None when the schema uses something :class:`_ReaderSource` does not support."""
    src = _ReaderSource()
    try:
        result = src.value(schema, 1)
    except _Unsupported:
        return None
    code = "\n".join(["def read(data, pos):", "    end = len(data)", *src.lines,
                      "    if pos != end: raise ValueError('trailing bytes')", f"    return {result}"])
    namespace: dict[str, Any] = {"_double": struct.Struct("<d").unpack_from,
                                 "_float": struct.Struct("<f").unpack_from}
    exec(compile(code, "<avro reader>", "exec"), namespace)
    return namespace["read"]  # type: ignore[no-any-return]


def strip_logical(node: Any) -> Any:
    """A schema without its logical types: reading with it yields the plain dict form directly
    (int milliseconds, str UUID), as :mod:`alpr_topo.stages.events` uses."""
    if isinstance(node, dict):
        return {k: strip_logical(v) for k, v in node.items() if k != "logicalType"}
    if isinstance(node, list):
        return [strip_logical(v) for v in node]
    return node


@lru_cache(maxsize=None)
def raw_readers() -> dict[bytes, tuple[str, Callable[[bytes, int], Any]]]:
    """Fingerprint -> (name, reader of the plain dict form) for this version's schemas: the
    generated reader, or fastavro's (same result) if the schema cannot be compiled."""
    import fastavro

    def fastavro_reader(parsed: Any) -> Callable[[bytes, int], Any]:
        def read(data: bytes, pos: int) -> Any:
            buf = io.BytesIO(data)
            buf.seek(pos)
            record = fastavro.schemaless_reader(buf, parsed, None)
            if buf.tell() != len(data):
                raise ValueError("trailing bytes")
            return record
        return read

    readers: dict[bytes, tuple[str, Callable[[bytes, int], Any]]] = {}
    for name in (events.EVENT, events.UPDATE):
        schema = strip_logical(events.schema(name))
        reader = compile_reader(schema) or fastavro_reader(fastavro.parse_schema(schema, named_schemas={}))
        readers[avro_wire.fingerprint(name)] = (name, reader)
    return readers
