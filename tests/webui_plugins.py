"""Stage types for the status page and metrics tests (loaded through a topology's `plugins:` list):
a fake plate reader that annotates test-pattern frames and makes plate events as `dedup.plates`
does, and a fake publisher with the counters a Kafka publisher keeps. They let the tests check
previews, events and stage counters against exactly what the stages did, without models."""

from __future__ import annotations

import uuid

import cv2
from pydantic import Field

from alpr_topo.core.envelope import Envelope
from alpr_topo.core.stage import Stage, StageParams
from alpr_topo.plugins.hookspecs import hookimpl


class FakeAlprParams(StageParams):
    event_every: int = Field(50, ge=1, description="a plate event on every frame whose id % event_every == event_every - 1")


class FakeAlpr(Stage):
    """Puts a vehicle and a plate box, track ids and a plate read on every frame; counts `plates_read`;
    attaches a plate event with its JPEG crop every `event_every` frames."""

    type_name = "test.fake_alpr"
    Params = FakeAlprParams
    params: FakeAlprParams

    def process(self, env: Envelope) -> Envelope:
        h, w = env.frame.shape[:2] if env.frame is not None else (240, 320)
        track = env.frame_id // self.params.event_every + 1
        text = f"TP{track:04d}"
        vehicle = [0.12 * w, 0.25 * h, 0.88 * w, 0.92 * h]
        plate = [0.38 * w, 0.7 * h, 0.62 * w, 0.82 * h]
        env.detections += [{"box": vehicle, "score": 0.9, "kind": "vehicle", "label": "car", "track_id": track},
                           {"box": plate, "score": 0.8, "kind": "plate", "label": "plate", "vehicle": 0, "track_id": track}]
        env.plates.append({"text": text, "normalized": text, "confidence": 0.93, "box": plate, "track_id": track})
        self.ctx.count("plates_read")
        if env.frame_id % self.params.event_every == self.params.event_every - 1:
            x1, y1, x2, y2 = (int(v) for v in plate)
            ok, crop = cv2.imencode(".jpg", self.ctx.frame(env)[y1:y2, x1:x2])
            env.meta["event"] = {
                "event_id": str(uuid.uuid4()), "captured_at": int(env.captured_at * 1000), "camera_id": env.camera_id,
                "track_id": track, "plate": {"text": text, "normalized_text": text, "confidence": 0.93, "region": None},
            }
            env.meta["images"] = {"plate_jpeg": crop.tobytes()}
            self.log.info("plate event %s", text)  # carries the frame and event ids in the log line
        return env


class FakePublisher(Stage):
    """Counts `events_written` for every plate event, a `delivery_errors` for every second one, and
    keeps `spool_bytes` (a level) at 100 bytes per event written."""

    type_name = "test.fake_publisher"

    def process(self, env: Envelope) -> None:
        if isinstance(env.meta.get("event"), dict):
            self.ctx.count("events_written")
            written = self.ctx.counters["events_written"]
            if written % 2 == 0:
                self.ctx.count("delivery_errors")
            self.ctx.counters["spool_bytes"] = 100 * written
        return None


@hookimpl
def alpr_topo_stage_types():
    return [FakeAlpr, FakePublisher]
