"""``source.synthetic``: road scenes with vehicles carrying plates of known text, and the truth.

The test bed for accuracy, load and chaos tests: every frame carries its ground truth in
``env.meta["truth"]`` (see docs/vision.md and docs/synthetic.md). The renderer works without
any stage too::

    from alpr_topo.stages.synthetic import SceneRenderer

    renderer = SceneRenderer(width=640, height=360, count=30, seed=7)
    for image, truth in renderer.frames():
        ...

``alpr_topo.tools.synth`` writes scenes to an mp4 plus truth JSONL, or to a folder in the
OpenALPR benchmark layout (``alpr-topo synth``).
"""

from __future__ import annotations

import time

from ..core.envelope import Envelope
from ..core.stage import Source
from .synth_plates import FAMILIES, PLATE_FORMATS, PlateFormat, canonical, render_plate
from .synth_scene import OCCLUDED_ABOVE, SceneRenderer, SyntheticParams

__all__ = [
    "SyntheticSource", "SyntheticParams", "SceneRenderer", "PLATE_FORMATS", "FAMILIES", "PlateFormat",
    "OCCLUDED_ABOVE", "canonical", "render_plate", "STAGE_TYPES",
]


class SyntheticSource(Source):
    """Synthetic traffic: vehicles with plates of known text drive through a road scene; truth in meta["truth"]."""

    type_name = "source.synthetic"
    Params = SyntheticParams
    params: SyntheticParams

    def setup(self) -> None:
        self.renderer = SceneRenderer(self.params)
        self.next_id = 0
        self.started = time.monotonic()
        self.epoch = time.time()  # wall time of scene time 0
        self.log.info("synthetic scene %dx%d, %s frames at %s fps, seed %d", self.params.width, self.params.height,
                      self.renderer.total_frames or "endless", self.params.fps or "max", self.params.seed)

    def wait_s(self) -> float:
        if self.params.fps <= 0:
            return 0.0
        return max(0.0, self.started + self.next_id / self.params.fps - time.monotonic())

    def produce(self) -> Envelope | None:
        renderer = self.renderer
        if renderer.finished:
            self.finished = True
            return None
        if self.wait_s() > 0:
            return None
        frame_id = self.next_id
        self.next_id += 1
        spawned = renderer.vehicles_spawned
        slot = self.ctx.new_frame(renderer.shape)
        if slot is None:
            # every slot busy and the pool drops (counted by the pool): the scene moves on all the
            # same, so frame ids and scene time stay in step, as with a live camera
            renderer.render(draw=False)
            self.finished = renderer.finished
            return None
        ref, image = slot
        _, truth = renderer.render(out=image)
        if renderer.vehicles_spawned > spawned:
            self.ctx.count("vehicles", renderer.vehicles_spawned - spawned)
        self.finished = renderer.finished
        return Envelope(
            camera_id=self.params.camera_id,
            frame_id=frame_id,
            # scene time anchored at the start, as a camera at this frame rate would stamp it, even
            # when back-pressure makes the source wait (timings downstream then hold in scene time)
            captured_at=self.epoch + frame_id / renderer.fps,
            frame=ref,
            meta={"truth": truth, "scene_time_s": round(frame_id / renderer.fps, 6)},
        )


STAGE_TYPES = [SyntheticSource]
