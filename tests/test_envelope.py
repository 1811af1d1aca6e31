"""Envelopes (``core/envelope.py``): the msgpack wire format, forward compatibility (unknown
fields survive), frame references vs inline frame bytes, latency, ``derive`` and malformed input.
"""

from __future__ import annotations

import copy

import msgpack
import numpy as np
import pytest
import zmq

from alpr_topo.core.envelope import (
    ENVELOPE_VERSION,
    Envelope,
    FrameRef,
    InlineFrame,
    decode,
    encode,
)

REF = FrameRef("alpr.run.cam.123.0", 3, 42, (720, 1280, 3), "uint8", "ipc:///tmp/at/rel.cam-0-1")


def full_envelope() -> Envelope:
    """An envelope with every field set to something other than its default."""
    return Envelope(
        camera_id="gate-1",
        frame_id=12345,
        captured_at=1712345678.25,
        frame=REF,
        detections=[{"box": [1, 2, 30, 40], "score": 0.5, "label": "plate"}],
        tracks=[{"track_id": 7, "box": [1, 2, 30, 40], "age": 3}],
        plates=[{"text": "AB-123", "confidence": 0.875, "chars": [["A", 0.9], ["B", 0.8]]}],
        stamps=[("cam", 1_000, 2_000), ("detect", 3_000, 5_000)],
        meta={"source": "rtsp", "nested": {"k": [1, 2.5, None, True]}, 7: "int key"},
        unknown={"trace_id": "abc"},
        version=ENVELOPE_VERSION,
    )


def body_of(parts: list) -> dict:
    return msgpack.unpackb(parts[0], raw=False, strict_map_key=False)


def raw_parts(body: dict, *extra: object) -> list:
    return [msgpack.packb(body, use_bin_type=True), *extra]


# -- round trip --------------------------------------------------------------------------------


def test_every_field_survives_a_round_trip() -> None:
    env = full_envelope()
    back = decode(encode(env))
    assert back == env  # dataclass equality: every field, including unknown and version
    assert isinstance(back.frame, FrameRef)
    assert back.frame.shape == (720, 1280, 3) and isinstance(back.frame.shape, tuple)
    assert all(isinstance(s, tuple) for s in back.stamps)
    assert back.stamps[1] == ("detect", 3_000, 5_000)
    assert back.meta[7] == "int key"


def test_encoding_does_not_change_the_envelope() -> None:
    env = full_envelope()
    before = copy.deepcopy(env)
    encode(env)
    assert env == before


def test_defaults_round_trip() -> None:
    env = Envelope(camera_id="c", frame_id=0)
    back = decode(encode(env))
    assert back.frame is None
    assert (back.detections, back.tracks, back.plates, back.stamps, back.meta, back.unknown) == ([], [], [], [], {}, {})
    assert back.captured_at == env.captured_at and back.version == ENVELOPE_VERSION


def test_no_frame_sends_a_single_part() -> None:
    parts = encode(Envelope(camera_id="c", frame_id=1))
    assert len(parts) == 1
    body = body_of(parts)
    assert "frame" not in body and "inline" not in body


def test_frame_ref_wire_form_round_trips() -> None:
    assert FrameRef.from_wire(REF.to_wire()) == REF
    wire = msgpack.unpackb(msgpack.packb(REF.to_wire()))
    assert FrameRef.from_wire(wire) == REF


def test_wire_names_are_stable() -> None:
    """Older and newer stages read these names: renaming one breaks mixed-version graphs."""
    body = body_of(encode(full_envelope()))
    assert {"v", "camera_id", "frame_id", "captured_at", "frame", "detections", "tracks", "plates",
            "stamps", "meta"} <= set(body)
    assert body["v"] == ENVELOPE_VERSION and body["camera_id"] == "gate-1"


# -- forward compatibility ---------------------------------------------------------------------


def test_unknown_fields_survive_decode_then_encode() -> None:
    """A newer stage adds top-level fields; an older stage in between passes them on untouched."""
    newer = body_of(encode(full_envelope()))
    newer["v"] = ENVELOPE_VERSION + 1
    newer["vehicle"] = {"type": "car", "color": "red"}
    newer["embedding"] = b"\x00\x01\x02\xff"
    newer["scores"] = [0.1, 0.2]

    older = decode(raw_parts(newer))
    assert older.unknown["vehicle"] == {"type": "car", "color": "red"}
    assert older.unknown["embedding"] == b"\x00\x01\x02\xff"
    assert older.version == ENVELOPE_VERSION + 1
    older.plates.append({"text": "XY"})  # the older stage does its own work

    passed_on = body_of(encode(older))
    for key in ("vehicle", "embedding", "scores"):
        assert passed_on[key] == newer[key], key
    assert passed_on["v"] == ENVELOPE_VERSION + 1
    assert passed_on["plates"][-1] == {"text": "XY"}


def test_known_fields_win_over_unknown_ones_with_the_same_name() -> None:
    env = Envelope(camera_id="real", frame_id=1, unknown={"camera_id": "bogus", "extra": 1})
    body = body_of(encode(env))
    assert body["camera_id"] == "real" and body["extra"] == 1


# -- inline frames -----------------------------------------------------------------------------


def test_inline_frame_bytes_travel_as_their_own_part_without_copy() -> None:
    image = np.arange(4 * 5 * 3, dtype=np.uint8).reshape(4, 5, 3)
    data = memoryview(image).cast("B")
    parts = encode(Envelope(camera_id="c", frame_id=1, frame=InlineFrame(data, (4, 5, 3), "uint8")))
    assert len(parts) == 2
    assert parts[1] is data  # handed to zmq as is: no bytes() copy
    body = body_of(parts)
    assert body["inline"] == [[4, 5, 3], "uint8"] and "frame" not in body
    assert len(parts[0]) < 200  # the header stays small whatever the frame size


def test_decode_uses_the_inline_buffer_without_copying() -> None:
    image = np.arange(6 * 7, dtype=np.uint16).reshape(6, 7)
    parts = encode(Envelope(camera_id="c", frame_id=1, frame=InlineFrame(image.tobytes(), (6, 7), "uint16")))
    buffer = bytearray(parts[1])  # as a receiver might hold the second part
    env = decode([parts[0], buffer])
    assert isinstance(env.frame, InlineFrame)
    assert env.frame.shape == (6, 7) and env.frame.dtype == "uint16"
    frame = np.frombuffer(env.frame.data, dtype=env.frame.dtype).reshape(env.frame.shape)
    np.testing.assert_array_equal(frame, image)
    assert np.shares_memory(frame, np.frombuffer(buffer, dtype=np.uint8))
    buffer[0] = 0xAB  # a change to the received buffer shows: it is the same memory
    assert int(frame[0, 0]) & 0xFF == 0xAB


def test_inline_frame_through_real_zmq_frames() -> None:
    """Over a socket with ``copy=False`` the parts are ``zmq.Frame``s; decode reads their buffers."""
    ctx = zmq.Context()
    a, b = ctx.socket(zmq.PAIR), ctx.socket(zmq.PAIR)
    try:
        a.bind("inproc://envelope-test")
        b.connect("inproc://envelope-test")
        image = np.random.default_rng(0).integers(0, 255, size=(64, 48, 3), dtype=np.uint8)
        env = Envelope(camera_id="c", frame_id=9, frame=InlineFrame(memoryview(image).cast("B"), image.shape, "uint8"),
                       meta={"codec": "raw"})
        a.send_multipart(encode(env), copy=False)
        assert b.poll(5000)
        frames = b.recv_multipart(copy=False)
        back = decode(frames)
        assert back.camera_id == "c" and back.frame_id == 9 and back.meta == {"codec": "raw"}
        received = np.frombuffer(back.frame.data, dtype=back.frame.dtype).reshape(back.frame.shape)
        np.testing.assert_array_equal(received, image)
        assert np.shares_memory(received, np.frombuffer(frames[1].buffer, dtype=np.uint8))
        del received, back, frames
    finally:
        a.close(0)
        b.close(0)
        ctx.term()


# -- latency -----------------------------------------------------------------------------------


def test_latency_spans_first_receive_to_last_send() -> None:
    env = Envelope(camera_id="c", frame_id=1)
    assert env.latency_ms() is None
    env.stamps.append(("cam", 1_000_000, 2_000_000))
    assert env.latency_ms() == pytest.approx(1.0)
    env.stamps.append(("detect", 3_000_000, 5_500_000))
    assert env.latency_ms() == pytest.approx(4.5)
    assert decode(encode(env)).latency_ms() == pytest.approx(4.5)


# -- derive ------------------------------------------------------------------------------------


def test_derive_shares_the_frame_and_applies_changes() -> None:
    env = full_envelope()
    child = env.derive(frame_id=99, meta={"only": 1})
    assert child.frame is env.frame
    assert child.frame_id == 99 and child.meta == {"only": 1}
    assert env.frame_id == 12345 and env.meta["source"] == "rtsp"
    assert child.camera_id == env.camera_id and child.captured_at == env.captured_at
    assert child.unknown == env.unknown and child.version == env.version


def test_derived_copy_can_change_stamps_meta_and_unknown_alone() -> None:
    env = full_envelope()
    child = env.derive()
    child.stamps.append(("ocr", 6_000, 7_000))
    child.meta["added"] = True
    child.unknown["added"] = True
    assert len(env.stamps) == 2 and "added" not in env.meta and "added" not in env.unknown


@pytest.mark.parametrize("field", ["detections", "tracks", "plates"])
def test_derived_copy_can_change_result_lists_alone(field: str) -> None:
    """A stage fanning out one envelope per plate appends to each copy's lists: the original and
    its siblings must not see those appends."""
    env = full_envelope()
    before = list(getattr(env, field))
    first, second = env.derive(), env.derive()
    getattr(first, field).append({"from": "first"})
    assert getattr(env, field) == before, f"derive() shares {field} with the original"
    assert getattr(second, field) == before, f"derive() shares {field} between siblings"


# -- malformed input ---------------------------------------------------------------------------


def test_not_msgpack_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="not a msgpack envelope"):
        decode([b"\xc1"])  # 0xc1 is never valid msgpack
    with pytest.raises(ValueError, match="not a msgpack envelope"):
        decode([b"\x92\x01"])  # truncated array


@pytest.mark.parametrize("body", [
    {"frame_id": 1},
    {"camera_id": "c"},
    [1, 2, 3],
    "just a string",
    17,
])
def test_missing_identity_is_a_value_error(body: object) -> None:
    with pytest.raises(ValueError, match="camera_id"):
        decode([msgpack.packb(body)])


def test_inline_announced_without_bytes_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="inline frame announced but no frame bytes"):
        decode(raw_parts({"camera_id": "c", "frame_id": 1, "inline": [[2, 2], "uint8"]}))


@pytest.mark.parametrize("fields", [
    {"frame_id": None},
    {"frame_id": [1]},
    {"captured_at": None},
    {"frame": 5},
    {"frame": ["pool", 1]},
    {"inline": 5},
    {"meta": [1, 2]},
    {"stamps": 7},
], ids=lambda f: ",".join(f"{k}={v!r}" for k, v in f.items()))
def test_wrongly_typed_fields_are_value_errors(fields: dict) -> None:
    """decode() promises ValueError "on anything that is not an envelope"; the input port only
    catches ValueError, so any other exception type takes the whole stage down."""
    body = {"camera_id": "c", "frame_id": 1, **fields}
    with pytest.raises(ValueError):
        decode(raw_parts(body, b"\x00" * 4))


def test_no_parts_is_a_value_error() -> None:
    """A DATA message with nothing after the kind frame reaches decode() as an empty list."""
    with pytest.raises(ValueError):
        decode([])
