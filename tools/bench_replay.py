"""``alpr-topo bench replay``: what the reading stages saw of each vehicle of a synthetic scene.

``bench synthetic`` scores the events of a running graph; when an event is wrong, the question is
what the plate looked like to the stages frame by frame. This replays the same scene (same
parameters and seed, so the same frames) through the topology's ``detect.*``, ``track.*`` and
``ocr.*`` stages in this process, one frame after the other, and lists every read with the
vehicle it came from (the truth object whose plate box overlaps the read's box most, as
``dedup.plates`` does in test mode): frame, plate track, text, confidence, box shape and how much
of the plate was hidden. The graph's own timing is not reproduced (every frame is read here, a
slow graph may skip re-reads), so a replay shows what the stages make of the frames, not which
frames a run got to.
"""

from __future__ import annotations

import time
from typing import Any, Callable

from .bench_run import DEFAULT_TOPOLOGY, InProcess, inline

FAMILIES = ("detect", "track", "ocr")


def replay(topology: str | None = None, seconds: float = 60.0, vehicles: int = 16, seed: int = 1,
           scene: dict[str, Any] | None = None, progress: Callable[[str], None] | None = None,
           vehicle: int | None = None) -> dict[str, Any]:
    """Reads per vehicle of the scene ``bench synthetic`` would run; the JSON object of the command.
    With ``vehicle``, only that vehicle's, and the replay ends a second after it has left the
    frame: vehicle 11 of a 300 s scene then takes half a minute, not the scene's whole length."""
    from ..core.envelope import Envelope
    from ..core.overrides import load_changed, stages_of_type
    from ..stages.dedup import DedupStage
    from ..stages.synth_scene import SceneRenderer
    from .bench_synthetic import set_scene, truth_vehicles

    say = progress or (lambda _msg: None)
    path = str(topology or DEFAULT_TOPOLOGY)

    def change(data: dict[str, Any]) -> None:
        sources = stages_of_type(data, "source.synthetic")
        if len(sources) != 1:
            raise ValueError(f"{path}: bench replay needs one source.synthetic stage (found {len(sources)})")
        set_scene(data, sources[0], seconds, vehicles, seed, scene)

    topo = load_changed(path, change)
    order = topo.order()
    source = next(name for name in order if topo.stages[name].type == "source.synthetic")
    decls = [(name, topo.stages[name].type, topo.stages[name].params) for name in order
             if topo.stages[name].type.split(".")[0] in FAMILIES]
    if not any(t.startswith("ocr.") for _, t, _ in decls):
        raise ValueError(f"{path} has no ocr.* stage to replay")
    params = topo.stages[source].params
    renderer = SceneRenderer(params)
    fps = float(params["fps"])
    total = round(seconds * fps)
    say(f"bench replay: {path}, {seconds:g} s scene at {fps:g} fps, {vehicles} vehicles, seed {seed}; "
        f"stages {', '.join(n for n, _, _ in decls)} in this process")
    reads: dict[str, list[dict[str, Any]]] = {}
    with InProcess(decls, run="bench-replay") as chain:
        index, seen, gone, epoch = 0, False, 0, time.time()
        while not renderer.finished and gone <= fps:
            frame, truth = renderer.render()
            if vehicle is not None:
                present = any(obj.get("vehicle_id") == vehicle for obj in truth)
                seen = seen or present
                gone = 0 if present or not seen else gone + 1
            # capture time as the source stamps it (the OCR stage's re-reads go by it): by wall
            # clock, a replay read other frames each time it ran
            env = Envelope(camera_id=str(params.get("camera_id", "synthetic")), frame_id=index, frame=inline(frame),
                           captured_at=epoch + index / fps)
            env.meta["truth"] = truth
            for out in chain.feed(env):
                for plate in out.plates:
                    box = plate.get("box")
                    if box is None or plate.get("skipped"):
                        continue
                    obj = DedupStage._truth(out, box)
                    key = str(obj["vehicle_id"]) if obj else "none"
                    reads.setdefault(key, []).append({
                        "frame": index, "track_id": plate.get("track_id"),
                        "text": plate.get("normalized") or plate.get("text") or "",
                        "confidence": plate.get("confidence"),
                        "aspect": round((box[2] - box[0]) / max(box[3] - box[1], 1e-6), 2),
                        "height": round(box[3] - box[1]),
                        "hidden": obj.get("occlusion") if obj else None,
                    })
            index += 1
            if index % 300 == 0:
                say(f"  {index}/{total} frames")
    readable, shown = truth_vehicles(params)
    out_vehicles = []
    for vid in sorted({str(v) for v in shown} | set(reads) - {"none"}, key=int):
        if vehicle is not None and int(vid) != vehicle:
            continue
        plate = shown.get(int(vid))
        kind = "readable" if int(vid) in readable else ("partly shown" if plate else "never shown")
        out_vehicles.append({"vehicle_id": int(vid), "plate": plate, "kind": kind, "reads": reads.get(vid, [])})
    return {"topology": path, "scene": {"seconds": seconds, "vehicles": vehicles, "seed": seed, **(scene or {})},
            "frames": index, "vehicles": out_vehicles, "unmatched_reads": reads.get("none", [])}


def main_text(result: dict[str, Any], vehicle: int | None = None) -> str:
    """One line per vehicle (its texts and how often each was read), or every read of ``vehicle``."""
    lines = [f"bench replay: {result['topology']}, seed {result['scene']['seed']}, {result['frames']} frames"]
    for v in result["vehicles"]:
        if vehicle is not None and v["vehicle_id"] != vehicle:
            continue
        counts: dict[str, int] = {}
        for r in v["reads"]:
            counts[r["text"]] = counts.get(r["text"], 0) + 1
        texts = ", ".join(f"{t or '-'} x{n}" for t, n in sorted(counts.items(), key=lambda kv: -kv[1]))
        lines.append(f"vehicle {v['vehicle_id']} {v['plate'] or '?'} ({v['kind']}): {len(v['reads'])} reads: {texts}")
        if vehicle is not None:
            for r in v["reads"]:
                lines.append(f"  frame {r['frame']:5d} track {r['track_id']} {r['text'] or '-':10s} "
                             f"conf {r['confidence']} box {r['aspect']}:1 h {r['height']} hidden {r['hidden']}")
    if vehicle is None and result["unmatched_reads"]:
        lines.append(f"{len(result['unmatched_reads'])} reads matched no vehicle")
    return "\n".join(lines)
