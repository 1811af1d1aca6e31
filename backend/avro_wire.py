"""Avro on the wire: how plate events and updates travel as Kafka values.

Two framings of the same schemaless Avro body (:func:`alpr_topo.stages.events.to_avro`), so a
reader always knows which schema wrote a message:

- **Avro single-object encoding** (the Avro specification), used when no schema registry is
  configured: ``C3 01`` + the 8-byte CRC-64-AVRO fingerprint of the writer schema's parsing
  canonical form (little-endian, as the Java implementation writes it) + the body. Needs no
  server: the fingerprint is computed from ``backend/schemas/*.avsc``.
- **Confluent wire format**, used when a schema registry URL is configured: ``00`` + the 4-byte
  big-endian schema id the registry gave for subject ``<topic>-value`` + the body.

The body is identical in both, so a record can be encoded once (single-object, self-describing)
and re-framed for the registry later: :func:`to_confluent` swaps the 10-byte header for the
5-byte one. ``publish.kafka`` relies on that to spool records before the registry is reachable.

:class:`AvroDecoder` accepts both framings and raises :class:`WireFormatError` (with a reason
fit for a dead-letter topic) for anything else.
"""

from __future__ import annotations

import io
import json
import threading
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from typing import Any, Mapping

from ..stages import events

__all__ = [
    "SINGLE_OBJECT_MAGIC", "CONFLUENT_MAGIC", "WireFormatError", "RegistryError", "SchemaRegistry",
    "Decoded", "AvroEncoder", "AvroDecoder", "fingerprint", "encode_single_object", "to_confluent",
    "schema_name_of", "canonical_schema",
]

SINGLE_OBJECT_MAGIC = b"\xc3\x01"
CONFLUENT_MAGIC = b"\x00"
_SINGLE_HEADER = len(SINGLE_OBJECT_MAGIC) + 8
_CONFLUENT_HEADER = 1 + 4
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_REGISTRY_TYPE = "application/vnd.schemaregistry.v1+json"


class WireFormatError(ValueError):
    """Bytes that are not a decodable event or update; ``str(exc)`` says why (dead-letter reason)."""


class RegistryError(RuntimeError):
    """The schema registry could not be reached or refused a request (retry later)."""


# -- schemas and fingerprints ----------------------------------------------------------------------


def canonical_schema(name: str) -> str:
    """The parsing canonical form of ``event`` or ``event_update`` (what fingerprints hash)."""
    from fastavro.schema import to_parsing_canonical_form

    return to_parsing_canonical_form(events.schema(name))


@lru_cache(maxsize=None)
def fingerprint(name: str) -> bytes:
    """8-byte CRC-64-AVRO fingerprint of a schema, in the byte order single-object encoding uses."""
    from fastavro.schema import fingerprint as avro_fingerprint

    return bytes.fromhex(avro_fingerprint(canonical_schema(name), "CRC-64-AVRO"))


@lru_cache(maxsize=None)
def _by_fingerprint() -> dict[bytes, str]:
    return {fingerprint(n): n for n in (events.EVENT, events.UPDATE)}


def _full_name(schema: Mapping[str, Any]) -> str:
    name = str(schema.get("name", ""))
    namespace = schema.get("namespace")
    return name if "." in name or not namespace else f"{namespace}.{name}"


@lru_cache(maxsize=None)
def _by_full_name() -> dict[str, str]:
    return {_full_name(events.schema(n)): n for n in (events.EVENT, events.UPDATE)}


def schema_name_of(record: Mapping[str, Any]) -> str:
    """``event_update`` for an update (``type: update``), ``event`` otherwise."""
    return events.UPDATE if events.is_update(record) else events.EVENT


# -- encoding --------------------------------------------------------------------------------------


def encode_single_object(record: Mapping[str, Any], name: str | None = None) -> bytes:
    """Avro single-object encoding of an event or update (header + schemaless body); ``name``
    defaults to the record's kind (:func:`schema_name_of`)."""
    import fastavro

    name = name or schema_name_of(record)
    buf = io.BytesIO()
    buf.write(SINGLE_OBJECT_MAGIC + fingerprint(name))
    fastavro.schemaless_writer(buf, events.parsed_schema(name), dict(record))
    return buf.getvalue()


def to_confluent(single_object: bytes, schema_id: int) -> bytes:
    """Re-frame single-object bytes for the Confluent wire format (the body is unchanged)."""
    if single_object[:2] != SINGLE_OBJECT_MAGIC or len(single_object) < _SINGLE_HEADER:
        raise WireFormatError("not Avro single-object encoded")
    return CONFLUENT_MAGIC + int(schema_id).to_bytes(4, "big") + single_object[_SINGLE_HEADER:]


def single_object_name(single_object: bytes) -> str:
    """``event`` or ``event_update``: the schema whose fingerprint heads these bytes."""
    if single_object[:2] != SINGLE_OBJECT_MAGIC or len(single_object) < _SINGLE_HEADER:
        raise WireFormatError("not Avro single-object encoded")
    fp = single_object[2:_SINGLE_HEADER]
    name = _by_fingerprint().get(fp)
    if name is None:
        raise WireFormatError(f"unknown schema fingerprint {fp.hex()} (not the Event or EventUpdate schema of this version)")
    return name


# -- schema registry -------------------------------------------------------------------------------


class SchemaRegistry:
    """A Confluent-compatible schema registry over its REST API (Confluent Schema Registry,
    Apicurio's ``/apis/ccompat/v7``, Karapace, Redpanda). Ids are cached: a schema is registered
    once per subject per process, and an id is looked up once.

    ``url`` is the API base, e.g. ``http://localhost:8081`` or
    ``http://localhost:8080/apis/ccompat/v7``. Every failure raises :class:`RegistryError`.
    """

    def __init__(self, url: str, timeout_s: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s
        self._ids: dict[tuple[str, str], int] = {}
        self._schemas: dict[int, dict[str, Any]] = {}
        self._lock = threading.Lock()

    def _request(self, method: str, path: str, body: Mapping[str, Any] | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Content-Type": _REGISTRY_TYPE, "Accept": _REGISTRY_TYPE + ", application/json"})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                return json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as exc:
            detail = exc.read()[:300].decode("utf-8", "replace")
            raise RegistryError(f"schema registry {method} {path}: HTTP {exc.code} {detail}") from exc
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise RegistryError(f"schema registry {self.url} unreachable: {exc}") from exc

    def register(self, subject: str, name: str) -> int:
        """The id of schema ``name`` (``event`` / ``event_update``) under ``subject``, registering
        it if needed (POST /subjects/{subject}/versions returns the existing id when present)."""
        key = (subject, name)
        with self._lock:
            if key in self._ids:
                return self._ids[key]
        text = json.dumps(events.schema(name))
        reply = self._request("POST", f"/subjects/{urllib.parse.quote(subject, safe='')}/versions", {"schema": text})
        if not isinstance(reply, Mapping) or not isinstance(reply.get("id"), int):
            raise RegistryError(f"schema registry: unexpected reply to register {subject}: {reply!r}")
        schema_id = int(reply["id"])
        with self._lock:
            self._ids[key] = schema_id
            self._schemas.setdefault(schema_id, events.schema(name))
        return schema_id

    def schema(self, schema_id: int) -> dict[str, Any]:
        """The writer schema with this id (GET /schemas/ids/{id}), as JSON."""
        with self._lock:
            if schema_id in self._schemas:
                return self._schemas[schema_id]
        reply = self._request("GET", f"/schemas/ids/{int(schema_id)}")
        try:
            found = json.loads(reply["schema"])
        except (TypeError, KeyError, ValueError) as exc:
            raise RegistryError(f"schema registry: unexpected reply for id {schema_id}: {reply!r}") from exc
        with self._lock:
            self._schemas[schema_id] = found
        return found


class AvroEncoder:
    """Encodes events and updates for a topic: Confluent framing when ``registry`` is given
    (registering ``<topic>-value`` on first use; may raise :class:`RegistryError`), single-object
    encoding otherwise."""

    def __init__(self, registry: SchemaRegistry | str | None = None) -> None:
        self.registry = SchemaRegistry(registry) if isinstance(registry, str) else registry

    def encode(self, record: Mapping[str, Any], topic: str) -> bytes:
        return self.frame(encode_single_object(record), topic)

    def frame(self, single_object: bytes, topic: str) -> bytes:
        """Final wire bytes for ``topic`` from single-object bytes (as stored in a spool)."""
        if self.registry is None:
            single_object_name(single_object)  # refuse bytes of an unknown schema
            return single_object
        schema_id = self.registry.register(f"{topic}-value", single_object_name(single_object))
        return to_confluent(single_object, schema_id)


# -- decoding --------------------------------------------------------------------------------------


@dataclass
class Decoded:
    """A decoded Kafka value: which schema (``event`` / ``event_update``), the record in the
    dict form of :mod:`alpr_topo.stages.events`, and how it was framed."""

    name: str
    record: dict[str, Any]
    wire: str  # "single-object" or "confluent"
    schema_id: int | None = None
    fingerprint: str | None = None


def _plain(value: Any) -> Any:
    """fastavro's logical types back to the plain dict form (int ms, str UUID)."""
    if isinstance(value, datetime):
        return (value - _EPOCH) // timedelta(milliseconds=1)
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _read_body(body: bytes, writer: Any, reader: Any, what: str) -> dict[str, Any]:
    import fastavro

    buf = io.BytesIO(body)
    try:
        value = fastavro.schemaless_reader(buf, writer, reader)
    except Exception as exc:  # fastavro raises EOFError, ValueError, IndexError, UnicodeDecodeError, ...
        raise WireFormatError(f"{what}: Avro body does not decode: {type(exc).__name__}: {exc}") from exc
    if buf.tell() != len(body):
        raise WireFormatError(f"{what}: {len(body) - buf.tell()} bytes left over after the Avro record")
    if not isinstance(value, dict):
        raise WireFormatError(f"{what}: Avro body is not a record")
    return _plain(value)


class AvroDecoder:
    """Decodes both framings back to records. A Confluent-framed value needs the registry to
    resolve its schema id (ids this process registered are known without a request); the writer
    schema found there is resolved against this version's schema (Avro schema evolution).

    Raises :class:`WireFormatError` for malformed or unknown data and :class:`RegistryError`
    when the registry cannot be asked (retry: the message may be fine).
    """

    def __init__(self, registry: SchemaRegistry | str | None = None) -> None:
        self.registry = SchemaRegistry(registry) if isinstance(registry, str) else registry
        self._writers: dict[int, tuple[str, Any]] = {}

    def decode(self, data: bytes | bytearray | memoryview | None) -> Decoded:
        if data is None:
            raise WireFormatError("empty message (no value)")
        data = bytes(data)
        if len(data) >= _SINGLE_HEADER and data[:2] == SINGLE_OBJECT_MAGIC:
            name = single_object_name(data)
            parsed = events.parsed_schema(name)
            record = _read_body(data[_SINGLE_HEADER:], parsed, parsed, f"single-object {name}")
            return Decoded(name, record, "single-object", fingerprint=data[2:_SINGLE_HEADER].hex())
        if len(data) >= _CONFLUENT_HEADER and data[:1] == CONFLUENT_MAGIC:
            schema_id = int.from_bytes(data[1:_CONFLUENT_HEADER], "big")
            name, writer = self._writer(schema_id)
            record = _read_body(data[_CONFLUENT_HEADER:], writer, events.parsed_schema(name),
                                f"confluent schema id {schema_id}")
            return Decoded(name, record, "confluent", schema_id=schema_id)
        head = data[:4].hex() or "nothing"
        raise WireFormatError(f"unknown framing: {len(data)} bytes starting {head} (expected c301 single-object or 00 Confluent)")

    def _writer(self, schema_id: int) -> tuple[str, Any]:
        if schema_id in self._writers:
            return self._writers[schema_id]
        if self.registry is None:
            raise WireFormatError(f"Confluent wire format (schema id {schema_id}) but no schema registry is configured")
        try:
            writer_json = self.registry.schema(schema_id)
        except RegistryError as exc:
            if "HTTP 404" in str(exc):
                raise WireFormatError(f"schema id {schema_id} is unknown to the registry") from exc
            raise
        name = _by_full_name().get(_full_name(writer_json))
        if name is None:
            raise WireFormatError(f"schema id {schema_id} is {_full_name(writer_json)!r}, not an event or update schema")
        import fastavro

        try:
            writer = fastavro.parse_schema(writer_json, named_schemas={})
        except Exception as exc:
            raise WireFormatError(f"schema id {schema_id}: the registry's schema does not parse: {exc}") from exc
        self._writers[schema_id] = (name, writer)
        return name, writer
