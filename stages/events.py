"""Plate events: build, validate and serialise them (shared by dedup and every publish stage).

The Avro schemas in ``backend/schemas/`` are the single source of truth (DESIGN.md, "Events"):

- ``event.avsc``: one vehicle passage and its plate (``io.alpr_topo.Event``),
- ``event_update.avsc``: a change to an event already sent (``io.alpr_topo.EventUpdate``).

In memory and inside envelopes an event is the Avro datum as a plain dict (msgpack-safe):
timestamps are ``int`` milliseconds since the epoch, the UUID a ``str``. :func:`to_json` writes
the same field names with timestamps as ISO-8601 UTC strings; :func:`from_json` reads them back.
docs/events.md describes every field::

    from alpr_topo.stages import events

    ev = events.make_event(camera_id="cam1", captured_at=time.time(), track_id=7,
                           plate={"text": "7ABC123", "normalized_text": "7ABC123",
                                  "confidence": 0.97, "region": "us-ca"})
    events.validate(ev)          # raises events.EventError with every problem
    line = events.to_json(ev)    # what publish.local writes
    blob = events.to_avro(ev)    # schemaless Avro body, e.g. for Kafka

fastavro is imported only where it is needed (validation, Avro bytes), so the stages that build
events import without it.
"""

from __future__ import annotations

import csv
import io
import json
import socket
import uuid
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable, Mapping

__all__ = [
    "EVENT", "UPDATE", "EventError", "schema", "parsed_schema", "field_names", "csv_columns",
    "new_event_id", "to_millis", "millis_to_iso", "iso_to_millis", "make_event", "make_update",
    "is_update", "validate", "to_json_obj", "to_json", "from_json", "flatten", "to_csv_row",
    "to_avro", "from_avro", "event_line", "update_line", "iter_jsonl", "schema_path",
]

EVENT = "event"
UPDATE = "event_update"
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


class EventError(ValueError):
    """An event or update that does not match its Avro schema; ``problems`` lists each one."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


# -- schemas --------------------------------------------------------------------------------------


def _schema_dir() -> Path:
    try:
        from importlib.resources import files

        path = Path(str(files("alpr_topo.backend") / "schemas"))
        if path.is_dir():
            return path
    except (ModuleNotFoundError, TypeError):
        pass
    return Path(__file__).resolve().parent.parent / "backend" / "schemas"


def schema_path(name: str = EVENT) -> Path:
    """The ``.avsc`` file of ``name`` (``event`` or ``event_update``)."""
    return _schema_dir() / f"{name}.avsc"


@lru_cache(maxsize=None)
def _schema(name: str) -> dict[str, Any]:
    return json.loads(schema_path(name).read_text())


def schema(name: str = EVENT) -> dict[str, Any]:
    """The schema as JSON (a copy: callers may change it)."""
    return json.loads(json.dumps(_schema(name)))


@lru_cache(maxsize=None)
def parsed_schema(name: str = EVENT) -> Any:
    """The schema parsed by ``fastavro.parse_schema`` (for writers, readers and validation)."""
    import fastavro

    return fastavro.parse_schema(schema(name))


def field_names(name: str = EVENT) -> list[str]:
    """Top-level field names in schema order (the keys of an event dict and of its JSON)."""
    return [f["name"] for f in _schema(name)["fields"]]


def csv_columns(name: str = EVENT) -> list[str]:
    """Flattened column names: nested records as ``plate.text``; maps (extras) stay one column."""
    columns: list[str] = []
    for f in _schema(name)["fields"]:
        record = _record_of(f["type"])
        if record is not None:
            columns.extend(f"{f['name']}.{sub['name']}" for sub in record["fields"])
        else:
            columns.append(f["name"])
    return columns


def _record_of(avro_type: Any) -> dict[str, Any] | None:
    return avro_type if isinstance(avro_type, dict) and avro_type.get("type") == "record" else None


# -- time -----------------------------------------------------------------------------------------


def to_millis(seconds: float | int | None) -> int | None:
    """Epoch seconds (``Envelope.captured_at``) to epoch milliseconds, rounded."""
    return None if seconds is None else int(round(float(seconds) * 1000.0))


def millis_to_iso(ms: int) -> str:
    """``1714564801123`` -> ``'2024-05-01T12:00:01.123Z'`` (UTC, exact to the millisecond)."""
    moment = _EPOCH + timedelta(milliseconds=int(ms))
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def iso_to_millis(text: str) -> int:
    """Inverse of :func:`millis_to_iso`; accepts any ISO-8601 time with an offset (or ``Z``)."""
    value = text.strip()
    if value.endswith(("Z", "z")):
        value = value[:-1] + "+00:00"
    moment = datetime.fromisoformat(value)
    if moment.tzinfo is None:
        raise ValueError(f"timestamp {text!r} has no time zone (expected e.g. ...Z)")
    return (moment - _EPOCH) // timedelta(milliseconds=1)


def _is_timestamp(avro_type: Any) -> bool:
    return isinstance(avro_type, dict) and avro_type.get("logicalType") in ("timestamp-millis", "local-timestamp-millis")


def _convert(avro_type: Any, value: Any, on_timestamp: Any) -> Any:
    """Walk ``value`` along its schema type and map every timestamp with ``on_timestamp``."""
    if value is None:
        return None
    if isinstance(avro_type, list):  # union: the first non-null branch that fits
        for branch in avro_type:
            if branch != "null":
                return _convert(branch, value, on_timestamp)
        return value
    if _is_timestamp(avro_type):
        return on_timestamp(value)
    record = _record_of(avro_type)
    if record is not None and isinstance(value, Mapping):
        out = dict(value)
        for f in record["fields"]:
            if f["name"] in out:
                out[f["name"]] = _convert(f["type"], out[f["name"]], on_timestamp)
        return out
    if isinstance(avro_type, dict) and avro_type.get("type") == "map" and isinstance(value, Mapping):
        return {k: _convert(avro_type["values"], v, on_timestamp) for k, v in value.items()}
    if isinstance(avro_type, dict) and avro_type.get("type") == "array" and isinstance(value, list):
        return [_convert(avro_type["items"], v, on_timestamp) for v in value]
    return value


# -- building -------------------------------------------------------------------------------------


def new_event_id() -> str:
    return str(uuid.uuid4())


def _opt_str(value: Any) -> str | None:
    return None if value is None or value == "" else str(value)


def _extras(extras: Mapping[str, Any] | None) -> dict[str, str]:
    """map<string,string>: strings stay, everything else is written as compact JSON."""
    out: dict[str, str] = {}
    for key, value in (extras or {}).items():
        if value is None:
            continue
        out[str(key)] = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"), default=str)
    return out


def make_event(
    *,
    camera_id: str,
    captured_at: float,
    plate: Mapping[str, Any],
    track_id: int | None = None,
    vehicle: Mapping[str, Any] | None = None,
    images: Mapping[str, Any] | None = None,
    latency: Mapping[str, Any] | None = None,
    site: str = "default",
    host: str | None = None,
    extras: Mapping[str, Any] | None = None,
    first_seen: float | None = None,
    last_seen: float | None = None,
    count: int = 1,
    reads: int = 0,
    event_id: str | None = None,
) -> dict[str, Any]:
    """A complete event dict in schema field order. Times are epoch **seconds** here (as on
    envelopes) and stored as epoch milliseconds; ``plate`` needs ``normalized_text`` (``text``
    defaults to it), every other part may be partial or absent."""
    normalized = str(plate["normalized_text"])
    vehicle = vehicle or {}
    images = images or {}
    latency = latency or {}
    first = captured_at if first_seen is None else first_seen
    last = first if last_seen is None else last_seen

    def _ms(value: Any) -> float | None:
        return None if value is None else round(float(value), 3)

    return {
        "event_id": event_id or new_event_id(),
        "captured_at": to_millis(captured_at),
        "camera_id": str(camera_id),
        "track_id": None if track_id is None else int(track_id),
        "plate": {
            "text": str(plate.get("text") or normalized),
            "normalized_text": normalized,
            "confidence": round(float(plate.get("confidence") or 0.0), 4),
            "region": _opt_str(plate.get("region")),
        },
        "vehicle": {key: _opt_str(vehicle.get(key)) for key in ("type", "color", "make", "model")},
        "images": {key: _opt_str(images.get(key)) for key in ("plate_url", "vehicle_url", "frame_url")},
        "latency": {"capture_to_event_ms": _ms(latency.get("capture_to_event_ms")),
                    "pipeline_ms": _ms(latency.get("pipeline_ms"))},
        "node": {"site": str(site), "host": str(host or socket.gethostname())},
        "extras": _extras(extras),
        "first_seen": to_millis(first),
        "last_seen": to_millis(max(first, last)),
        "count": int(count),
        "reads": int(reads),
    }


def make_update(
    *,
    event_id: str,
    last_seen: float,
    count: int,
    camera_id: str,
    track_id: int | None = None,
    reason: str = "duplicate",
    normalized_text: str | None = None,
    similarity: float | None = None,
) -> dict[str, Any]:
    """An ``EventUpdate`` dict: the event ``event_id`` now has this ``last_seen`` (epoch
    seconds here, milliseconds stored) and this absolute ``count``."""
    return {
        "type": "update",
        "event_id": str(event_id),
        "last_seen": to_millis(last_seen),
        "count": int(count),
        "reason": str(reason),
        "camera_id": str(camera_id),
        "track_id": None if track_id is None else int(track_id),
        "normalized_text": _opt_str(normalized_text),
        "similarity": None if similarity is None else round(float(similarity), 4),
    }


def is_update(record: Mapping[str, Any]) -> bool:
    """True for an update message (JSON line ``{"type": "update", ...}``), False for an event."""
    return record.get("type") == "update"


# -- validation -----------------------------------------------------------------------------------


def _unknown_keys(avro_type: Any, value: Any, where: str) -> list[str]:
    """Keys the schema does not know (fastavro ignores them; a contract should not)."""
    if isinstance(avro_type, list):
        branches = [b for b in avro_type if b != "null"]
        return _unknown_keys(branches[0], value, where) if len(branches) == 1 else []
    record = _record_of(avro_type)
    if record is None or not isinstance(value, Mapping):
        return []
    known = {f["name"]: f["type"] for f in record["fields"]}
    problems = [f"{where}{key}: not a field of {record['name']}" for key in value if key not in known]
    for key, sub in known.items():
        if key in value:
            problems.extend(_unknown_keys(sub, value[key], f"{where}{key}."))
    return problems


def _short(message: str, limit: int = 160) -> str:
    """fastavro prints the whole expected schema; keep the start, which names the field."""
    return message if len(message) <= limit else message[:limit] + "...}"


def validate(record: Mapping[str, Any], name: str | None = None) -> None:
    """Check an event (or, with ``type: update``, an update) against its Avro schema.

    Beyond fastavro's type check: no unknown keys, a parseable UUID, every required field
    present. Raises :class:`EventError` listing every problem.
    """
    from fastavro.validation import ValidationError, validate as avro_validate

    name = name or (UPDATE if is_update(record) else EVENT)
    raw = _schema(name)
    problems = _unknown_keys(raw, record, "")
    for f in raw["fields"]:
        if f["name"] not in record and "default" not in f:
            problems.append(f"{f['name']}: missing")
    try:
        uuid.UUID(str(record.get("event_id")))
    except ValueError:
        problems.append(f"event_id: {record.get('event_id')!r} is not a UUID")
    try:
        avro_validate(dict(record), parsed_schema(name), raise_errors=True)
    except ValidationError as exc:
        problems.extend(_short(str(e)) for e in exc.errors)
    except (TypeError, AttributeError, KeyError) as exc:  # a part that is not even a dict
        problems.append(f"not an {name}: {exc!r}")
    if problems:
        raise EventError(problems)


# -- JSON, CSV, Avro ------------------------------------------------------------------------------


def to_json_obj(record: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON form: the same field names, timestamps as ISO-8601 UTC strings."""
    name = UPDATE if is_update(record) else EVENT
    return _convert(_schema(name), dict(record), millis_to_iso)


def to_json(record: Mapping[str, Any]) -> str:
    """One JSON line (no newline) of an event or update, keys in schema order."""
    return json.dumps(to_json_obj(record), ensure_ascii=False, separators=(", ", ": "), default=str)


def from_json(data: str | Mapping[str, Any]) -> dict[str, Any]:
    """An event or update dict from its JSON form (a line or a parsed object)."""
    obj = json.loads(data) if isinstance(data, str) else dict(data)
    name = UPDATE if is_update(obj) else EVENT
    return _convert(_schema(name), obj, lambda v: iso_to_millis(v) if isinstance(v, str) else int(v))


def flatten(record: Mapping[str, Any]) -> dict[str, Any]:
    """One CSV row: columns of :func:`csv_columns`, ISO timestamps, extras as a JSON object."""
    name = UPDATE if is_update(record) else EVENT
    obj = to_json_obj(record)
    row: dict[str, Any] = {}
    for f in _schema(name)["fields"]:
        value = obj.get(f["name"])
        sub = _record_of(f["type"])
        if sub is not None:
            for g in sub["fields"]:
                row[f"{f['name']}.{g['name']}"] = value.get(g["name"]) if isinstance(value, Mapping) else None
        elif isinstance(value, (dict, list)):
            row[f["name"]] = json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":"), default=str)
        else:
            row[f["name"]] = value
    return row


def to_csv_row(record: Mapping[str, Any]) -> str:
    """The CSV line (with newline) of :func:`flatten`; None is an empty cell."""
    name = UPDATE if is_update(record) else EVENT
    buf = io.StringIO()
    row = flatten(record)
    csv.writer(buf, lineterminator="\n").writerow(["" if row[c] is None else row[c] for c in csv_columns(name)])
    return buf.getvalue()


def to_avro(record: Mapping[str, Any]) -> bytes:
    """Schemaless Avro body of an event or update (a Kafka value without framing)."""
    import fastavro

    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, parsed_schema(UPDATE if is_update(record) else EVENT), dict(record))
    return buf.getvalue()


def from_avro(data: bytes, name: str = EVENT) -> dict[str, Any]:
    """Inverse of :func:`to_avro`, back to the plain dict form (int milliseconds, str UUID)."""
    import fastavro

    parsed = parsed_schema(name)
    value = fastavro.schemaless_reader(io.BytesIO(data), parsed, parsed)

    def plain(v: Any) -> Any:
        if isinstance(v, datetime):
            return (v - _EPOCH) // timedelta(milliseconds=1)
        if isinstance(v, uuid.UUID):
            return str(v)
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return plain(value)


# -- human lines ----------------------------------------------------------------------------------


def _clock(ms: Any, utc: bool) -> str:
    if not isinstance(ms, int):
        return "--:--:--"
    moment = _EPOCH + timedelta(milliseconds=int(ms))
    return (moment if utc else moment.astimezone()).strftime("%H:%M:%S")


def _track(track_id: int | None) -> str:
    return "-" if track_id is None else str(track_id)


def event_line(event: Mapping[str, Any], utc: bool = False) -> str:
    """``12:00:01 cam1 track 7  7ABC123 (us-ca, 0.97)``: capture time (local unless ``utc``)."""
    plate = event.get("plate") if isinstance(event.get("plate"), Mapping) else {}
    confidence = plate.get("confidence")
    conf = f"{confidence:.2f}" if isinstance(confidence, (int, float)) else str(confidence)
    line = (f"{_clock(event.get('captured_at'), utc)} {event.get('camera_id')} track {_track(event.get('track_id'))}  "
            f"{plate.get('normalized_text')} ({plate.get('region') or '-'}, {conf})")
    count = event.get("count", 1)
    if isinstance(count, int) and count > 1:
        line += f" x{count}"
    return line


def update_line(update: Mapping[str, Any], utc: bool = False) -> str:
    """``12:00:05 cam2 track 9  7ABC128 = 1f0c2a3b (duplicate, count 2)``."""
    text = update.get("normalized_text") or "?"
    return (f"{_clock(update.get('last_seen'), utc)} {update.get('camera_id')} track {_track(update.get('track_id'))}  "
            f"{text} = {str(update.get('event_id'))[:8]} ({update.get('reason', 'duplicate')}, count {update.get('count')})")


def iter_jsonl(lines: Iterable[str]) -> Iterable[dict[str, Any]]:
    """Events and updates (dict form) from JSON lines, skipping blank lines."""
    for line in lines:
        if line.strip():
            yield from_json(line)
