"""``track.bytetrack``: ByteTrack per camera and kind, writing stable track ids into detections.

Reads ``env.detections`` (see docs/vision.md), writes ``track_id`` into every detection of a
tracked kind (None where the detection belongs to no confirmed track), ``vehicle_track_id`` into
plates, and replaces this stage's kinds in ``env.tracks`` with the confirmed tracks of the frame.
The algorithm lives in :mod:`alpr_topo.stages.bytetrack`; docs/track.md describes both.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass, replace
from typing import Any, Callable

import numpy as np
from pydantic import Field, field_validator, model_validator

from ..core.envelope import Envelope
from ..core.stage import Stage, StageParams
from .bytetrack import LOST, ByteTracker, Track, TrackerConfig

__all__ = ["ByteTrackParams", "ByteTrackStage", "STAGE_TYPES"]


class ByteTrackParams(StageParams):
    kinds: list[str] = Field(
        default_factory=lambda: ["vehicle", "plate"], min_length=1,
        description="detection kinds to track, each with its own tracker per camera",
    )
    track_high_thresh: float = Field(0.5, ge=0, le=1, description="detections scoring at least this take part in the first association")
    track_low_thresh: float = Field(0.1, ge=0, le=1, description="detections scoring below this are ignored; between low and high they only extend existing tracks (second association), never start one")
    new_track_thresh: float = Field(0.6, ge=0, le=1, description="an unmatched high-score detection starts a track only from this score")
    match_thresh: float = Field(0.8, gt=0, le=1, description="first association: largest accepted cost, 1 - IoU (x score with fuse_score)")
    second_match_thresh: float = Field(0.5, gt=0, le=1, description="second association (low-score detections): largest accepted cost, 1 - IoU")
    unconfirmed_match_thresh: float = Field(0.7, gt=0, le=1, description="unconfirmed tracks: largest accepted cost")
    fuse_score: bool = Field(True, description="multiply IoU by the detection score in the first association")
    second_match_lost: bool = Field(True, description="lost tracks also take low-score detections in the second association (re-found sooner after occlusion); False is the reference ByteTrack")
    track_buffer: int = Field(30, ge=0, description="frames a lost track is kept for re-identification (at 30 fps)")
    fps: float | None = Field(None, gt=0, description="camera frame rate: scales track_buffer by fps/30 (None: use track_buffer as is)")
    min_hits: int = Field(2, ge=1, description="detections in consecutive frames before a track is confirmed and gets an id")
    center_gate: float = Field(2.0, ge=0, description="centre-distance fallback for small boxes: match radius in box sizes (geometric mean of width and height; 0 turns it off)")
    tiny_box_size: float = Field(48.0, ge=0, description="the centre fallback applies to tracks whose size (geometric mean of width and height) is below this many pixels")
    center_plates: bool = Field(True, description="plates get the centre fallback whatever their size: a plate moves as fast as its vehicle but is a tenth of its size, so it leaves its own box within a frame or two (above all at low frame rates) and IoU cannot follow it")
    low_rescue_margin: float = Field(0.2, ge=0, le=1, description="first association: a track skips a high-score detection when a low-score one fits its prediction better by this much IoU (and well enough for the second association): the half-hidden object itself, not what hides it (0 turns it off)")
    gate: float = Field(0.0, ge=0, description="Mahalanobis gate: a pair whose squared distance (cx, cy, w, h) from the Kalman prediction exceeds this never matches (chi-square, 4 degrees of freedom: 9.5 = 95%, 18.5 = 99.9%; 0 turns it off)")
    plate_vehicle_gate: bool = Field(True, description="a plate track never takes a plate whose vehicle is tracked under another live id (needs 'vehicle' in kinds and detections' 'vehicle' index)")
    duplicate_iou: float = Field(0.85, gt=0, le=1, description="a track overlapping a lost one this much (and not bound to another live vehicle) is that object re-found: it keeps the old id")
    std_weight_position: float = Field(1 / 20, gt=0, description="Kalman position noise as a fraction of the box size")
    std_weight_velocity: float = Field(1 / 160, gt=0, description="Kalman velocity noise as a fraction of the box size")
    init_velocity_std: float = Field(32.0, gt=0, description="Kalman: prior standard deviation of a new track's centre velocity, pixels per frame (about the speed of the fastest objects)")
    report_lost: bool = Field(False, description="also list lost (predicted, unmatched) confirmed tracks in env.tracks, with state 'lost'")
    camera_idle_s: float = Field(300.0, gt=0, description="forget a camera's tracks after this many seconds without a frame")
    max_cameras: int = Field(1024, ge=1, description="keep tracks of at most this many cameras (the least recently seen are forgotten)")

    @field_validator("kinds")
    @classmethod
    def _unique_kinds(cls, kinds: list[str]) -> list[str]:
        if len(set(kinds)) != len(kinds) or not all(kinds):
            raise ValueError("kinds must be distinct, non-empty names")
        return kinds

    @model_validator(mode="after")
    def _ordered_thresholds(self) -> "ByteTrackParams":
        if self.track_low_thresh > self.track_high_thresh:
            raise ValueError(
                f"track_low_thresh ({self.track_low_thresh}) must not exceed track_high_thresh ({self.track_high_thresh})"
            )
        return self

    def buffer_frames(self) -> int:
        """``track_buffer`` in frames of this camera."""
        if self.fps is None:
            return self.track_buffer
        return max(1, int(round(self.track_buffer * self.fps / 30.0)))

    def tracker_config(self) -> TrackerConfig:
        return TrackerConfig(
            high_thresh=self.track_high_thresh,
            low_thresh=self.track_low_thresh,
            new_track_thresh=self.new_track_thresh,
            match_thresh=self.match_thresh,
            second_match_thresh=self.second_match_thresh,
            unconfirmed_match_thresh=self.unconfirmed_match_thresh,
            fuse_score=self.fuse_score,
            second_match_lost=self.second_match_lost,
            max_time_lost=self.buffer_frames(),
            min_hits=self.min_hits,
            center_gate=self.center_gate,
            tiny_box_size=self.tiny_box_size,
            duplicate_iou=self.duplicate_iou,
            gate=self.gate,
            low_rescue_margin=self.low_rescue_margin,
            std_weight_position=self.std_weight_position,
            std_weight_velocity=self.std_weight_velocity,
            init_velocity_std=self.init_velocity_std,
        )


@dataclass
class CameraState:
    """Trackers of one camera (one per kind); its id counter lives in ``ByteTrackStage.id_counters``."""

    trackers: dict[str, ByteTracker]
    last_frame: int
    last_seen: float


@dataclass
class IdCounter:
    """Track ids of one camera: 1, 2, 3, ... shared by all kinds, kept across resets so ids are never reused."""

    last: int = 0

    def __call__(self) -> int:
        self.last += 1
        return self.last


class ByteTrackStage(Stage):
    """ByteTrack per camera and kind: stable track ids on detections, confirmed tracks in env.tracks."""

    type_name = "track.bytetrack"
    Params = ByteTrackParams
    params: ByteTrackParams
    ordered = True  # one camera's frames in order, on one replica

    def __init__(self, params: StageParams, ctx: Any) -> None:
        super().__init__(params, ctx)
        self.cameras: OrderedDict[str, CameraState] = OrderedDict()
        # Kept when a camera is forgotten, so its ids keep increasing (a few bytes per camera).
        self.id_counters: dict[str, IdCounter] = {}
        self.clock: Callable[[], float] = time.monotonic
        self._last_sweep = 0.0
        # vehicle first: plates look up the track of their vehicle in the same frame
        kinds = self.params.kinds
        self.kinds = [k for k in kinds if k == "vehicle"] + [k for k in kinds if k != "vehicle"]
        self.config = self.params.tracker_config()

    def _config(self, kind: str) -> TrackerConfig:
        """The tracker settings of one kind (plates: the centre fallback at every size)."""
        if kind == "plate" and self.params.center_plates and self.params.center_gate > 0:
            return replace(self.config, center_all=True)
        return self.config

    # -- per camera state ----------------------------------------------------------------------

    def _late(self, cam: CameraState, frame_id: int) -> bool:
        """A frame a little older than the camera's last one: it overtook nothing, it came late
        (replicas upstream finish out of order, and frames lost between them leave the reorder
        buffer nothing to wait for). Not a restart, which starts again from frame 0 or 1 or
        jumps back by more than the track buffer."""
        return 1 < frame_id < cam.last_frame and cam.last_frame - frame_id <= max(self.params.buffer_frames(), 2)

    def _camera(self, camera_id: str, frame_id: int) -> CameraState | None:
        """The camera's trackers, moved on to ``frame_id``; None for a late frame."""
        now = self.clock()
        self._sweep(now)
        cam = self.cameras.get(camera_id)
        if cam is not None and self._late(cam, frame_id):
            return None
        if cam is not None and frame_id < cam.last_frame:
            # frame ids went back: the source restarted; old tracks cannot continue
            self.log.info("camera %s: frame id %d after %d, tracks reset", camera_id, frame_id, cam.last_frame)
            self.ctx.count("camera_resets")
            self._end(cam)
            cam = None
        if cam is None:
            counter = self.id_counters.setdefault(camera_id, IdCounter())
            cam = CameraState({k: ByteTracker(self._config(k), counter) for k in self.kinds}, frame_id, now)
            self.cameras[camera_id] = cam
            while len(self.cameras) > self.params.max_cameras:
                _, oldest = self.cameras.popitem(last=False)
                self._end(oldest)
                self.ctx.count("cameras_forgotten")
        self.cameras.move_to_end(camera_id)
        if frame_id - cam.last_frame > 1:
            self.ctx.count("frame_gaps")
        cam.last_frame, cam.last_seen = frame_id, now
        return cam

    def _sweep(self, now: float) -> None:
        """Forget cameras idle for ``camera_idle_s`` (checked a few times per idle period)."""
        if now - self._last_sweep < min(self.params.camera_idle_s / 4, 5.0):
            return
        self._last_sweep = now
        for camera_id in [c for c, s in self.cameras.items() if now - s.last_seen > self.params.camera_idle_s]:
            self._end(self.cameras.pop(camera_id))
            self.ctx.count("cameras_forgotten")

    def _end(self, cam: CameraState) -> None:
        ended = sum(len(tracker.clear()) for tracker in cam.trackers.values())
        if ended:
            self.ctx.count("tracks_ended", ended)

    # -- per frame -----------------------------------------------------------------------------

    def process(self, env: Envelope) -> Envelope:
        """Track one frame of one camera: ``track_id`` (and ``vehicle_track_id``) on detections,
        this frame's confirmed tracks in ``env.tracks``. A repeated frame id counts as the next
        frame; a slightly smaller one is a late frame (its detections stay untracked); one back
        to 0 or 1, or by more than the track buffer, means the source restarted (the camera's
        tracks end)."""
        cam = self._camera(env.camera_id, env.frame_id)
        dets = env.detections
        if cam is None:
            # a late frame: the tracks have moved past it; its detections stay untracked (the
            # dedup stage joins their reads to a passage by text)
            self.ctx.count("late_frames")
            for det in dets:
                if isinstance(det, dict) and det.get("kind") in self.kinds:
                    det["track_id"] = None
                    if det.get("kind") == "plate":
                        det["vehicle_track_id"] = None
            return env
        out: list[dict[str, Any]] = []
        vehicles = cam.trackers.get("vehicle")
        bounds = _frame_size(env)
        for kind in self.kinds:
            tracker = cam.trackers[kind]
            index, boxes, scores, labels = [], [], [], []
            for i, det in enumerate(dets):
                if not isinstance(det, dict) or det.get("kind") != kind:
                    continue
                box = _box(det.get("box"))
                if box is None:
                    self.ctx.count("bad_detections")
                    det["track_id"] = None
                    if kind == "plate":
                        det["vehicle_track_id"] = None
                    continue
                index.append(i)
                boxes.append(box)
                scores.append(_score(det.get("score")))
                labels.append(det.get("label"))
            groups = live = None
            if kind == "plate" and vehicles is not None and self.params.plate_vehicle_gate:
                groups = [self._vehicle_of(dets, i) for i in index]
                live = {t.track_id for t in vehicles.active(include_lost=True)}  # vehicles still followed
            owners = tracker.update(env.frame_id, np.asarray(boxes).reshape(-1, 4), scores, labels, groups, live, bounds)
            for i, track in zip(index, owners):
                dets[i]["track_id"] = track.track_id if track is not None else None
            if kind == "plate":
                self._link_plates(dets, index, owners, vehicles)
            if tracker.started:
                self.ctx.count("tracks_started", len(tracker.started))
            if tracker.ended:
                self.ctx.count("tracks_ended", len(tracker.ended))
            out.extend(_track_dict(t, kind, env.frame_id) for t in tracker.active(self.params.report_lost))
        env.tracks = [t for t in env.tracks if not (isinstance(t, dict) and t.get("kind") in self.kinds)] + out
        return env

    @staticmethod
    def _vehicle_of(dets: list[dict[str, Any]], i: int) -> int | None:
        """The track id of the vehicle detection a plate names in ``vehicle``, if any."""
        v = dets[i].get("vehicle")
        if isinstance(v, int) and not isinstance(v, bool) and 0 <= v < len(dets):
            vdet = dets[v]
            if isinstance(vdet, dict) and vdet.get("kind") == "vehicle":
                tid = vdet.get("track_id")
                return tid if isinstance(tid, int) else None
        return None

    def _link_plates(
        self, dets: list[dict[str, Any]], index: list[int], owners: list[Track | None], vehicles: ByteTracker | None
    ) -> None:
        """``vehicle_track_id`` on plates: the track of the detection named by ``vehicle``, else
        the vehicle the plate's track was last seen on, while that vehicle track lives."""
        for i, track in zip(index, owners):
            vid = self._vehicle_of(dets, i) if vehicles is not None else None
            if track is not None:
                if vid is None and vehicles is not None and isinstance(track.group, int):
                    if vehicles.find(track.group) is not None:
                        vid = track.group
                if vid is not None:
                    track.group = vid
            dets[i]["vehicle_track_id"] = vid


def _frame_size(env: Envelope) -> tuple[float, float] | None:
    """``(width, height)`` of the envelope's frame, if it carries one."""
    shape = getattr(env.frame, "shape", None)
    if shape is not None and len(shape) >= 2 and shape[0] > 0 and shape[1] > 0:
        return float(shape[1]), float(shape[0])
    return None


def _box(value: Any) -> list[float] | None:
    try:
        box = [float(v) for v in value]
    except (TypeError, ValueError):
        return None
    if len(box) != 4 or not all(np.isfinite(box)) or box[2] <= box[0] or box[3] <= box[1]:
        return None
    return box


def _score(value: Any) -> float:
    try:
        score = float(value)
    except (TypeError, ValueError):
        return 1.0  # a detector without scores: every box is sure
    return score if np.isfinite(score) else 0.0


def _track_dict(t: Track, kind: str, frame_id: int) -> dict[str, Any]:
    record: dict[str, Any] = {
        "track_id": t.track_id,
        "kind": kind,
        "label": t.label or kind,
        "box": [round(v, 2) for v in t.box],
        "score": round(t.score, 4),
        "age": int(frame_id - t.start_frame),
        "hits": int(t.hits),
        "state": t.state,
        "detection": t.detection,
    }
    if t.state == LOST:
        record["frames_lost"] = int(frame_id - t.last_frame)
    if kind == "plate":
        record["vehicle_track_id"] = t.group if isinstance(t.group, int) else None
    return record


STAGE_TYPES = [ByteTrackStage]
