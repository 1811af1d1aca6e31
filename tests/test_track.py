"""``track.bytetrack``: ByteTrack on synthetic traffic with known identities.

The scenes are generated here from a seed: vehicles driving along crossing lanes, vehicles
approaching the camera (they and their plates grow), vehicles crossing diagonally with mild
acceleration; vehicles hide each other where they cross, some pass behind an obstacle for 5-20
frames (with low-score detections while half hidden), and the detector jitters boxes, misses
~10% of the objects, reports some with low scores and adds false positives. The tests report
CLEAR-MOT metrics (``-s`` shows them) and assert targets: at most 1 identity switch per 100
ground-truth tracks on the default scene of more than 200 vehicles (and as many plates).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pydantic
import pytest

from alpr_topo.core.envelope import Envelope, InlineFrame
from alpr_topo.core.testing import StageHarness
from alpr_topo.stages.bytetrack import ByteTracker, TrackerConfig, assign, iou_matrix
from alpr_topo.stages.kalman import BoxKalmanFilter, cxcywh_to_xyxy, xyxy_to_cxcywh
from alpr_topo.stages.track import ByteTrackStage
from alpr_topo.tools.trackmetrics import MotAccumulator, TrackMetrics, evaluate

WIDTH, HEIGHT = 1920, 1080

# -- synthetic traffic ---------------------------------------------------------------------------

LANES = [(280.0, 1), (365.0, -1), (450.0, 1), (535.0, -1)]  # (centre y, direction): adjacent lanes overlap
APPROACH_X = [560.0, 960.0, 1360.0]


@dataclass
class Vehicle:
    vid: int
    family: str
    cx: float
    cy: float
    w: float
    h: float
    vx: float
    vy: float
    ax: float = 0.0
    ay: float = 0.0
    growth: float = 0.0  # relative size change per frame (approaching vehicles)
    plate_dx: float = 0.0  # plate centre offset, fraction of the vehicle width
    plate_aspect: float = 2.0
    age: int = 0
    hidden: tuple[int, int] = (-1, -1)  # frames of age [start, end) behind an obstacle
    unseen: dict[str, int] = field(default_factory=lambda: {"vehicle": 0, "plate": 0})  # hidden for so long
    lane: int = -1

    def box(self) -> list[float]:
        return [self.cx - self.w / 2, self.cy - self.h / 2, self.cx + self.w / 2, self.cy + self.h / 2]

    def plate_box(self) -> list[float]:
        pw = (0.25 if self.family == "approach" else 0.2) * self.w
        ph = pw / self.plate_aspect
        px = self.cx + self.plate_dx * self.w
        py = self.cy + self.h / 2 - 0.22 * self.h
        return [px - pw / 2, py - ph / 2, px + pw / 2, py + ph / 2]

    def step(self) -> None:
        self.age += 1
        self.vx += self.ax
        self.vy += self.ay
        if self.growth:
            scale = 1.0 + self.growth
            self.w *= scale
            self.h *= scale
            self.vy *= scale  # perspective: nearer means faster on screen
        self.cx += self.vx
        self.cy += self.vy

    def gone(self) -> bool:
        x1, y1, x2, y2 = self.box()
        return x2 < -5 or x1 > WIDTH + 5 or y2 < -5 or y1 > HEIGHT + 5 or self.w > 450


@dataclass
class Frame:
    frame_id: int
    detections: list[dict[str, Any]]
    truth: dict[str, dict[int, list[float]]]  # kind -> {object id: visible box}


@dataclass
class SceneConfig:
    frames: int = 3300
    spawn_rate: float = 0.2  # vehicles trying to enter per frame (some wait for a free lane)
    miss_rate: float = 0.10
    low_score_rate: float = 0.08  # a visible object reported with a score below 0.5
    hide_rate: float = 0.35  # vehicles passing behind an obstacle once
    hide_frames: tuple[int, int] = (5, 20)
    max_hidden: int = 22  # no object stays hidden longer (the tracker's buffer is 30 frames)
    fp_vehicle: float = 0.4  # false positives per frame (Poisson mean)
    fp_plate: float = 0.6
    jitter: float = 0.02  # box noise, fraction of the size (per coordinate)
    families: tuple[float, float, float] = (0.5, 0.35, 0.15)  # lane, approach, diagonal


def clip(box: list[float]) -> list[float]:
    return [min(max(box[0], 0.0), WIDTH), min(max(box[1], 0.0), HEIGHT),
            min(max(box[2], 0.0), WIDTH), min(max(box[3], 0.0), HEIGHT)]


def area(box: list[float]) -> float:
    return max(box[2] - box[0], 0.0) * max(box[3] - box[1], 0.0)


def coverage(box: list[float], others: list[list[float]]) -> float:
    """The largest fraction of ``box`` hidden by any single box of ``others``."""
    best = 0.0
    for o in others:
        iw = min(box[2], o[2]) - max(box[0], o[0])
        ih = min(box[3], o[3]) - max(box[1], o[1])
        if iw > 0 and ih > 0:
            best = max(best, iw * ih)
    return best / max(area(box), 1e-9)


def spawn(rng: np.random.Generator, vid: int, cfg: SceneConfig, vehicles: list[Vehicle]) -> Vehicle | None:
    family = rng.choice(["lane", "approach", "diagonal"], p=list(cfg.families))
    if family == "lane":
        lane = int(rng.integers(len(LANES)))
        cy, direction = LANES[lane]
        w = float(rng.uniform(160, 260))
        speed = float(rng.uniform(6, 12))
        cx = -w / 2 if direction > 0 else WIDTH + w / 2
        ahead = [v for v in vehicles if v.lane == lane]
        if any(abs(v.cx - cx) < (v.w + w) / 2 + 400 for v in ahead):
            return None  # the lane's entry is taken
        speed = min([speed, *(abs(v.vx) for v in ahead)])  # never run into the car ahead
        v = Vehicle(vid, family, cx, cy, w, w * float(rng.uniform(0.45, 0.55)), direction * speed, 0.0, lane=lane)
    elif family == "approach":
        lane = int(rng.integers(len(APPROACH_X)))
        w = float(rng.uniform(50, 80))
        cx, cy = APPROACH_X[lane] + float(rng.normal(0, 20)), 640.0
        for v in vehicles:
            if v.lane == 10 + lane and v.box()[1] < cy + 250:
                return None
        v = Vehicle(vid, family, cx, cy, w, w * 0.75, float(rng.normal(0, 0.3)), float(rng.uniform(1.2, 2.0)),
                    growth=float(rng.uniform(0.006, 0.011)), lane=10 + lane)
    else:
        w = float(rng.uniform(120, 200))
        speed = float(rng.uniform(5, 10))
        down = rng.random() < 0.5  # from the top or the bottom edge, across the lanes at an angle
        cx = float(rng.uniform(300, 1600))
        cy = -w / 3 if down else HEIGHT + w / 3
        angle = float(rng.uniform(-0.6, 0.6)) + (math.pi / 2 if down else -math.pi / 2)
        if any(math.hypot(v.cx - cx, v.cy - cy) < w + v.w for v in vehicles):
            return None  # the way in is taken (vehicles do not appear inside each other)
        v = Vehicle(vid, family, cx, cy, w, w * 0.6, speed * math.cos(angle), speed * math.sin(angle),
                    ax=float(rng.uniform(-0.01, 0.01)), ay=float(rng.uniform(-0.01, 0.01)))
    v.plate_dx = float(rng.uniform(-0.25, 0.25)) if v.family != "approach" else float(rng.normal(0, 0.03))
    v.plate_aspect = float(rng.uniform(2.0, 4.5))
    if rng.random() < cfg.hide_rate:
        length = int(rng.integers(cfg.hide_frames[0], cfg.hide_frames[1] + 1))
        start = int(rng.integers(25, 120))
        v.hidden = (start, start + length)
    return v


def noisy(rng: np.random.Generator, box: list[float], jitter: float, min_px: float) -> list[float]:
    sx, sy = max(jitter * (box[2] - box[0]), min_px), max(jitter * (box[3] - box[1]), min_px)
    n = rng.normal(0, 1, 4)
    return [box[0] + float(n[0]) * sx, box[1] + float(n[1]) * sy, box[2] + float(n[2]) * sx, box[3] + float(n[3]) * sy]


def random_box(rng: np.random.Generator, kind: str) -> list[float]:
    if kind == "vehicle":
        w = float(rng.uniform(80, 250))
        h = w * float(rng.uniform(0.5, 0.8))
    else:
        w = float(rng.uniform(20, 70))
        h = w / float(rng.uniform(2, 4.5))
    x, y = float(rng.uniform(0, WIDTH - w)), float(rng.uniform(0, HEIGHT - h))
    return [x, y, x + w, y + h]


def make_scene(seed: int = 7, cfg: SceneConfig | None = None) -> list[Frame]:
    """Frames with noisy detections (vehicles and plates) and the visible truth per frame."""
    cfg = cfg or SceneConfig()
    rng = np.random.default_rng(seed)
    vehicles: list[Vehicle] = []
    frames: list[Frame] = []
    next_vid = 1
    for frame_id in range(cfg.frames):
        if rng.random() < cfg.spawn_rate:
            v = spawn(rng, next_vid, cfg, vehicles)
            if v is not None:
                vehicles.append(v)
                next_vid += 1
        for v in vehicles:
            v.step()
        vehicles = [v for v in vehicles if not v.gone()]

        # depth order: the lower a vehicle's bottom edge, the nearer the camera
        order = sorted(vehicles, key=lambda v: -v.box()[3])
        truth: dict[str, dict[int, list[float]]] = {"vehicle": {}, "plate": {}}
        dets: list[dict[str, Any]] = []
        front: list[list[float]] = []
        for v in order:
            full = v.box()
            box = clip(full)
            plate_full = v.plate_box()
            plate = clip(plate_full)
            hide_start, hide_end = v.hidden
            behind = hide_start <= v.age < hide_end
            near_hide = hide_start - 3 <= v.age < hide_end + 3 and not behind
            cover = coverage(box, front)
            plate_cover = coverage(plate, front)
            front.append(box)

            in_view = area(box) >= 0.4 * area(full)
            # other vehicles hide this one where they overlap it; never for longer than
            # max_hidden frames in a row (then the view through a gap shows it, barely)
            v_visible = in_view and not behind and cover < 0.6
            if in_view and not v_visible and v.unseen["vehicle"] >= cfg.max_hidden:
                v_visible, cover = True, 0.5
            v.unseen["vehicle"] = 0 if v_visible else v.unseen["vehicle"] + 1
            if v_visible:
                truth["vehicle"][v.vid] = box
            vehicle_index = None
            if v_visible and rng.random() >= cfg.miss_rate:
                score = float(rng.uniform(0.55, 0.98))
                if near_hide or cover >= 0.3 or rng.random() < cfg.low_score_rate:
                    score = float(rng.uniform(0.15, 0.45))
                vehicle_index = len(dets)
                dets.append({"box": clip(noisy(rng, box, cfg.jitter, 1.0)), "score": score, "kind": "vehicle",
                             "label": "car", "detector": "synthetic", "vehicle": None})

            p_in_view = area(plate) >= 0.9 * area(plate_full)
            p_visible = p_in_view and not behind and plate_cover < 0.5
            if p_in_view and not p_visible and v.unseen["plate"] >= cfg.max_hidden:
                p_visible, plate_cover = True, 0.4
            v.unseen["plate"] = 0 if p_visible else v.unseen["plate"] + 1
            if p_visible:
                truth["plate"][v.vid] = plate
            if p_visible and rng.random() >= cfg.miss_rate:
                score = float(rng.uniform(0.5, 0.97))
                if near_hide or plate_cover >= 0.2 or rng.random() < cfg.low_score_rate:
                    score = float(rng.uniform(0.15, 0.45))
                dets.append({"box": noisy(rng, plate, 2 * cfg.jitter, 0.7), "score": score, "kind": "plate",
                             "label": "plate", "detector": "synthetic", "vehicle": vehicle_index})
        for kind, rate in (("vehicle", cfg.fp_vehicle), ("plate", cfg.fp_plate)):
            for _ in range(rng.poisson(rate)):
                dets.append({"box": random_box(rng, kind), "score": float(rng.uniform(0.1, 0.7)), "kind": kind,
                             "label": "car" if kind == "vehicle" else "plate", "detector": "synthetic",
                             "vehicle": None})
        order_idx = rng.permutation(len(dets))  # detectors report in no particular order
        remap = {int(old): new for new, old in enumerate(order_idx)}
        shuffled = []
        for old in order_idx:
            d = dets[int(old)]
            if d["vehicle"] is not None:
                d["vehicle"] = remap[d["vehicle"]]
            shuffled.append(d)
        frames.append(Frame(frame_id, shuffled, truth))
    return frames


def vehicle_count(frames: list[Frame]) -> int:
    return len({vid for f in frames for vid in f.truth["vehicle"]})


# -- running the stage ---------------------------------------------------------------------------


@dataclass
class Result:
    metrics: dict[str, TrackMetrics]
    outputs: list[Envelope] = field(default_factory=list)
    counters: dict[str, float] = field(default_factory=dict)


def run_scene(frames: list[Frame], params: dict[str, Any] | None = None, camera_id: str = "cam1",
              keep_outputs: bool = False, size: tuple[int, int] = (WIDTH, HEIGHT)) -> Result:
    """Every frame through the stage in a StageHarness, scored against the truth per kind.

    The tracker reads no pixels, only the frame's size (boxes are cut at the image border), so
    the envelopes carry an inline frame of that shape without its bytes instead of a real one.
    """
    buffer = ByteTrackStage.Params(**(params or {})).buffer_frames()
    accs = {"vehicle": MotAccumulator(0.5, gap_frames=buffer), "plate": MotAccumulator(0.5, gap_frames=buffer)}
    outputs = []
    shape = (size[1], size[0], 3)
    with StageHarness("track.bytetrack", params or {}) as h:
        for f in frames:
            env = Envelope(camera_id=camera_id, frame_id=f.frame_id, frame=InlineFrame(b"", shape, "uint8"),
                           detections=[dict(d) for d in f.detections])
            [out] = h.process(env)
            for kind, acc in accs.items():
                pred = {t["track_id"]: t["box"] for t in out.tracks if t["kind"] == kind}
                acc.update(f.truth[kind], pred)
            if keep_outputs:
                outputs.append(out)
        counters = dict(h.counters)
    return Result({k: a.summary() for k, a in accs.items()}, outputs, counters)


def report(title: str, result: Result) -> None:
    print(f"\n{title}")
    for kind, m in result.metrics.items():
        print(f"  {kind:8s} {m}")
    print(f"  counters {result.counters}")


@pytest.fixture(scope="module")
def default_scene() -> list[Frame]:
    return make_scene(seed=7)


# -- the default scene: identity switches, MOTA --------------------------------------------------

#: The reference ByteTrack association (what the paper's code does), for comparison.
REFERENCE = {"second_match_lost": False, "center_gate": 0.0, "plate_vehicle_gate": False, "low_rescue_margin": 0.0}


def test_default_scene_identity_switches(default_scene: list[Frame]) -> None:
    result = run_scene(default_scene, keep_outputs=True)
    report(f"default scene (seed 7, {len(default_scene)} frames), default parameters", result)
    vehicles, plates = result.metrics["vehicle"], result.metrics["plate"]
    assert vehicles.gt_tracks >= 200 and plates.gt_tracks >= 200
    assert vehicles.idsw_per_100 <= 1.0, vehicles
    assert plates.idsw_per_100 <= 1.0, plates
    assert vehicles.mota >= 0.85 and plates.mota >= 0.85
    assert vehicles.idf1 >= 0.9 and plates.idf1 >= 0.9
    assert vehicles.mostly_lost == 0 and plates.mostly_lost == 0
    # ids: one kind each, unique within the camera, consecutive (no id spent on a track that
    # was never confirmed), and every one counted as started
    kinds_of: dict[int, set[str]] = {}
    for out in result.outputs:
        for t in out.tracks:
            kinds_of.setdefault(t["track_id"], set()).add(t["kind"])
    assert all(len(k) == 1 for k in kinds_of.values())
    ids = sorted(kinds_of)
    assert ids == list(range(1, len(ids) + 1))
    assert result.counters["tracks_started"] == len(ids)
    # plates name the track of their vehicle: the one the vehicle's detection carries (or, while
    # that detection has none, the vehicle track the plate's track was last seen with)
    linked = checked = 0
    for out in result.outputs:
        for d in out.detections:
            if d["kind"] == "plate" and d.get("vehicle") is not None:
                checked += 1
                own = out.detections[d["vehicle"]]["track_id"]
                if own is not None:
                    assert d["vehicle_track_id"] == own
                linked += d["vehicle_track_id"] is not None and (d["vehicle_track_id"] == own or own is None)
    assert checked and linked / checked > 0.9


def test_other_seeds_stay_below_target() -> None:
    """Other seeds, so the default one is not a lucky draw. Where two vehicles cross so that
    one box covers the other, one detection may stand for both: such rare cases give a switch."""
    totals = {"vehicle": [0, 0], "plate": [0, 0]}
    for seed in (11, 23, 42):
        result = run_scene(make_scene(seed, SceneConfig(frames=1200)))
        report(f"scene seed {seed}, 1200 frames", result)
        for kind, m in result.metrics.items():
            totals[kind][0] += m.id_switches
            totals[kind][1] += m.gt_tracks
    for kind, (idsw, tracks) in totals.items():
        print(f"  {kind}: {idsw} switches over {tracks} tracks ({100 * idsw / tracks:.2f} per 100)")
        assert 100 * idsw / tracks <= 1.5
    idsw, tracks = (sum(v[i] for v in totals.values()) for i in (0, 1))
    print(f"  all: {idsw} switches over {tracks} tracks ({100 * idsw / tracks:.2f} per 100)")
    assert 100 * idsw / tracks <= 1.0


def test_alpr_options_beat_reference_bytetrack() -> None:
    """The additions (lost tracks in the second association, centre fallback for small boxes,
    plates bound to their vehicle, low-score rescue) against the reference association."""
    frames = make_scene(3, SceneConfig(frames=1500))
    ours = run_scene(frames)
    reference = run_scene(frames, REFERENCE)
    report("scene seed 3: default parameters", ours)
    report(f"scene seed 3: reference ByteTrack association {REFERENCE}", reference)
    for kind in ("vehicle", "plate"):
        assert ours.metrics[kind].id_switches <= reference.metrics[kind].id_switches
        assert ours.metrics[kind].mota >= reference.metrics[kind].mota
    assert ours.metrics["plate"].id_switches < reference.metrics["plate"].id_switches


def test_harder_noise_is_reported() -> None:
    """More misses, jitter and clutter: worse, but no collapse (reported for benchmarks)."""
    cfg = SceneConfig(frames=1200, miss_rate=0.2, jitter=0.04, fp_vehicle=1.0, fp_plate=1.5)
    result = run_scene(make_scene(5, cfg))
    report("hard scene (seed 5): 20% misses, 4% jitter, more clutter", result)
    for m in result.metrics.values():
        assert m.idsw_per_100 <= 6.0
        assert m.mota >= 0.7


# -- small deterministic scenes ------------------------------------------------------------------


def det(box: list[float], score: float = 0.9, kind: str = "vehicle", vehicle: int | None = None,
        label: str | None = None) -> dict[str, Any]:
    return {"box": [float(v) for v in box], "score": score, "kind": kind,
            "label": label or ("car" if kind == "vehicle" else "plate"), "detector": "test", "vehicle": vehicle}


def moving(frame: int, x0: float = 100.0, y0: float = 300.0, vx: float = 8.0, vy: float = 0.0,
           w: float = 120.0, h: float = 60.0) -> list[float]:
    x, y = x0 + vx * frame, y0 + vy * frame
    return [x, y, x + w, y + h]


def track_ids(h: StageHarness, frames: list[tuple[int, list[dict[str, Any]]]], camera_id: str = "cam") -> list[list[Any]]:
    """Run (frame id, detections) pairs; the track ids of each frame's detections, in order."""
    out = []
    for frame_id, dets in frames:
        [env] = h.process(Envelope(camera_id=camera_id, frame_id=frame_id, detections=dets))
        out.append([d.get("track_id") for d in env.detections])
    return out


@pytest.mark.parametrize("gap, same", [(5, True), (20, True), (29, True), (30, False), (45, False)])
def test_occlusion_shorter_than_buffer_keeps_the_id(gap: int, same: bool) -> None:
    """Seen for 20 frames, hidden for ``gap`` frames, seen again: the id survives a gap shorter
    than track_buffer (30 frames) and is replaced after a longer one."""
    frames = [(f, [det(moving(f))] if not 20 <= f < 20 + gap else []) for f in range(20 + gap + 10)]
    with StageHarness("track.bytetrack") as h:
        ids = track_ids(h, frames)
        counters = h.counters
    before = {i[0] for i in ids[5:20]}
    after = {i[0] for i in ids[20 + gap + 2:]}
    print(f"\nhidden {gap} frames: id {before} before, {after} after")
    assert len(before) == 1 and None not in before and len(after) == 1 and None not in after
    assert (before == after) is same
    assert counters["tracks_started"] == (1 if same else 2)


def test_track_buffer_scales_with_fps() -> None:
    """track_buffer is meant at 30 fps: at 15 fps the same 30 frames are twice as long."""
    assert ByteTrackStage.Params(fps=15).buffer_frames() == 15
    assert ByteTrackStage.Params(fps=60, track_buffer=30).buffer_frames() == 60
    frames = [(f, [det(moving(f))] if not 20 <= f < 40 else []) for f in range(50)]  # hidden 20 frames
    with StageHarness("track.bytetrack", {"fps": 15}) as h:
        ids = track_ids(h, frames)
    assert ids[19][0] != ids[45][0]
    with StageHarness("track.bytetrack", {"fps": 60}) as h:
        ids = track_ids(h, frames)
    assert ids[19][0] == ids[45][0]


def test_lost_tracks_are_reported_on_request() -> None:
    frames = [(f, [det(moving(f))] if not 10 <= f < 15 else []) for f in range(20)]
    with StageHarness("track.bytetrack", {"report_lost": True}) as h:
        outs = [h.process(Envelope(camera_id="c", frame_id=f, detections=d))[0] for f, d in frames]
    lost = outs[12].tracks
    assert [t["state"] for t in lost] == ["lost"] and lost[0]["frames_lost"] == 3
    predicted, truth = lost[0]["box"], moving(12)
    assert abs(predicted[0] - truth[0]) < 3 and abs(predicted[2] - truth[2]) < 3  # the Kalman prediction
    assert outs[15].tracks[0]["state"] == "tracked" and outs[15].tracks[0]["track_id"] == lost[0]["track_id"]
    with StageHarness("track.bytetrack") as h:
        outs = [h.process(Envelope(camera_id="c", frame_id=f, detections=d))[0] for f, d in frames]
    assert outs[12].tracks == []


def test_low_score_detections_extend_tracks_but_never_start_them() -> None:
    """ByteTrack's point: a half-hidden object (low score) keeps its track; low-score clutter
    never makes one."""
    frames = []
    for f in range(40):
        a = det(moving(f), score=0.9 if not 15 <= f < 30 else 0.3)  # partly occluded for 15 frames
        b = det(moving(f, y0=700), score=0.35)  # never sure
        frames.append((f, [a, b]))
    with StageHarness("track.bytetrack") as h:
        ids = track_ids(h, frames)
    assert len({i[0] for i in ids[1:]}) == 1 and ids[20][0] is not None
    assert all(i[1] is None for i in ids)
    with StageHarness("track.bytetrack", {"track_low_thresh": 0.5}) as h:  # low scores ignored
        ids = track_ids(h, frames)
    assert all(i[0] is None for i in ids[15:30])


def test_min_hits_and_one_frame_false_positives() -> None:
    frames = [(0, [det(moving(0))]), (1, [det(moving(1)), det([900, 100, 1000, 160])]),
              (2, [det(moving(2))]), (3, [det(moving(3)), det([1500, 800, 1600, 860])])]
    with StageHarness("track.bytetrack") as h:
        ids = track_ids(h, frames)
        counters = h.counters
    assert ids == [[None], [1, None], [1], [1, None]]  # confirmed on its second hit; clutter never
    assert counters["tracks_started"] == 1
    with StageHarness("track.bytetrack", {"min_hits": 1}) as h:
        assert track_ids(h, frames[:1]) == [[1]]
    with StageHarness("track.bytetrack", {"min_hits": 3}) as h:
        assert track_ids(h, frames) == [[None], [None, None], [1], [1, None]]


def test_new_tracks_need_new_track_thresh() -> None:
    frames = [(f, [det(moving(f), score=0.55)]) for f in range(5)]  # high (>= 0.5) but < 0.6
    with StageHarness("track.bytetrack") as h:
        assert all(i == [None] for i in track_ids(h, frames))
    with StageHarness("track.bytetrack", {"new_track_thresh": 0.5}) as h:
        assert track_ids(h, frames)[1:] == [[1]] * 4


def test_crossing_vehicles_keep_their_ids() -> None:
    """Two cars in opposite directions pass through each other (IoU up to ~0.7); the one
    behind is reported with a low score while it is mostly hidden."""
    rng = np.random.default_rng(1)
    frames = []
    for f in range(80):
        a = moving(f, x0=100, y0=300, vx=10)
        b = moving(f, x0=900, y0=320, vx=-10)
        overlap = iou_matrix(np.array([a]), np.array([b]))[0, 0]
        jitter = lambda box: [v + float(rng.normal(0, 1.5)) for v in box]  # noqa: E731
        frames.append((f, [det(jitter(a)), det(jitter(b), score=0.3 if overlap > 0.3 else 0.85)]))
    with StageHarness("track.bytetrack") as h:
        ids = track_ids(h, frames)
    assert {i[0] for i in ids[1:]} == {1} and {i[1] for i in ids[1:]} == {2}


@pytest.mark.parametrize("center_gate, expect_stable", [(2.0, True), (0.0, False)])
def test_small_fast_plate(center_gate: float, expect_stable: bool) -> None:
    """A 36x12 plate moving 15 px per frame downwards: its own height or more each frame, so
    consecutive boxes do not overlap at all until the tracker knows the speed. The centre
    fallback for tiny boxes keeps one id; IoU alone never confirms a track."""
    frames = [(f, [det(moving(f, x0=600, y0=100, vx=1, vy=15, w=36, h=12), kind="plate")]) for f in range(40)]
    with StageHarness("track.bytetrack", {"center_gate": center_gate}) as h:
        ids = [i[0] for i in track_ids(h, frames)]
    print(f"\ncenter_gate {center_gate}: plate ids {sorted(set(map(str, ids)))}")
    if expect_stable:
        assert ids[0] is None and set(ids[1:]) == {1}
    else:
        assert len({i for i in ids if i is not None}) != 1 or ids.count(None) > 5


def test_growing_plate_approaching_the_camera() -> None:
    """A plate growing 3% per frame while it comes nearer, the same id from far to near."""
    frames = []
    cx, cy, w = 960.0, 500.0, 30.0
    for f in range(70):
        h_ = w / 2.5
        frames.append((f, [det([cx - w / 2, cy - h_ / 2, cx + w / 2, cy + h_ / 2], kind="plate", score=0.8)]))
        cy += 2 + 0.15 * f
        w *= 1.03
    with StageHarness("track.bytetrack") as h:
        ids = [i[0] for i in track_ids(h, frames)]
    assert set(ids[1:]) == {1}


def test_frame_gaps_predict_across_the_missing_frames() -> None:
    """A 60-pixel car moving 10 px/frame; the source drops frames 10..19: the Kalman filter
    predicts over the 11 frames of the gap (110 px, far beyond the box) and keeps the id."""
    frames = [(f, [det(moving(f, w=60, vx=10))]) for f in list(range(10)) + list(range(20, 30))]
    with StageHarness("track.bytetrack") as h:
        ids = track_ids(h, frames)
        counters = h.counters
    assert {i[0] for i in ids[1:]} == {1}
    assert counters["frame_gaps"] == 1
    # a gap longer than the buffer ends the track: the object is new
    frames = [(f, [det(moving(f, w=60, vx=10))]) for f in list(range(10)) + list(range(60, 70))]
    with StageHarness("track.bytetrack") as h:
        ids = track_ids(h, frames)
        counters = h.counters
    assert ids[9] == [1] and ids[11] == [2]
    assert counters["tracks_ended"] == 1


def test_cameras_are_independent() -> None:
    """Two cameras interleaved, the same boxes in both: separate tracks, ids counted per camera,
    one camera's frame ids do not disturb the other's."""
    with StageHarness("track.bytetrack") as h:
        seen: dict[str, list[Any]] = {"a": [], "b": []}
        for f in range(30):
            for cam, offset in (("a", 0), ("b", 1000)):  # camera b runs 1000 frame ids ahead
                dets = [det(moving(f)), det(moving(f, y0=600)), det(moving(f, x0=130, y0=330, w=30, h=10), kind="plate", vehicle=0)]
                [env] = h.process(Envelope(camera_id=cam, frame_id=f + offset, detections=dets))
                seen[cam].append(env)
            if f == 15:  # camera b only: a third car
                [env] = h.process(Envelope(camera_id="b", frame_id=f + offset, detections=dets + [det(moving(f, y0=900))]))
    for cam in ("a", "b"):
        last = seen[cam][-1]
        ids = [d["track_id"] for d in last.detections]
        assert sorted(ids) == [1, 2, 3], (cam, ids)  # vehicles and plate share one id space per camera
        assert last.detections[2]["vehicle_track_id"] == last.detections[0]["track_id"]
        assert {t["track_id"] for t in last.tracks} == {1, 2, 3}
    assert len(h.stage.cameras) == 2


def test_camera_restart_and_forgetting_idle_cameras() -> None:
    clock = [1000.0]
    with StageHarness("track.bytetrack", {"camera_idle_s": 60, "max_cameras": 2}) as h:
        h.stage.clock = lambda: clock[0]
        assert track_ids(h, [(f, [det(moving(f))]) for f in range(5)], "a")[-1] == [1]
        # frame ids start again: the source restarted, old tracks cannot continue; ids go on
        assert track_ids(h, [(f, [det(moving(f))]) for f in range(3)], "a")[-1] == [2]
        assert h.counters["camera_resets"] == 1 and h.counters["tracks_ended"] == 1
        # idle for longer than camera_idle_s: forgotten (memory), ids still never reused
        clock[0] += 61
        track_ids(h, [(0, [])], "b")
        assert set(h.stage.cameras) == {"b"} and h.counters["cameras_forgotten"] == 1
        assert track_ids(h, [(f, [det(moving(f))]) for f in range(100, 103)], "a")[-1] == [3]
        # at most max_cameras: the least recently seen is dropped
        track_ids(h, [(0, [])], "c")
        assert set(h.stage.cameras) == {"a", "c"}
        assert h.counters["cameras_forgotten"] == 2


# -- through StageHarness with real frames -------------------------------------------------------


def test_stage_with_frames_tracks_and_links_plates() -> None:
    """Envelopes with shared-memory frames and detections in; track ids, vehicle_track_id and
    env.tracks out, across the msgpack hop to the next stage."""
    image = np.zeros((720, 1280, 3), np.uint8)
    with StageHarness("track.bytetrack") as h:
        outs = []
        for f in range(12):
            car = moving(f, x0=100, y0=300, vx=12, w=300, h=180)
            truck = moving(f, x0=1000, y0=200, vx=-6, w=260, h=200)
            plate = [car[0] + 120, car[3] - 50, car[0] + 180, car[3] - 30]
            dets = [det(truck, label="truck"), det(car, label="car"), det(plate, kind="plate", vehicle=1),
                    {"box": [5, 5, 50, 50], "score": 0.9, "kind": "face"}]  # a kind not tracked
            if f >= 8:
                dets[2]["vehicle"] = None  # the detector lost the link: the plate's track keeps it
            env = h.frame_envelope(image, camera_id="gate", frame_id=f, detections=dets,
                                   tracks=[{"track_id": 7, "kind": "face"}])
            [out] = h.process(env)
            outs.append(out)
            assert h.frame(out).shape == (720, 1280, 3)  # the frame travels on, in place
    last = outs[-1]
    truck, car, plate, face = last.detections
    assert truck["track_id"] == 1 and car["track_id"] == 2 and plate["track_id"] == 3
    assert plate["vehicle_track_id"] == 2
    assert "track_id" not in face
    first = outs[0].detections
    assert first[0]["track_id"] is None and first[2]["vehicle_track_id"] is None  # not confirmed yet
    assert outs[5].detections[2]["vehicle_track_id"] == 2
    tracks = {t["track_id"]: t for t in last.tracks}
    assert set(tracks) == {1, 2, 3, 7}  # other stages' tracks are kept
    t = tracks[2]
    assert set(t) >= {"track_id", "kind", "label", "box", "score", "age", "hits", "state"}
    assert (t["kind"], t["label"], t["state"], t["age"], t["hits"]) == ("vehicle", "car", "tracked", 11, 12)
    assert iou_matrix(np.array([t["box"]]), np.array([car["box"]]))[0, 0] > 0.9
    assert tracks[1]["label"] == "truck" and tracks[3]["vehicle_track_id"] == 2 and tracks[3]["kind"] == "plate"
    assert all(isinstance(v, float) for v in t["box"])


def test_kinds_parameter_and_plates_without_a_vehicle_tracker() -> None:
    frames = [(f, [det(moving(f)), det(moving(f, x0=130, y0=330, w=30, h=10), kind="plate", vehicle=0)]) for f in range(5)]
    with StageHarness("track.bytetrack", {"kinds": ["plate"]}) as h:
        [env] = [h.process(Envelope(camera_id="c", frame_id=f, detections=d))[0] for f, d in frames][-1:]
    vehicle, plate = env.detections
    assert "track_id" not in vehicle and plate["track_id"] == 1 and plate["vehicle_track_id"] is None
    assert [t["kind"] for t in env.tracks] == ["plate"]


def test_malformed_detections_are_counted_not_fatal() -> None:
    dets = [det(moving(0)), {"box": [1, 2, 3], "kind": "vehicle"}, {"box": None, "kind": "plate"},
            {"box": [10, 10, 5, 5], "kind": "vehicle"}, {"box": [0, 0, 20, 20], "kind": "vehicle"}]
    with StageHarness("track.bytetrack") as h:
        [env] = h.process(Envelope(camera_id="c", frame_id=0, detections=dets))
        assert h.counters["bad_detections"] == 3
    assert [d.get("track_id", "absent") for d in env.detections] == [None, None, None, None, None]


def test_parameters_are_validated() -> None:
    with pytest.raises(pydantic.ValidationError, match="track_low_thresh"):
        ByteTrackStage.Params(track_low_thresh=0.6, track_high_thresh=0.5)
    with pytest.raises(pydantic.ValidationError, match="distinct"):
        ByteTrackStage.Params(kinds=["plate", "plate"])
    with pytest.raises(pydantic.ValidationError):
        ByteTrackStage.Params(match_tresh=0.8)  # a typo is an error, not a silent default
    described = ByteTrackStage.describe()
    assert described["type"] == "track.bytetrack" and described["ordered"] is True
    assert {"track_high_thresh", "track_low_thresh", "new_track_thresh", "match_thresh", "second_match_thresh",
            "track_buffer", "fps", "min_hits", "kinds", "center_gate"} <= set(described["params"])


def test_registered_as_builtin() -> None:
    from alpr_topo.core.plugins import stage_types
    from alpr_topo.stages import track

    assert track.STAGE_TYPES == [ByteTrackStage]
    assert stage_types()["track.bytetrack"] is ByteTrackStage


# -- the tracker and filter on their own ---------------------------------------------------------


def test_kalman_filter_learns_velocity_and_size_change() -> None:
    kf = BoxKalmanFilter()
    truth = np.array([[100.0 + 7 * f, 200.0 - 3 * f, 40.0 * 1.02**f, 12.0 * 1.02**f] for f in range(30)])
    mean, cov = kf.initiate(truth[:1])
    for z in truth[1:]:
        mean, cov = kf.predict(mean, cov)
        mean, cov = kf.update(mean, cov, z[None])
    assert np.allclose(mean[0, 4:6], [7, -3], atol=0.3)
    assert mean[0, 6] > 0 and mean[0, 7] > 0  # growing
    predicted, _ = kf.predict(mean, cov)
    assert np.allclose(predicted[0, :2], truth[-1, :2] + [7, -3], atol=1.0)
    boxes = np.array([[10.0, 20.0, 50.0, 40.0]])
    assert np.allclose(cxcywh_to_xyxy(xyxy_to_cxcywh(boxes)), boxes)


def test_assignment_respects_the_threshold() -> None:
    cost = np.array([[0.1, 0.9], [0.2, 0.95], [0.99, 0.99]])
    matches, rows, cols = assign(cost, 0.8)
    assert matches == [(0, 0)] or matches == [(1, 0)]
    assert sorted(rows + [r for r, _ in matches]) == [0, 1, 2] and cols == [1]
    assert assign(np.zeros((0, 3)), 0.5) == ([], [], [0, 1, 2])


def test_tracker_groups_keep_plates_on_their_vehicle() -> None:
    """A plate whose track belongs to vehicle 1 does not take a plate box of vehicle 2 lying
    where its prediction is, while vehicle 1 is still followed."""
    tracker = ByteTracker(TrackerConfig())
    box = [100.0, 100.0, 140.0, 112.0]
    for f in range(3):
        [t] = tracker.update(f, [box], [0.9], groups=[1], live_groups={1, 2})
    assert t is not None and t.group == 1
    [other] = tracker.update(3, [box], [0.9], groups=[2], live_groups={1, 2})
    assert other is None  # a new, unconfirmed track for vehicle 2's plate
    [again] = tracker.update(4, [box], [0.9], groups=[1], live_groups={1, 2})
    assert again is t
    [taken] = tracker.update(5, [box], [0.9], groups=[2], live_groups={2})  # vehicle 1 gone: free
    assert taken is t


# -- metrics -------------------------------------------------------------------------------------


def test_metrics_perfect_tracking() -> None:
    frames = [({1: moving(f), 2: moving(f, y0=600)}, {10: moving(f), 20: moving(f, y0=600)}) for f in range(10)]
    m = evaluate(frames)
    assert (m.id_switches, m.fragmentations, m.false_positives, m.misses) == (0, 0, 0, 0)
    assert m.mota == 1.0 and m.idf1 == 1.0 and m.gt_tracks == 2 and m.pred_tracks == 2 and m.mostly_tracked == 2


def test_metrics_count_switches_fragments_and_errors() -> None:
    frames = []
    for f in range(20):
        gt = {1: moving(f), 2: moving(f, y0=600)}
        if f < 10:
            pred = {10: moving(f), 20: moving(f, y0=600)}
        elif f < 15:
            pred = {20: moving(f), 10: moving(f, y0=600)}  # the two hypotheses swap objects
        else:
            pred = {20: moving(f)}  # object 2 is missed ...
        if f == 17:
            pred[99] = [1500, 900, 1600, 960]  # ... and a false positive
        frames.append((gt, pred))
    frames.append(({1: moving(20), 2: moving(20, y0=600)}, {20: moving(20), 30: moving(20, y0=600)}))
    m = evaluate(frames)
    assert m.id_switches == 3  # 1: 10 -> 20, 2: 20 -> 10, then 2: 10 -> 30
    assert m.fragmentations == 1  # object 2 unmatched in frames 15..19, matched again in 20
    assert (m.misses, m.false_positives) == (5, 1)
    assert m.mota == pytest.approx(1 - (5 + 1 + 3) / 42)
    assert m.motp == pytest.approx(1.0)
    assert 0 < m.idf1 < 1 and m.idsw_per_100 == 150.0


def test_metrics_switch_after_a_long_gap_is_counted_apart() -> None:
    frames = [({1: moving(f)}, {5: moving(f)}) for f in range(10)]
    frames += [({}, {}) for _ in range(40)]
    frames += [({1: moving(f)}, {6: moving(f)}) for f in range(50, 55)]
    acc = MotAccumulator(0.5, gap_frames=30)
    for gt, pred in frames:
        acc.update(gt, pred)
    m = acc.summary()
    assert (m.id_switches, m.id_switches_after_gap, m.fragmentations) == (1, 1, 0)
    assert set(m.to_dict()) >= {"id_switches", "mota", "idf1", "idsw_per_100", "gt_tracks"}


def test_metrics_iou_threshold() -> None:
    gt = {1: [0, 0, 100, 100]}
    shifted = {1: [40, 0, 140, 100]}  # IoU 60/140 = 0.43
    assert evaluate([(gt, shifted)]).matches == 0
    assert evaluate([(gt, shifted)], iou_threshold=0.4).matches == 1


# -- the synthetic traffic source (stages/synthetic.py) ------------------------------------------


def synthetic_frames(params: dict[str, Any], seed: int = 3, miss_rate: float = 0.1,
                     jitter: float = 0.02) -> tuple[list[Frame], tuple[int, int]]:
    """Truth of ``source.synthetic`` turned into detections: jittered boxes, ~10% missed,
    plates linked to their vehicle's detection; plates only while ``plate_visible``."""
    synthetic = pytest.importorskip("alpr_topo.stages.synthetic")
    rng = np.random.default_rng(seed)
    renderer = synthetic.SceneRenderer(params)
    frames = []
    while not renderer.finished:
        _, truth = renderer.render(draw=False)  # the truth without painting pixels
        frames.append(truth_to_frame(len(frames), truth, rng, miss_rate, jitter))
    return frames, (renderer.width, renderer.height)


def truth_to_frame(frame_id: int, truth: list[dict[str, Any]], rng: np.random.Generator,
                   miss_rate: float = 0.1, jitter: float = 0.02) -> Frame:
    dets: list[dict[str, Any]] = []
    gt: dict[str, dict[int, list[float]]] = {"vehicle": {}, "plate": {}}
    for o in truth:
        vid = o["vehicle_id"]
        box = [float(v) for v in o["vehicle_box"]]
        gt["vehicle"][vid] = box
        index = None
        if rng.random() >= miss_rate:
            index = len(dets)
            dets.append(det(noisy(rng, box, jitter, 1.0), score=float(rng.uniform(0.5, 0.97)),
                            label=o.get("vehicle_type") or "car"))
        if o.get("plate_visible") and o.get("plate_box"):
            plate = [float(v) for v in o["plate_box"]]
            gt["plate"][vid] = plate
            if rng.random() >= miss_rate:
                dets.append(det(noisy(rng, plate, 2 * jitter, 0.7), score=float(rng.uniform(0.5, 0.97)),
                                kind="plate", vehicle=index))
    return Frame(frame_id, dets, gt)


def test_synthetic_source_scene() -> None:
    """The synthetic traffic source's scene (15 fps, pedestrians walking in front of plates):
    its ground-truth boxes with noise and dropout through the tracker; ID switches reported.
    Pedestrians may hide a plate for longer than the buffer: such switches are new ids by
    design and are counted apart ("after long gaps"). A camera at 15 fps should set ``fps``
    (the buffer is meant in 30 fps frames) and, for ALPR, may well keep lost tracks longer."""
    # the exposure the bounds below were set on (1/150 s: before shutter_s, a tenth of the frame interval)
    frames, size = synthetic_frames({"seed": 7, "duration_s": 120, "vehicles": 60, "max_simultaneous": 4,
                                     "shutter_s": 1 / 150})
    configs = {"defaults (buffer 30 frames = 2 s here)": {}, "fps 15 (buffer 15 frames = 1 s)": {"fps": 15},
               "fps 15, track_buffer 90 (45 frames = 3 s)": {"fps": 15, "track_buffer": 90}}
    for name, params in configs.items():
        result = run_scene(frames, params, size=size)
        report(f"source.synthetic seed 7 ({len(frames)} frames, {size[0]}x{size[1]}): {name}", result)
        for kind, m in result.metrics.items():
            assert m.gt_tracks >= 50
            assert m.id_switches - m.id_switches_after_gap <= 0.05 * m.gt_tracks, (kind, m)
            assert m.mota >= 0.8 and m.idf1 >= 0.85


def test_synthetic_source_envelopes_through_the_tracker() -> None:
    """source.synthetic and track.bytetrack in StageHarness: the source's envelopes (frames in
    shared memory, truth in meta) get detections from the truth and go through the tracker."""
    pytest.importorskip("alpr_topo.stages.synthetic")
    rng = np.random.default_rng(0)
    params = {"width": 640, "height": 360, "count": 90, "vehicles": 6, "max_simultaneous": 3, "seed": 5,
              "crossing_s": [2.0, 3.0], "plate_width": [40, 80], "fps": 0}
    acc = {"vehicle": MotAccumulator(), "plate": MotAccumulator()}
    with StageHarness("source.synthetic", params) as source, StageHarness("track.bytetrack", {"fps": 15}) as tracker:
        for env in source.run_source(90):
            frame = truth_to_frame(env.frame_id, env.meta["truth"], rng, miss_rate=0.05)
            env.detections = frame.detections
            [out] = tracker.process(env)
            for kind in acc:
                acc[kind].update(frame.truth[kind], {t["track_id"]: t["box"] for t in out.tracks if t["kind"] == kind})
    for kind, a in acc.items():
        m = a.summary()
        print(f"\nsource.synthetic -> track.bytetrack, {kind}: {m}")
        assert m.gt_tracks >= 3 and m.id_switches == 0 and m.mota > 0.7


@pytest.mark.parametrize("vx, vy, w, h", [(0, 22, 130, 34), (80, 0, 140, 66), (-116, 0, 174, 72)])
def test_fast_plate_at_a_low_frame_rate(vx: float, vy: float, w: float, h: float) -> None:
    """Plates at 5 fps as the synthetic road scene draws them: a thin plate moving 2/3 of its
    height per frame, large plates moving 60-70% of their width per frame. With an unknown speed
    the second box barely overlaps the first, so IoU alone never confirms these tracks; the
    centre fallback (for plates at every size, its radius widened by the prediction's
    uncertainty) gives one id from the second frame on."""
    frames = [(f, [det(moving(f, x0=600 if vx >= 0 else 1100, y0=100, vx=vx, vy=vy, w=w, h=h),
                       kind="plate", score=0.8)]) for f in range(12)]
    with StageHarness("track.bytetrack", {"kinds": ["plate"]}) as h_:
        ids = [i[0] for i in track_ids(h_, frames)]
    assert ids[0] is None and set(ids[1:]) == {1}
    with StageHarness("track.bytetrack", {"kinds": ["plate"], "center_plates": False}) as h_:
        ids = [i[0] for i in track_ids(h_, frames)]
    assert set(ids[1:]) != {1}  # IoU alone: no stable track


def test_fast_plates_side_by_side_keep_their_ids() -> None:
    """Two plates 300 px apart moving fast in opposite directions at a low frame rate: the wide
    radius of young tracks does not make them swap."""
    frames = [(f, [det(moving(f, x0=200, y0=300, vx=70, w=120, h=30), kind="plate", score=0.8),
                   det(moving(f, x0=500, y0=420, vx=-70, w=120, h=30), kind="plate", score=0.8)])
              for f in range(8)]
    with StageHarness("track.bytetrack", {"kinds": ["plate"]}) as h:
        ids = track_ids(h, frames)
    assert {i[0] for i in ids[1:]} == {1} and {i[1] for i in ids[1:]} == {2}


def test_a_late_frame_is_not_a_restart() -> None:
    """Detect replicas finish out of order and frames lost between them leave the reorder
    buffer nothing to wait for: frame 6 may come after frame 7. That is a late frame (its
    detections stay untracked), not a restart: the track keeps its id. Back to 0 is a restart."""
    order = [0, 1, 2, 3, 4, 5, 7, 6, 8, 9, 10]
    with StageHarness("track.bytetrack", {"kinds": ["plate"]}) as h:
        ids = [i[0] for i in track_ids(h, [(f, [det(moving(f, vx=20, w=100, h=25), kind="plate")]) for f in order])]
        assert ids == [None, 1, 1, 1, 1, 1, 1, None, 1, 1, 1]
        assert h.counters["late_frames"] == 1 and "camera_resets" not in h.counters
        assert track_ids(h, [(f, [det(moving(f, vx=20, w=100, h=25), kind="plate")]) for f in range(3)])[-1] == [2]
        assert h.counters["camera_resets"] == 1


def test_a_plate_entering_does_not_take_the_id_of_one_that_left() -> None:
    """A plate leaves the view at the left edge; two frames later another one enters at the same
    edge, 100 px lower, moving the other way (boxes of the synthetic scene, seed 2, at 10 fps).
    The lost track's radius does not grow with its uncertainty, so the newcomer gets a new id."""
    leaving = [[194, 379, 297, 430], [159, 383, 262, 434], [131, 383, 233, 434], [94, 383, 202, 434],
               [65, 383, 161, 433]]
    entering = [[0, 485, 15, 543], [0, 494, 50, 547], [0, 490, 94, 543], [23, 490, 135, 541], [58, 490, 170, 541],
                [93, 490, 205, 541]]
    frames = [(f, [det([x1 + 33 * (4 - f), y1, x2 + 33 * (4 - f), y2], kind="plate", score=0.85)])
              for f, (x1, y1, x2, y2) in zip(range(5), [leaving[0]] * 5)]  # moving left 33 px/frame
    frames += [(5 + f, [det(box, kind="plate", score=0.85)]) for f, box in enumerate(leaving)]
    frames += [(10 + f, [det(box, kind="plate", score=0.38 if f == 0 else 0.83)]) for f, box in enumerate(entering)]
    with StageHarness("track.bytetrack", {"kinds": ["plate"]}) as h:
        ids = [i[0] for i in track_ids(h, frames)]
    first = {i for i in ids[:10] if i is not None}
    later = {i for i in ids[10:] if i is not None}
    assert first == {1} and later and not later & first
