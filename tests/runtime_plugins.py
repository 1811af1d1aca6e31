"""Stage types used only by the runtime tests, loaded through a topology's `plugins:` list."""

from __future__ import annotations

import os
import time

from pydantic import Field

from alpr_topo.core.envelope import Envelope
from alpr_topo.core.stage import Stage, StageParams
from alpr_topo.plugins.hookspecs import hookimpl


class FaultParams(StageParams):
    crash_on: int = Field(-1, description="exit the process (code 3) on this frame id; -1 = never")
    hang_on: int = Field(-1, description="sleep forever on this frame id; -1 = never")
    crash_always: bool = False
    marker: str = Field("", description="file whose existence arms crash_on/hang_on (so a restart does not repeat it)")


class Fault(Stage):
    """Passes frames on, and crashes or hangs on request."""

    type_name = "test.fault"
    Params = FaultParams

    def setup(self) -> None:
        if self.params.crash_always:
            raise SystemExit(3)

    def _armed(self) -> bool:
        if not self.params.marker:
            return True
        if os.path.exists(self.params.marker):
            os.unlink(self.params.marker)
            return True
        return False

    def process(self, env: Envelope) -> Envelope:
        if env.frame_id == self.params.crash_on and self._armed():
            os._exit(3)
        if env.frame_id == self.params.hang_on and self._armed():
            while True:
                time.sleep(1)
        return env


class TaggerParams(StageParams):
    tag: str = "tagged"


class Tagger(Stage):
    """Another plugin to swap in: writes its tag into the envelope."""

    type_name = "test.tagger"
    Params = TaggerParams

    def process(self, env: Envelope) -> Envelope:
        env.meta["tag"] = self.params.tag
        env.meta.setdefault("passed", []).append(self.ctx.instance)
        return env


class OrderCheck(Stage):
    """Ordered per camera: records whether frame ids of a camera ever went backwards."""

    type_name = "test.order_check"
    ordered = True

    def setup(self) -> None:
        self.last: dict[str, int] = {}

    def process(self, env: Envelope) -> Envelope:
        previous = self.last.get(env.camera_id, -1)
        env.meta["in_order"] = env.frame_id > previous
        env.meta["replica"] = self.ctx.replica
        self.last[env.camera_id] = env.frame_id
        return env


class Summary(Stage):
    """Swallows frames; emits one summary envelope per second (tick) and a last one at drain (flush)."""

    type_name = "test.summary"

    def setup(self) -> None:
        self.seen: list[int] = []
        self.emitted = 0

    def process(self, env: Envelope) -> None:
        self.seen.append(env.frame_id)
        return None

    def _summary(self, why: str) -> Envelope:
        self.emitted += 1
        env = Envelope(camera_id="summary", frame_id=self.emitted)
        env.meta.update(why=why, frames=list(self.seen))
        self.seen = []
        return env

    def tick(self) -> Envelope | None:
        return self._summary("tick") if self.seen else None

    def flush(self) -> Envelope:
        return self._summary("flush")


class BatchParams(StageParams):
    batch_size: int = 8
    delay_ms: float = 20.0


class Batcher(Stage):
    """Slow per call, so envelopes queue up; records how many each process_batch call got."""

    type_name = "test.batcher"
    Params = BatchParams

    def process(self, env: Envelope) -> Envelope:
        return self.process_batch([env])[0]

    def process_batch(self, envs: list[Envelope]) -> list[Envelope]:
        time.sleep(self.params.delay_ms / 1000)
        for env in envs:
            env.meta["batch"] = len(envs)
        return envs


@hookimpl
def alpr_topo_stage_types() -> list[type[Stage]]:
    return [Fault, Tagger, OrderCheck, Summary, Batcher]
