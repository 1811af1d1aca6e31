"""``alpr-topo bench pipeline``: the staged graph against the same stage code run sequentially.

Both runs see the same synthetic 1080p scene (the topology's ``source.synthetic`` stage, default
``topologies/cpu.yaml``, set to WIDTHxHEIGHT, unpaced, ``frames`` frames):

* staged: the topology for real, one process per stage replica, frames in shared memory.
  ``staged_fps``: frames through the last stage that passes every frame on (for cpu.yaml the OCR
  stage: dedup keeps frames back until a passage ends) over the time from the source's first
  frame to that stage's last. ``latency_p50_ms`` / ``latency_p99_ms``: capture to that stage's
  output, per frame, at full load (the source never waits, so queues are as full as the
  credit windows allow).
* sequential: every non-source stage built in this process (replicas ignored), each frame
  rendered then handed through ``process`` of each in turn, as a single-process ALPR loop does.

``speedup`` = staged_fps / sequential_fps.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from ..core.envelope import Envelope
from .bench_run import DEFAULT_TOPOLOGY, InProcess, RunResult, bench_name, inline, percentile, run_to_end


def _full_stage(topo: Any, result: RunResult, frames: int) -> str:
    """The deepest stage (topological order) that passed on every frame."""
    chosen = topo.order()[0]
    for name in topo.order()[1:]:
        if result.total(name, "frames_out") >= frames:
            chosen = name
    return chosen


def run(topology: str | None = None, frames: int = 150, width: int = 1920, height: int = 1080,
        progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Both runs; the DESIGN.md JSON object plus details."""
    from ..core.overrides import load_changed, set_params, stages_of_type
    from ..stages.synth_scene import SceneRenderer

    say = progress or (lambda _msg: None)
    path = str(topology or DEFAULT_TOPOLOGY)
    out = Path(tempfile.mkdtemp(prefix="alpr-bench-pipeline-"))

    def change(data: dict[str, Any]) -> None:
        sources = stages_of_type(data, "source.synthetic")
        if len(sources) != 1:
            raise ValueError(f"{path}: bench pipeline needs exactly one source.synthetic stage (found {len(sources)})")
        data["name"] = bench_name("pipeline")
        # fps 0: the source sends whenever there is room (the scene's clock runs at its default rate)
        set_params(data, sources[0], width=width, height=height, count=frames, fps=0)
        for i, name in enumerate(stages_of_type(data, "publish.local")):
            set_params(data, name, path=str(out / f"events-{i}.jsonl"), print_events=False)

    topo = load_changed(path, change)
    source = topo.order()[0]
    scene = dict(topo.stages[source].params)

    say(f"bench pipeline: staged run of {path}, {frames} frames {width}x{height}")
    staged = run_to_end(topo, say, source, frames)
    full = _full_stage(topo, staged, frames)
    first = min(staged.times(source, "first_out_at"), default=None)
    last = max(staged.times(full, "last_out_at"), default=None)
    passed = staged.total(full, "frames_out")
    staged_fps = passed / (last - first) if first and last and last > first else None
    e2e = [s for s in staged.stats.get(full, []) if s.get("e2e_p50_ms") is not None]
    # replicas each report their own percentiles: the busiest replica's stand for the stage
    busiest = max(e2e, key=lambda s: s.get("frames_out") or 0) if e2e else {}

    say(f"bench pipeline: sequential run, the same {frames} frames through the same stages in one process")
    decls = [(name, topo.stages[name].type, topo.stages[name].params) for name in topo.order() if name != source]
    renderer = SceneRenderer(scene)
    latencies: list[float] = []
    with InProcess(decls, run=bench_name("sequential")) as chain:
        t_start = time.perf_counter()
        for frame_id in range(frames):
            t0 = time.perf_counter()
            image, truth = renderer.render()
            env = Envelope(camera_id=scene.get("camera_id") or source, frame_id=frame_id, captured_at=time.time(),
                           frame=inline(image), meta={"truth": truth})
            for _ in chain.feed(env):
                pass
            latencies.append((time.perf_counter() - t0) * 1000)
        chain.finish()
        seq_seconds = time.perf_counter() - t_start
    sequential_fps = frames / seq_seconds
    return {
        "staged_fps": round(staged_fps, 2) if staged_fps else None,
        "sequential_fps": round(sequential_fps, 2),
        "speedup": round(staged_fps / sequential_fps, 2) if staged_fps else None,
        "latency_p50_ms": busiest.get("e2e_p50_ms"),
        "latency_p99_ms": busiest.get("e2e_p99_ms"),
        "frames": frames,
        "topology": path,
        "measured_stage": full,
        "frame_size": [width, height],
        "sequential_latency_p50_ms": percentile(latencies, 50),
        "sequential_latency_p99_ms": percentile(latencies, 99),
        "staged_stages": {name: {"replicas": len(staged.stats.get(name, [])),
                                 "frames_in": staged.total(name, "frames_in"),
                                 "frames_out": staged.total(name, "frames_out"),
                                 "stale": staged.total(name, "stale"), "errors": staged.total(name, "errors"),
                                 "process_p50_ms": [s.get("latency_p50_ms") for s in staged.stats.get(name, [])]}
                          for name in topo.order()},
        "staged_exit_code": staged.exit_code,
        "target_speedup_min": 1.6,
    }


def main_text(r: dict[str, Any]) -> str:
    return "\n".join([
        f"{r['topology']}: {r['frames']} frames {r['frame_size'][0]}x{r['frame_size'][1]}",
        f"staged      {r['staged_fps']} frames/s, latency p50 {r['latency_p50_ms']} ms, p99 {r['latency_p99_ms']} ms "
        f"(capture to {r['measured_stage']})",
        f"sequential  {r['sequential_fps']} frames/s, latency p50 {r['sequential_latency_p50_ms']} ms, "
        f"p99 {r['sequential_latency_p99_ms']} ms",
        f"speedup     {r['speedup']}x (target >= {r['target_speedup_min']}x)",
    ])
