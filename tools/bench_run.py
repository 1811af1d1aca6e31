"""What the pipeline benchmarks share: run a topology to its end in this process's supervisor,
and build a topology's stages inside this process (the sequential baseline, bench accuracy).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from ..core.envelope import Envelope, InlineFrame
from ..core.topology import Topology

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_TOPOLOGY = ROOT / "topologies" / "cpu.yaml"


@dataclass
class RunResult:
    """A finished run: how long ``serve`` took and the last stats of every process, per stage."""

    seconds: float
    exit_code: int
    stats: dict[str, list[dict[str, Any]]]

    def total(self, stage: str, key: str) -> int:
        return sum(int(s.get(key) or 0) for s in self.stats.get(stage, []))

    def times(self, stage: str, key: str) -> list[float]:
        return [float(s[key]) for s in self.stats.get(stage, []) if s.get(key) is not None]


def run_to_end(topo: Topology, progress: Callable[[str], None] | None = None, source: str | None = None,
               frames: int | None = None, every_s: float = 30.0) -> RunResult:
    """Start the topology's processes, wait until its sources finished and it drained.

    With ``progress`` and ``source``: every ``every_s`` seconds a line with the frames the source
    sent so far (of ``frames``), because a long scene on a slow machine runs for many minutes."""
    from ..core.supervisor import Supervisor

    supervisor = Supervisor(topo, console_level="ERROR")
    started = time.monotonic()
    done = threading.Event()

    def report() -> None:
        while not done.wait(every_s):
            instances = [*supervisor.finished.values(), *supervisor.instances.values()]
            sent = sum(int(i.stats.get("frames_out") or 0) for i in instances if i.stage == source)
            of = f" of {frames}" if frames else ""
            progress(f"  {time.monotonic() - started:.0f} s: {sent}{of} frames sent by {source}")  # type: ignore[misc]

    if progress is not None and source is not None:
        threading.Thread(target=report, name="bench-progress", daemon=True).start()
    supervisor.start()
    try:
        code = supervisor.serve()
    finally:
        done.set()
    stats: dict[str, list[dict[str, Any]]] = {}
    for inst in [*supervisor.finished.values(), *supervisor.instances.values()]:
        stats.setdefault(inst.stage, []).append(inst.stats)
    return RunResult(seconds=time.monotonic() - started, exit_code=code, stats=stats)


def bench_name(kind: str) -> str:
    """A run name of its own, so a benchmark never collides with a run that is up."""
    return f"bench-{kind}-{os.getpid()}"


def _no_pool() -> Any:
    raise RuntimeError("a stage asked for its own frame pool; in-process benchmarks give frames inline")


class InProcess:
    """Stages of a topology built in this process, fed inline frames one envelope at a time.

    Used as a context manager: ``setup`` on entry, ``teardown`` on exit (in reverse order).
    """

    def __init__(self, decls: list[tuple[str, str, dict[str, Any]]], run: str = "bench") -> None:
        from ..core.context import StageContext
        from ..core.framepool import PoolReader
        from ..core.plugins import stage_types

        known = stage_types()
        self.stages = []
        for name, type_name, params in decls:
            cls = known[type_name]
            ctx = StageContext(name=name, type_name=type_name, replica=0, instance=f"{name}.0", run=run,
                               log=logging.getLogger(f"alpr_topo.bench.{name}"), reader=PoolReader(),
                               make_pool=_no_pool)
            self.stages.append(cls(cls.Params(**params), ctx))
        self.ready: list[Any] = []

    def __enter__(self) -> "InProcess":
        try:
            for stage in self.stages:
                stage.setup()
                self.ready.append(stage)
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        while self.ready:
            stage = self.ready.pop()
            try:
                stage.teardown()
            finally:
                stage.ctx.reader.close()

    def feed(self, env: Envelope, start: int = 0) -> Iterator[Envelope]:
        """Every envelope that leaves the last stage when ``env`` enters stage ``start``."""
        if start >= len(self.stages):
            yield env
            return
        for out in _outputs(self.stages[start].process(env)):
            yield from self.feed(out, start + 1)

    def finish(self) -> list[Envelope]:
        """What ``flush`` (end of stream) pushes out of each stage, through the stages after it."""
        outs: list[Envelope] = []
        for index, stage in enumerate(self.stages):
            flush = getattr(stage, "flush", None)
            for env in _outputs(flush() if callable(flush) else None):
                outs.extend(self.feed(env, index + 1))
        return outs


def _outputs(result: Any) -> list[Envelope]:
    if result is None:
        return []
    return [result] if isinstance(result, Envelope) else list(result)


def inline(image: np.ndarray) -> InlineFrame:
    image = np.ascontiguousarray(image)
    return InlineFrame(image.tobytes(), tuple(image.shape), str(image.dtype))


def percentile(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 2) if values else None
