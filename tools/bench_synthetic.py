"""``alpr-topo bench synthetic``: plate events of a whole topology against the synthetic scene's truth.

The topology (default ``topologies/cpu.yaml``) runs for real, one process per stage, with its
``source.synthetic`` stage set to the scene asked for, ``dedup.plates`` in test mode (each event
names the vehicle its best read came from) and ``publish.local`` writing into a temporary folder.
The same scene is then replayed without drawing to list the vehicles that showed their plate.

* ``vehicles``: vehicles whose whole plate (no one in front of it, inside the frame) was in view
  in at least ``min_visible_frames`` frames. Events of the other vehicles that showed some of
  their plate are counted apart (``unreadable_events``) and left out of the rates below; events
  of a vehicle that never showed any of it, or of none, are wrong.
* ``event_recall``: share of those with an event carrying their plate text exactly.
* ``precision``: share of events that are right (the text of the vehicle they came from, and
  the first such event of that vehicle).
* ``duplicate_rate``: events beyond the first right one of a vehicle, per event.
* ``wrong_text_rate``: events whose text is not the plate of the vehicle they came from
  (or that came from no vehicle), per event.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from .bench_run import DEFAULT_TOPOLOGY, bench_name, run_to_end

MIN_VISIBLE_FRAMES = 3


def truth_vehicles(params: dict[str, Any], min_visible_frames: int = MIN_VISIBLE_FRAMES
                   ) -> tuple[dict[int, str], dict[int, str]]:
    """Vehicle id -> plate text of the vehicles whose whole plate the scene showed in at least
    ``min_visible_frames`` frames (the readable ones), and of every vehicle that showed any part
    of its plate (a reader may publish what it read of those)."""
    from ..stages.synth_scene import SceneRenderer

    renderer = SceneRenderer(params)
    frames: dict[int, int] = {}
    plates: dict[int, str] = {}
    while not renderer.finished:
        _, truth = renderer.render(draw=False)
        for obj in truth:
            if obj.get("plate_box") is not None and obj.get("occlusion", 1.0) < 1.0:
                plates[obj["vehicle_id"]] = obj["plate"]
                if _whole(obj, renderer.width, renderer.height):
                    frames[obj["vehicle_id"]] = frames.get(obj["vehicle_id"], 0) + 1
    return {vid: plates[vid] for vid, n in frames.items() if n >= min_visible_frames}, plates


def _whole(obj: dict[str, Any], width: int, height: int) -> bool:
    """The plate is all there: nobody in front of it and inside the frame."""
    x1, y1, x2, y2 = obj["plate_box"]
    return not obj.get("occlusion") and x1 > 0 and y1 > 0 and x2 < width - 1 and y2 < height - 1


def set_scene(data: dict[str, Any], source: str, seconds: float, vehicles: int, seed: int,
              scene: dict[str, Any] | None) -> None:
    """Set the scene of the topology's ``source`` stage (its data before loading): the same
    options and seed give the same frames, which ``bench replay`` relies on to show what a
    ``bench synthetic`` run read."""
    from ..core.overrides import set_params

    set_params(data, source, **(scene or {}))
    set_params(data, source, duration_s=seconds, vehicles=vehicles, seed=seed, count=0)


def score(events: list[dict[str, Any]], vehicles: dict[int, str], shown: dict[int, str] | None = None) -> dict[str, Any]:
    """Recall, precision, duplicates and wrong texts of ``events`` against ``vehicles``.

    Events of vehicles in ``shown`` but not in ``vehicles`` (some of their plate was in view, never
    all of it: always partly hidden or cut by the frame) are counted apart as
    ``unreadable_events`` and left out of the rates: no reader could have known their text. An
    event of a vehicle that showed none of its plate, or of no vehicle, is wrong.
    """
    right: dict[int, int] = {}
    wrong: list[dict[str, Any]] = []
    unreadable: list[dict[str, Any]] = []
    for ev in events:
        extras = ev.get("extras") or {}
        vid = extras.get("truth_vehicle_id")
        vid = int(vid) if vid not in (None, "") else None
        text = (ev.get("plate") or {}).get("normalized_text") or ""
        entry = {"vehicle_id": vid, "truth": extras.get("truth_plate"), "read": text}
        if vid is not None and vehicles.get(vid) == text:
            right[vid] = right.get(vid, 0) + 1
        elif vid is not None and vid not in vehicles and shown and vid in shown:
            unreadable.append(entry)
        else:
            wrong.append(entry)
    n = len(events) - len(unreadable)
    duplicates = sum(count - 1 for count in right.values())
    misses = [{"vehicle_id": vid, "truth": plate,
               "read": [w["read"] for w in wrong if w["vehicle_id"] == vid]}
              for vid, plate in sorted(vehicles.items()) if vid not in right]
    return {
        "vehicles": len(vehicles),
        "events": n,
        "event_recall": round(len(right) / len(vehicles), 4) if vehicles else None,
        "precision": round(len(right) / n, 4) if n else None,
        "duplicate_events": duplicates,
        "duplicate_rate": round(duplicates / n, 4) if n else 0.0,
        "wrong_text_events": len(wrong),
        "wrong_text_rate": round(len(wrong) / n, 4) if n else 0.0,
        "unreadable_events": len(unreadable),
        "misses": misses,
        "wrong": wrong,
        "unreadable": unreadable,
    }


def run(topology: str | None = None, seconds: float = 60.0, vehicles: int = 16, seed: int = 1,
        scene: dict[str, Any] | None = None, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run ``topology`` on a synthetic scene and score its events; the JSON object of the command.
    ``scene``: other parameters of its ``source.synthetic`` stage (exposure, light, plate sizes)."""
    from ..core.overrides import load_changed, set_params, stages_of_type
    from ..stages import events as ev_mod

    say = progress or (lambda _msg: None)
    path = str(topology or DEFAULT_TOPOLOGY)
    out = Path(tempfile.mkdtemp(prefix="alpr-bench-synth-"))

    def change(data: dict[str, Any]) -> None:
        sources = stages_of_type(data, "source.synthetic")
        dedups = stages_of_type(data, "dedup.plates")
        sinks = stages_of_type(data, "publish.local")
        if len(sources) != 1 or not dedups or len(sinks) != 1:
            raise ValueError(f"{path}: bench synthetic needs one source.synthetic, a dedup.plates and one "
                             f"publish.local stage (found {len(sources)}, {len(dedups)}, {len(sinks)})")
        data["name"] = bench_name("synthetic")
        set_scene(data, sources[0], seconds, vehicles, seed, scene)
        for name in dedups:
            set_params(data, name, test_mode=True)
        set_params(data, sinks[0], path=str(out / "events.jsonl"), print_events=False, csv=False, images=False)

    topo = load_changed(path, change)
    source = next(name for name in topo.order() if topo.stages[name].type == "source.synthetic")
    params = topo.stages[source].params
    say(f"bench synthetic: {path}, {seconds:g} s scene at {params['fps']:g} fps, {vehicles} vehicles, seed {seed}")
    result = run_to_end(topo, say, source, round(seconds * float(params["fps"])))
    records = list(ev_mod.iter_jsonl((out / "events.jsonl").read_text(encoding="utf-8").splitlines())) \
        if (out / "events.jsonl").exists() else []
    events = [r for r in records if not ev_mod.is_update(r)]
    say(f"bench synthetic: {len(events)} events in {result.seconds:.0f} s; replaying the scene for its truth")
    scored = score(events, *truth_vehicles(params))
    frames = result.total(source, "frames_out")
    return {
        "topology": path,
        **scored,
        "updates": len(records) - len(events),
        "frames": frames,
        "seconds": round(result.seconds, 1),
        "frames_per_s": round(frames / result.seconds, 2) if result.seconds else None,
        "scene": {"seconds": seconds, "fps": params["fps"], "vehicles": vehicles, "seed": seed,
                  "width": params["width"], "height": params["height"], "shutter_s": params.get("shutter_s"),
                  **(scene or {})},
        "targets": {"event_recall_min": 0.98, "duplicate_rate_max": 0.02, "wrong_text_rate_max": 0.01},
        "output": str(out),
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def main_text(r: dict[str, Any]) -> str:
    lines = [
        f"{r['topology']}: {r['frames']} frames in {r['seconds']} s ({r['frames_per_s']} frames/s)",
        f"vehicles {r['vehicles']}, events {r['events']} (+{r['updates']} updates, "
        f"{r['unreadable_events']} of vehicles whose plate was never whole in view)",
        f"event recall {r['event_recall']}  precision {r['precision']}  "
        f"duplicates {r['duplicate_rate']}  wrong text {r['wrong_text_rate']}",
    ]
    for m in r["misses"]:
        lines.append(f"  missed vehicle {m['vehicle_id']} {m['truth']}: read {', '.join(m['read']) or 'nothing'}")
    for w in r["wrong"]:
        lines.append(f"  wrong event: read {w['read']} for vehicle {w['vehicle_id']} ({w['truth']})")
    return "\n".join(lines)
