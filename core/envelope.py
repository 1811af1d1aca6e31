"""The small message that crosses ZeroMQ between stages.

An envelope never holds a frame on one host: it holds a :class:`FrameRef` to a slot in the
producer's shared-memory pool. Across hosts the runtime swaps the reference for the frame bytes
(``inline``), so stage code never knows which transport it runs on.

Fields this version does not know are kept in ``unknown`` and written back out unchanged, so a
newer stage can run next to older ones without them stripping what it added.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import msgpack

ENVELOPE_VERSION = 1


@dataclass(slots=True)
class FrameRef:
    """Where a frame lives: a slot of a shared-memory pool, stamped with the slot's generation.

    ``owner`` is the endpoint that takes lease releases for the pool. The generation lets a
    reader prove the slot was not reused under it.
    """

    pool: str
    slot: int
    generation: int
    shape: tuple[int, ...]
    dtype: str
    owner: str

    def to_wire(self) -> list[Any]:
        return [self.pool, self.slot, self.generation, list(self.shape), self.dtype, self.owner]

    @classmethod
    def from_wire(cls, value: list[Any]) -> "FrameRef":
        pool, slot, generation, shape, dtype, owner = value
        return cls(pool, slot, generation, tuple(shape), dtype, owner)


@dataclass(slots=True)
class InlineFrame:
    """A frame carried in the message itself (tcp hops), as raw bytes plus shape and dtype."""

    data: Any  # bytes, memoryview or zmq.Frame buffer; read without copying
    shape: tuple[int, ...]
    dtype: str


@dataclass(slots=True)
class Envelope:
    """Everything known about one frame as it moves through the graph."""

    camera_id: str
    frame_id: int
    captured_at: float = field(default_factory=time.time)
    frame: FrameRef | InlineFrame | None = None
    detections: list[dict[str, Any]] = field(default_factory=list)
    tracks: list[dict[str, Any]] = field(default_factory=list)
    plates: list[dict[str, Any]] = field(default_factory=list)
    # (stage name, received ns, sent ns) per stage, monotonic clock shared by one host's processes.
    stamps: list[tuple[str, int, int]] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)
    unknown: dict[str, Any] = field(default_factory=dict)
    version: int = ENVELOPE_VERSION

    def latency_ms(self) -> float | None:
        """Milliseconds from the first stage's receive stamp to the last stage's send stamp."""
        if not self.stamps:
            return None
        return (self.stamps[-1][2] - self.stamps[0][1]) / 1e6

    def derive(self, **changes: Any) -> "Envelope":
        """A copy that shares the frame reference: for stages that emit a new envelope per input."""
        values = {name: getattr(self, name) for name in self.__dataclass_fields__}
        for name in ("detections", "tracks", "plates", "stamps"):
            values[name] = list(getattr(self, name))
        values["meta"] = dict(self.meta)
        values["unknown"] = dict(self.unknown)
        values.update(changes)
        return Envelope(**values)


_KNOWN = ("v", "camera_id", "frame_id", "captured_at", "frame", "inline", "detections", "tracks",
          "plates", "stamps", "meta")


def encode(env: Envelope) -> list[Any]:
    """Serialise to ZeroMQ frames: the msgpack header, plus the raw frame bytes when inline.

    Inline frame bytes go as their own ZeroMQ frame so they are sent without copying.
    """
    body: dict[str, Any] = dict(env.unknown)
    body.update(
        v=env.version,
        camera_id=env.camera_id,
        frame_id=env.frame_id,
        captured_at=env.captured_at,
        detections=env.detections,
        tracks=env.tracks,
        plates=env.plates,
        stamps=env.stamps,
        meta=env.meta,
    )
    parts: list[Any] = []
    if isinstance(env.frame, FrameRef):
        body["frame"] = env.frame.to_wire()
    elif isinstance(env.frame, InlineFrame):
        body["inline"] = [list(env.frame.shape), env.frame.dtype]
        parts.append(env.frame.data)
    return [msgpack.packb(body, use_bin_type=True), *parts]


def decode(parts: list[Any]) -> Envelope:
    """Inverse of :func:`encode`; raises ``ValueError`` on anything that is not an envelope."""
    try:
        return _decode(parts)
    except (IndexError, TypeError, KeyError, AttributeError) as exc:
        raise ValueError(f"malformed envelope: {exc!r}") from exc


def _decode(parts: list[Any]) -> Envelope:
    header = parts[0]
    raw = header.buffer if hasattr(header, "buffer") else header
    try:
        body = msgpack.unpackb(raw, raw=False, strict_map_key=False)
    except Exception as exc:  # msgpack raises several unrelated types
        raise ValueError(f"not a msgpack envelope: {exc}") from exc
    if not isinstance(body, dict) or "camera_id" not in body or "frame_id" not in body:
        raise ValueError("envelope lacks camera_id/frame_id")
    frame: FrameRef | InlineFrame | None = None
    if body.get("frame") is not None:
        frame = FrameRef.from_wire(body["frame"])
    elif body.get("inline") is not None:
        if len(parts) < 2:
            raise ValueError("inline frame announced but no frame bytes follow")
        shape, dtype = body["inline"]
        data = parts[1].buffer if hasattr(parts[1], "buffer") else parts[1]
        frame = InlineFrame(data, tuple(shape), dtype)
    return Envelope(
        camera_id=str(body["camera_id"]),
        frame_id=int(body["frame_id"]),
        captured_at=float(body.get("captured_at", 0.0)),
        frame=frame,
        detections=list(body.get("detections") or []),
        tracks=list(body.get("tracks") or []),
        plates=list(body.get("plates") or []),
        stamps=[tuple(s) for s in body.get("stamps") or []],
        meta=dict(body.get("meta") or {}),
        unknown={k: v for k, v in body.items() if k not in _KNOWN},
        version=int(body.get("v", ENVELOPE_VERSION)),
    )
