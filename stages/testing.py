"""The four built-in stages that exercise the runtime without any model or camera.

They keep the names and parameters given in DESIGN.md (a contract): ``source.test_pattern``,
``transform.passthrough``, ``sink.null`` and ``sink.jsonl``.
"""

from __future__ import annotations

import json
import os
import time
from typing import IO

import numpy as np
from pydantic import Field

from ..core.envelope import Envelope, FrameRef
from ..core.stage import Source, Stage, StageParams

STAMP_BYTES = 8


def stamp_frame(image: np.ndarray, frame_id: int) -> None:
    """Write the frame id into the first pixels, so a reader can prove it got the right frame."""
    image.reshape(-1).view(np.uint8)[:STAMP_BYTES] = np.frombuffer(frame_id.to_bytes(STAMP_BYTES, "little"), np.uint8)


def read_stamp(image: np.ndarray) -> int:
    """The frame id written by :func:`stamp_frame`."""
    return int.from_bytes(image.reshape(-1).view(np.uint8)[:STAMP_BYTES].tobytes(), "little")


class TestPatternParams(StageParams):
    width: int = Field(640, ge=8, le=16384, description="frame width in pixels")
    height: int = Field(480, ge=1, le=16384, description="frame height in pixels")
    fps: float = Field(30.0, ge=0, description="frames per second; 0 = as fast as downstream takes them")
    count: int = Field(300, ge=0, description="frames to emit before finishing; 0 = endless")
    camera_id: str = Field("test", min_length=1, description="camera id put on every envelope")


class TestPattern(Source):
    """Numbered BGR frames (a gradient with the frame id stamped in the first pixels)."""

    type_name = "source.test_pattern"
    Params = TestPatternParams
    params: TestPatternParams

    def setup(self) -> None:
        p = self.params
        x = np.linspace(0, 255, p.width, dtype=np.float32)
        y = np.linspace(0, 255, p.height, dtype=np.float32)[:, None]
        self.base = np.stack([np.broadcast_to(x, (p.height, p.width)), np.broadcast_to(y, (p.height, p.width)),
                              np.full((p.height, p.width), 128, np.float32)], axis=-1).astype(np.uint8)
        self.next_id = 0
        self.started = time.monotonic()

    def wait_s(self) -> float:
        if self.params.fps <= 0:
            return 0.0
        return max(0.0, self.started + self.next_id / self.params.fps - time.monotonic())

    def produce(self) -> Envelope | None:
        p = self.params
        if p.count and self.next_id >= p.count:
            self.finished = True
            return None
        if self.wait_s() > 0:
            return None
        slot = self.ctx.new_frame(self.base.shape)
        frame_id = self.next_id
        self.next_id += 1
        if slot is None:
            return None  # every slot busy and the pool drops: counted by the pool
        ref, image = slot
        np.copyto(image, self.base)
        stamp_frame(image, frame_id)
        if p.count and self.next_id >= p.count:
            self.finished = True
        return Envelope(camera_id=p.camera_id, frame_id=frame_id, captured_at=time.time(), frame=ref)


class PassthroughParams(StageParams):
    delay_ms: float = Field(0.0, ge=0, description="sleep this long per frame (simulates work)")
    check_stamps: bool = Field(False, description="read the stamp of source.test_pattern frames and count mismatches")


class Passthrough(Stage):
    """Passes every envelope on unchanged, optionally after a delay."""

    type_name = "transform.passthrough"
    Params = PassthroughParams
    params: PassthroughParams

    def process(self, env: Envelope) -> Envelope:
        if self.params.check_stamps and env.frame is not None:
            if read_stamp(self.ctx.frame(env)) != env.frame_id:
                self.ctx.count("stamp_mismatch")
        if self.params.delay_ms:
            time.sleep(self.params.delay_ms / 1000.0)
        env.meta.setdefault("passed", []).append(self.ctx.instance)
        return env


class NullSink(Stage):
    """Swallows every envelope (for benchmarks and tests)."""

    type_name = "sink.null"

    def process(self, env: Envelope) -> None:
        return None


class JsonlParams(StageParams):
    path: str = Field(..., min_length=1, description="file to append to; '{replica}' is replaced by the replica index")
    check_stamps: bool = Field(False, description="add 'stamp', the frame id read from the frame's pixels")


class JsonlSink(Stage):
    """Appends one JSON object per envelope (camera_id, frame_id, timings, detections, ...)."""

    type_name = "sink.jsonl"
    Params = JsonlParams
    params: JsonlParams

    def setup(self) -> None:
        path = self.params.path.replace("{replica}", str(self.ctx.replica))
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self.fh: IO[str] = open(path, "a", buffering=1)

    def process(self, env: Envelope) -> None:
        record = {
            "camera_id": env.camera_id,
            "frame_id": env.frame_id,
            "captured_at": env.captured_at,
            "latency_ms": env.latency_ms(),
            "stages": [s[0] for s in env.stamps],
            "stamps": env.stamps,
            "detections": env.detections,
            "tracks": env.tracks,
            "plates": env.plates,
            "meta": env.meta,
            **env.unknown,
        }
        if isinstance(env.frame, FrameRef) and env.frame.shape:
            record["frame_shape"] = list(env.frame.shape)
        if self.params.check_stamps and env.frame is not None:
            record["stamp"] = read_stamp(self.ctx.frame(env))
        self.fh.write(json.dumps(record, default=str) + "\n")
        return None

    def teardown(self) -> None:
        self.fh.close()

STAGE_TYPES = [TestPattern, Passthrough, NullSink, JsonlSink]
