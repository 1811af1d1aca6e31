"""The event contract: Avro schemas in backend/schemas, and the helpers of stages/events.py."""

from __future__ import annotations

import json
import uuid

import fastavro
import pytest

from alpr_topo.stages import events

# DESIGN.md, "Events (contract)", plus the passage fields of dedup.plates
CONTRACT = ["event_id", "captured_at", "camera_id", "track_id", "plate", "vehicle", "images", "latency",
            "node", "extras", "first_seen", "last_seen", "count", "reads"]
NESTED = {
    "plate": ["text", "normalized_text", "confidence", "region"],
    "vehicle": ["type", "color", "make", "model"],
    "images": ["plate_url", "vehicle_url", "frame_url"],
    "latency": ["capture_to_event_ms", "pipeline_ms"],
    "node": ["site", "host"],
}
T0 = 1714564801.123  # 2024-05-01T12:00:01.123Z


def sample(**changes):
    values = dict(
        camera_id="cam1", captured_at=T0, track_id=7,
        plate={"text": "7ABC 123", "normalized_text": "7ABC123", "confidence": 0.97, "region": "us-ca"},
        vehicle={"type": "car"}, latency={"capture_to_event_ms": 1520.5, "pipeline_ms": 41.25},
        site="gate-1", host="edge-7", extras={"reader": "rapidocr", "lane": 2, "none": None},
        last_seen=T0 + 3.5, count=1, reads=9,
    )
    values.update(changes)
    return events.make_event(**values)


def test_schema_files_parse_and_hold_the_contract_fields():
    for name in (events.EVENT, events.UPDATE):
        raw = json.loads(events.schema_path(name).read_text())
        fastavro.parse_schema(raw)
        assert raw["namespace"] == "io.alpr_topo"
    raw = events.schema(events.EVENT)
    assert [f["name"] for f in raw["fields"]] == CONTRACT
    for field in raw["fields"]:
        if field["name"] in NESTED:
            assert [g["name"] for g in field["type"]["fields"]] == NESTED[field["name"]]
    types = {f["name"]: f["type"] for f in raw["fields"]}
    assert types["event_id"] == {"type": "string", "logicalType": "uuid"}
    assert types["captured_at"] == {"type": "long", "logicalType": "timestamp-millis"}
    assert types["extras"] == {"type": "map", "values": "string"}
    # the passage fields are optional: events written before them still read
    for name in ("first_seen", "last_seen", "count", "reads"):
        assert "default" in next(f for f in raw["fields"] if f["name"] == name)


def test_make_event_is_valid_and_msgpack_friendly():
    ev = sample()
    events.validate(ev)
    assert list(ev) == CONTRACT
    uuid.UUID(ev["event_id"])
    assert ev["captured_at"] == 1714564801123 and ev["first_seen"] == ev["captured_at"]
    assert ev["last_seen"] == 1714564804623
    assert ev["extras"] == {"reader": "rapidocr", "lane": "2"}  # strings; None left out
    assert ev["vehicle"] == {"type": "car", "color": None, "make": None, "model": None}
    assert ev["node"] == {"site": "gate-1", "host": "edge-7"}
    import msgpack

    assert msgpack.unpackb(msgpack.packb(ev), raw=False) == ev


def test_json_uses_the_avro_field_names_and_iso_timestamps():
    ev = sample()
    obj = json.loads(events.to_json(ev))
    assert list(obj) == events.field_names(events.EVENT)
    for name, fields in NESTED.items():
        assert list(obj[name]) == fields
    assert obj["captured_at"] == "2024-05-01T12:00:01.123Z"
    assert obj["last_seen"] == "2024-05-01T12:00:04.623Z"
    assert events.from_json(events.to_json(ev)) == ev
    assert events.from_json(obj) == ev


def test_avro_round_trip():
    ev = sample(track_id=None, plate={"normalized_text": "AB12CD", "confidence": 0.5})
    assert events.from_avro(events.to_avro(ev)) == ev
    upd = events.make_update(event_id=ev["event_id"], last_seen=T0 + 9, count=3, camera_id="cam2")
    assert events.from_avro(events.to_avro(upd), events.UPDATE) == upd


def test_update_message():
    upd = events.make_update(event_id=str(uuid.uuid4()), last_seen=T0, count=2, camera_id="cam2", track_id=4,
                             normalized_text="7ABC128", similarity=0.8571)
    events.validate(upd)
    assert events.is_update(upd) and not events.is_update(sample())
    obj = json.loads(events.to_json(upd))
    assert obj["type"] == "update" and obj["last_seen"] == "2024-05-01T12:00:01.123Z"
    assert list(obj) == events.field_names(events.UPDATE)
    assert events.from_json(obj) == upd


@pytest.mark.parametrize("change, problem", [
    (lambda e: e.update(color="red"), "color: not a field of Event"),
    (lambda e: e["plate"].update(colour="x"), "plate.colour: not a field of Plate"),
    (lambda e: e.pop("camera_id"), "camera_id: missing"),
    (lambda e: e.update(event_id="not-a-uuid"), "is not a UUID"),
    (lambda e: e.update(captured_at=1714564801.5), "captured_at"),
    (lambda e: e["plate"].update(confidence="high"), "confidence"),
    (lambda e: e["extras"].update(lane=2), "extras"),
])
def test_validate_reports_problems(change, problem):
    ev = sample()
    change(ev)
    with pytest.raises(events.EventError) as info:
        events.validate(ev)
    assert any(problem in p for p in info.value.problems), info.value.problems


def test_timestamps_are_exact_to_the_millisecond():
    for ms in (0, 1, 999, 1714564801123, 1714564801999, 4102444800000):
        assert events.iso_to_millis(events.millis_to_iso(ms)) == ms
    assert events.millis_to_iso(1714564801001) == "2024-05-01T12:00:01.001Z"
    assert events.iso_to_millis("2024-05-01T14:00:01.123+02:00") == 1714564801123
    assert events.to_millis(0.0015) == 2 and events.to_millis(1714564801.1229999) == 1714564801123
    with pytest.raises(ValueError):
        events.iso_to_millis("2024-05-01T12:00:01")  # no zone: ambiguous


def test_csv_row_flattens_the_same_fields():
    ev = sample()
    columns = events.csv_columns()
    assert columns[:5] == ["event_id", "captured_at", "camera_id", "track_id", "plate.text"]
    assert "node.site" in columns and "extras" in columns and "latency.pipeline_ms" in columns
    import csv
    import io

    row = next(csv.DictReader(io.StringIO(",".join(columns) + "\n" + events.to_csv_row(ev))))
    assert row["plate.normalized_text"] == "7ABC123" and row["plate.text"] == "7ABC 123"
    assert row["captured_at"] == "2024-05-01T12:00:01.123Z"
    assert row["vehicle.color"] == "" and row["track_id"] == "7"
    assert json.loads(row["extras"]) == {"lane": "2", "reader": "rapidocr"}


def test_human_lines():
    ev = sample(captured_at=1714564801.0, last_seen=None)  # 12:00:01 UTC
    assert events.event_line(ev, utc=True) == "12:00:01 cam1 track 7  7ABC123 (us-ca, 0.97)"
    ev = sample(captured_at=1714564801.0, track_id=None, plate={"normalized_text": "AB12", "confidence": 0.5}, count=3)
    assert events.event_line(ev, utc=True) == "12:00:01 cam1 track -  AB12 (-, 0.50) x3"
    upd = events.make_update(event_id="1f0c2a3b-0000-4000-8000-000000000000", last_seen=1714564805.0, count=2,
                             camera_id="cam2", track_id=9, normalized_text="7ABC128")
    assert events.update_line(upd, utc=True) == "12:00:05 cam2 track 9  7ABC128 = 1f0c2a3b (duplicate, count 2)"
