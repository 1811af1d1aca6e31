"""The stage types of the example plugin, and the hook that hands them to alpr-topo.

``example.brightness`` shows the common case, a stage that reads the frame in place (no copy)
and annotates or drops the envelope. ``example.grayscale`` shows a stage that makes a new frame
in its own shared-memory pool with ``ctx.new_frame``.
"""

from __future__ import annotations

import numpy as np
from pydantic import Field

from alpr_topo.core.envelope import Envelope
from alpr_topo.core.stage import Stage, StageParams
from alpr_topo.plugins.hookspecs import hookimpl

#: ITU-R BT.601 luma weights in the B, G, R order of the frames alpr-topo carries.
BGR_LUMA = np.array([0.114, 0.587, 0.299], dtype=np.float32)


def mean_brightness(frame: np.ndarray, step: int = 1) -> float:
    """Mean luma (0..255) of a BGR frame, or the plain mean of any other layout.

    Only every ``step``-th row and column is read: on a 1080p frame ``step=4`` reads 1/16 of
    the pixels and changes the mean by far less than any useful threshold.
    """
    sample = frame[::step, ::step]
    if sample.ndim == 3 and sample.shape[-1] == 3:
        return float(np.dot(sample.mean(axis=(0, 1)), BGR_LUMA))
    return float(sample.mean())


class BrightnessParams(StageParams):
    min_brightness: float = Field(
        0.0, ge=0, le=255, description="drop frames whose mean brightness (0..255) is below this; 0 keeps all"
    )
    sample_step: int = Field(4, ge=1, le=64, description="read every Nth row and column (1 = every pixel)")


class Brightness(Stage):
    """Measures the mean brightness of each frame into meta['brightness']; drops frames too dark to read."""

    type_name = "example.brightness"
    Params = BrightnessParams
    params: BrightnessParams

    def process(self, env: Envelope) -> Envelope | None:
        if env.frame is None:
            self.ctx.count("no_frame")
            return env  # nothing to measure; let downstream decide
        # A read-only view into the producer's shared memory: no copy, and a frame that is
        # reused under us raises StaleFrame, which the runtime counts and drops.
        value = mean_brightness(self.ctx.frame(env), self.params.sample_step)
        env.meta["brightness"] = round(value, 2)  # a plain float: envelopes cross as msgpack
        if value < self.params.min_brightness:
            self.ctx.count("dark_dropped")
            return None
        return env


class GrayscaleParams(StageParams):
    pass  # no parameters; kept so `alpr-topo plugins` shows an (empty) schema


class Grayscale(Stage):
    """Replaces a BGR frame by its single-channel luma image, written into this stage's own pool."""

    type_name = "example.grayscale"
    Params = GrayscaleParams

    def process(self, env: Envelope) -> Envelope | None:
        if env.frame is None:
            return env
        frame = self.ctx.frame(env)
        if frame.ndim != 3 or frame.shape[-1] != 3:
            self.ctx.count("already_gray")
            return env
        slot = self.ctx.new_frame(frame.shape[:2], "uint8")
        if slot is None:  # every slot still in use downstream and the pool drops
            self.ctx.count("dropped_no_slot")
            return None
        ref, out = slot
        np.copyto(out, np.rint(np.dot(frame, BGR_LUMA)), casting="unsafe")
        # Point the envelope at the new frame. The runtime publishes it when the envelope leaves
        # and releases the input frame, since no output carries it on.
        env.frame = ref
        return env


@hookimpl
def alpr_topo_stage_types() -> list[type[Stage]]:
    return [Brightness, Grayscale]
