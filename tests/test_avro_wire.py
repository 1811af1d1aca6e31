"""Avro framings of events on Kafka: single-object encoding, Confluent re-framing, malformed bytes.

The round trip through a real schema registry is in tests/test_publish_kafka.py.
"""

from __future__ import annotations

import io
import json

import fastavro
import pytest

from alpr_topo.backend import avro_wire
from alpr_topo.backend.avro_wire import AvroDecoder, AvroEncoder, WireFormatError
from alpr_topo.stages import events

T0 = 1714564801.123


def event(**changes: object) -> dict:
    return events.make_event(camera_id="gate-1", captured_at=T0, track_id=7, host="edge", site="north",
                             plate={"text": "7ABC 123", "normalized_text": "7ABC123", "confidence": 0.97, "region": "us-ca"},
                             vehicle={"type": "car"}, extras={"lane": 2, "reader": "test"}, reads=5, **changes)


def update() -> dict:
    return events.make_update(event_id=events.new_event_id(), last_seen=T0 + 8, count=2, camera_id="gate-2",
                              track_id=3, normalized_text="7ABC128", similarity=0.857)


def crc64_avro(data: bytes) -> int:
    """CRC-64-AVRO exactly as the Avro specification writes it (independent of fastavro)."""
    empty = 0xC15D213AA4D7A795
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (empty & -(fp & 1))
        table.append(fp)
    fp = empty
    for b in data:
        fp = (fp >> 8) ^ table[(fp ^ b) & 0xFF]
    return fp


@pytest.mark.parametrize("name", [events.EVENT, events.UPDATE])
def test_fingerprint_is_little_endian_crc64_of_the_canonical_form(name: str) -> None:
    canonical = avro_wire.canonical_schema(name)
    assert " " not in canonical and '"doc"' not in canonical
    assert avro_wire.fingerprint(name) == crc64_avro(canonical.encode()).to_bytes(8, "little")


def test_event_single_object_round_trip() -> None:
    ev = event()
    data = avro_wire.encode_single_object(ev)
    assert data[:2] == b"\xc3\x01"
    assert data[2:10] == avro_wire.fingerprint(events.EVENT)
    assert data[10:] == events.to_avro(ev)  # the body is the schemaless body of events.py
    decoded = AvroDecoder().decode(data)
    assert (decoded.name, decoded.wire) == ("event", "single-object")
    assert decoded.record == ev
    assert decoded.fingerprint == data[2:10].hex()


def test_update_single_object_round_trip() -> None:
    upd = update()
    data = AvroEncoder().encode(upd, "alpr.event-updates")
    decoded = AvroDecoder().decode(data)
    assert decoded.name == "event_update" and decoded.record == upd


def test_single_object_is_readable_by_plain_fastavro() -> None:
    """Another Avro reader needs nothing of ours but the .avsc: skip 10 bytes, read the body."""
    ev = event()
    data = avro_wire.encode_single_object(ev)
    schema = fastavro.parse_schema(json.loads(events.schema_path(events.EVENT).read_text()))
    got = fastavro.schemaless_reader(io.BytesIO(data[10:]), schema, schema)
    assert got["plate"]["normalized_text"] == "7ABC123" and str(got["event_id"]) == ev["event_id"]


def test_confluent_reframing_keeps_the_body() -> None:
    single = avro_wire.encode_single_object(event())
    framed = avro_wire.to_confluent(single, 4242)
    assert framed[:5] == b"\x00" + (4242).to_bytes(4, "big")
    assert framed[5:] == single[10:]
    with pytest.raises(WireFormatError, match="no schema registry"):
        AvroDecoder().decode(framed)
    with pytest.raises(WireFormatError):
        avro_wire.to_confluent(b"\x00\x00\x00\x00\x01", 1)


@pytest.mark.parametrize("data, reason", [
    (None, "empty"),
    (b"", "unknown framing"),
    (b"{\"event_id\": 1}", "unknown framing"),
    (b"\xc3\x01" + b"\x00" * 8 + b"\x02", "unknown schema fingerprint"),
    (b"\xc3", "unknown framing"),
])
def test_malformed_bytes_raise_with_a_reason(data: bytes | None, reason: str) -> None:
    with pytest.raises(WireFormatError, match=reason):
        AvroDecoder().decode(data)


def test_truncated_and_padded_bodies_are_rejected() -> None:
    data = avro_wire.encode_single_object(event())
    for cut in (11, 20, len(data) - 1):
        with pytest.raises(WireFormatError, match="does not decode|left over|not a record"):
            AvroDecoder().decode(data[:cut])
    with pytest.raises(WireFormatError, match="left over"):
        AvroDecoder().decode(data + b"\x00\x00")


def test_garbage_body_is_rejected_not_crashed() -> None:
    header = b"\xc3\x01" + avro_wire.fingerprint(events.EVENT)
    for body in (b"\xff" * 40, bytes(range(256)), b"\x48" + b"\xff\xfe" * 40):
        with pytest.raises(WireFormatError):
            AvroDecoder().decode(header + body)


def test_encoder_refuses_records_that_do_not_fit_the_schema() -> None:
    bad = event()
    del bad["plate"]
    with pytest.raises(Exception):
        AvroEncoder().encode(bad, "alpr.events")
