"""``dedup.plates``: one event per vehicle passage, near-duplicates merged into the kept event.

Reads ``env.plates`` (from the OCR stage) and ``env.detections`` (tracks, see docs/vision.md),
collects the reads of each passage (per camera: the vehicle track, else the plate track, else
a short-lived group of similar texts), votes one text when the passage ends (not seen for
``track_timeout_s``, or open for ``max_track_s``, or the stage drains) and emits one event
envelope. A passage whose text is near-identical to an event kept within ``window_s`` (in the
``scope``) sends an update for that event instead. docs/dedup.md describes the rules,
docs/events.md the event and the update message.

Outputs carry no frame:

- event: ``env.meta["event"]`` (the Avro dict of :mod:`alpr_topo.stages.events`) and
  ``env.meta["images"]`` (``plate_jpeg``, optionally ``vehicle_jpeg`` and ``frame_jpeg``: bytes);
- update: ``env.meta["event_update"]`` (an ``EventUpdate`` dict).
"""

from __future__ import annotations

import re
import socket
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Literal, Sequence

import cv2
import numpy as np
from pydantic import Field

from ..core.envelope import Envelope
from ..core.framepool import StaleFrame
from ..core.stage import Stage, StageParams
from . import events
from .det_base import box_aspect
from .dedup_vote import Read, Vote, best_match, end_part_of, one_wrong, quality_score, similarity, supports, truncation_of, vote

__all__ = ["DedupParams", "DedupStage", "STAGE_TYPES"]

Key = tuple[str, int]  # ("v", vehicle track) | ("p", plate track) | ("u", group number)
MAX_READS = 400  # reads kept per passage (the lowest-weight one goes first)
MAX_TEXTS = 32  # distinct texts whose best crop is kept per passage
MAX_OPEN = 512  # open passages per camera before the oldest is finished early
MAX_RECENT = 20000  # kept events remembered for duplicate suppression
SWITCH_CONFIDENCE = 0.9  # reads from this confidence on can tell that a track switched plates
CONTAINED = 0.6  # an untracked read's box and a tracked plate's box sharing this much of the smaller are one plate
PACE_DECAY = 0.95  # per envelope: the camera's pace is measured over its last ~20 envelopes


class DedupParams(StageParams):
    min_reads: int = Field(2, ge=1, description="reads (at or above min_confidence) a passage needs for an event, and reads that speak "
                                                "for its voted text (at most one character off, or a cut-off part of it); fewer: dropped and "
                                                "counted as tracks_dropped or tracks_unconfirmed")
    min_length: int = Field(3, ge=1, description="a voted text shorter than this makes no event (counted as fragments_dropped): "
                                                 "what a reader makes of a plate cut by the frame's edge; 2 or 1 for very short vanity plates")
    max_length: int = Field(10, ge=1, description="reads longer than this do not vote (counted as reads_too_long): no plate format is "
                                                  "that long; a reader read the state name or slogan with the plate")
    min_confidence: float = Field(0.4, ge=0, le=1, description="reads below this OCR confidence do not vote (they still keep the track alive)")
    repeat_reads: int = Field(5, ge=0, description="a text read this many times below min_confidence in one passage votes from that read on "
                                                   "(the reader is unsure of short vanity plates but reads them the same frame after frame); 0: never")
    emit_partial: bool = Field(False, description="also emit passages with fewer than min_reads reads (at least one), marked extras.partial = 'true'")
    track_timeout_s: float = Field(1.5, gt=0, description="a passage ends when its track was not seen for this long (capture time; wall clock while the camera is quiet)")
    continuation_s: float = Field(1.5, ge=0, description="a short passage that times out waits up to this long for a later passage of its camera "
                                                         "(open, or beginning at most track_timeout_s + continuation_s after it was last seen) to "
                                                         "read a text its own is a cut-off part of (a plate hidden for a moment by a passing "
                                                         "vehicle); 0: never waits")
    continuation_max_length: int = Field(5, ge=0, description="only passages whose voted text has at most this many characters wait (continuation_s): "
                                                              "what a glimpse of a plate's first characters gives; whole plates are mostly longer, "
                                                              "and their events should not wait")
    switch_similarity: float = Field(0.4, ge=0, le=1, description="two confident reads in a row of one track that are less similar than this to every "
                                                                 "text of its passage (and not cut-off parts of them) end the passage and begin a new one: "
                                                                 "the tracker gave the track to another plate; 0: never")
    max_track_s: float = Field(30.0, gt=0, description="a passage open this long emits its event anyway; later sightings only move its last_seen (update, reason 'continued')")
    similarity: float = Field(0.85, gt=0, le=1, description="normalized Levenshtein similarity from which two plate texts are the same plate (duplicates, untracked reads)")
    window_s: float = Field(60.0, ge=0, description="a passage within this many seconds of a kept event with a similar text is a duplicate of it; 0 turns duplicate suppression off")
    scope: Literal["camera", "site", "global"] = Field("camera", description="where duplicates are looked for: the same camera, cameras of the same site, or every camera this stage sees")
    site: str = Field("default", min_length=1, description="site name in events (node.site) for cameras not in camera_sites")
    camera_sites: dict[str, str] = Field(default_factory=dict, description="camera id -> site, for cameras of other sites (scope 'site')")
    host: str | None = Field(None, description="host name in events (node.host); default: this machine's host name")
    region_bonus: float = Field(2.0, ge=1, description="vote weight factor of reads whose text matched a plate format (region set)")
    region_min_share: float = Field(0.25, ge=0, le=1, description="region-valid reads vote alone when they carry at least this share of the weight")
    quality_ref_width: float = Field(120.0, gt=0, description="plate crop width (pixels) from which size no longer adds to a read's quality")
    quality_ref_sharpness: float = Field(500.0, gt=0, description="sharpness (the OCR stage's Laplacian variance) from which sharpness no longer adds to a read's quality")
    vehicle_image: bool = Field(True, description="attach a JPEG crop of the vehicle (from the best read's frame) as images.vehicle_jpeg")
    frame_image: bool = Field(False, description="attach the best read's whole frame as images.frame_jpeg")
    frame_max_width: int = Field(1280, ge=0, description="scale the attached frame down to at most this width (0: full size)")
    jpeg_quality: int = Field(90, ge=10, le=100, description="JPEG quality of the vehicle and frame images")
    extras: dict[str, str] = Field(default_factory=dict, description="fixed key/values added to every event's extras (e.g. lane, direction)")
    test_mode: bool = Field(False, description="copy the ground truth of synthetic sources (meta.truth) into extras (truth_plate, truth_vehicle_id)")


@dataclass
class Best:
    """The best read of a text (or of the passage): what the event's images and frame come from."""

    score: float
    read: Read
    crop_jpeg: bytes | None
    box: list[float] | None
    reader: str | None
    stamps: list[Any]
    pipeline_ms: float | None
    truth: dict[str, Any] | None


@dataclass
class Passage:
    """The reads of one vehicle passage on one camera, until it ends."""

    key: Key
    camera_id: str
    started: float  # capture time it opened (for max_track_s)
    seen: float  # capture time it was last seen (read or detected)
    last_frame_id: int
    reads: list[Read] = field(default_factory=list)
    first_read: float = float("inf")
    unsure: dict[str, int] = field(default_factory=dict)  # text -> reads of it below min_confidence
    best: Best | None = None
    best_text: dict[str, Best] = field(default_factory=dict)
    vehicle_crop: np.ndarray | None = None
    frame_copy: np.ndarray | None = None
    attrs: dict[str, dict[str, float]] = field(default_factory=dict)  # type/color/make/model -> value -> weight
    plate_tracks: set[int] = field(default_factory=set)
    kept: "Kept | None" = None  # set once its event (or an update) went out at max_track_s
    foreign: str | None = None  # the last confident read unrelated to its texts (see _identity)

    @property
    def track_id(self) -> int | None:
        return self.key[1] if self.key[0] in ("v", "p") else None

    def texts(self) -> list[str]:
        return list(self.best_text)


@dataclass
class Kept:
    """An event sent recently, remembered to suppress its duplicates."""

    event_id: str
    normalized: str
    camera_id: str
    site: str
    first_seen: float
    last_seen: float
    count: int = 1


@dataclass
class Held:
    """A passage with a short text that timed out: its event waits (until ``until``, capture
    time) in case a later passage of its camera, open already or beginning meanwhile, turns out
    to be the same plate read whole."""

    passage: Passage
    result: Vote
    until: float
    followed: bool = False  # a later passage that could continue it was seen open


@dataclass
class Camera:
    passages: dict[Key, Passage] = field(default_factory=dict)
    held: list[Held] = field(default_factory=list)
    links: dict[int, Key] = field(default_factory=dict)  # plate track -> vehicle passage key
    groups: int = 0  # untracked group numbers
    sent: int = 0  # envelopes sent for this camera: their frame_id (see _next_id)
    last_captured: float = float("-inf")
    last_arrival: float | None = None  # self._clock() when its last envelope arrived
    # capture time and arrival time that passed between its recent envelopes (decaying sums):
    # their ratio is how fast the camera's capture clock runs here (below 1 when the pipeline
    # is slower than the camera, e.g. a file or a synthetic scene on a busy machine)
    paced_capture: float = 0.0
    paced_arrival: float = 0.0

    def pace(self) -> float:
        """Capture seconds per arrival second lately, at most 1 (1 while unknown)."""
        if self.paced_arrival <= 0.0:
            return 1.0
        return min(1.0, self.paced_capture / self.paced_arrival)


_NOT_ALNUM = re.compile(r"[^0-9A-Z]")


def _normalize(text: str) -> str:
    return _NOT_ALNUM.sub("", text.upper())


def _is_box(value: Any) -> bool:
    return isinstance(value, (list, tuple)) and len(value) == 4


def _area(a: Sequence[float]) -> float:
    return (a[2] - a[0]) * (a[3] - a[1])


def _intersection(a: Sequence[float], b: Sequence[float]) -> float:
    return max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))


def _contained(a: Sequence[float], b: Sequence[float]) -> float:
    """The share of the smaller box's area that lies inside the other box."""
    smaller = min(_area(a), _area(b))
    return _intersection(a, b) / smaller if smaller > 0 else 0.0


def _iou(a: Sequence[float], b: Sequence[float]) -> float:
    inter = _intersection(a, b)
    union = _area(a) + _area(b) - inter
    return inter / union if union > 0 else 0.0


class DedupStage(Stage):
    """One event per vehicle passage: votes the plate reads of each track, suppresses near-duplicates."""

    type_name = "dedup.plates"
    Params = DedupParams
    params: DedupParams
    ordered = True

    def setup(self) -> None:
        self.cameras: dict[str, Camera] = {}
        self.recent: deque[Kept] = deque(maxlen=MAX_RECENT)
        self.outbox: list[Envelope] = []
        self.newest = float("-inf")  # newest capture time seen on any camera
        self.host = self.params.host or socket.gethostname()
        #: monotonic clock for quiet-camera timeouts and wall clock for latency; tests replace them
        self._clock: Callable[[], float] = time.monotonic
        self._wall: Callable[[], float] = time.time

    # -- stage API ---------------------------------------------------------------------------------

    def process(self, env: Envelope) -> list[Envelope] | None:
        cam = self.cameras.setdefault(env.camera_id, Camera())
        t = float(env.captured_at)
        outs = self._expire(env.camera_id, cam, t)
        arrival = self._clock()
        if cam.last_arrival is not None and t > cam.last_captured:
            cam.paced_capture = cam.paced_capture * PACE_DECAY + (t - cam.last_captured)
            cam.paced_arrival = cam.paced_arrival * PACE_DECAY + max(0.0, arrival - cam.last_arrival)
        cam.last_captured = max(cam.last_captured, t)
        cam.last_arrival = arrival
        self.newest = max(self.newest, t)
        self._presence(cam, env, t)
        read_frame = False
        for plate in env.plates:
            # a throttled track's repeated best read is no new evidence: counting it would let the
            # read that happened to be best early (often a plate half in view) win the vote
            if isinstance(plate, dict) and not plate.get("skipped"):
                read_frame |= self._add_read(cam, env, self._tracked(plate, env.detections))
        if len(cam.passages) > MAX_OPEN:
            oldest = min(cam.passages.values(), key=lambda p: p.seen)
            outs += self._finish(cam, oldest, "overflow")
        if read_frame:
            # The runtime voids every output of a call whose frame turned out stale; events
            # finished here must not share that fate: they leave with the next call instead.
            self.outbox.extend(outs)
            return None
        outs, self.outbox = self.outbox + outs, []
        return outs or None

    def tick(self) -> list[Envelope] | None:
        outs, self.outbox = self.outbox, []
        now = self._clock()
        for camera_id, cam in self.cameras.items():
            if cam.passages and cam.last_arrival is not None:
                # the camera's capture clock, carried on by the wall clock while it is quiet, at
                # the pace its envelopes came lately: a pipeline slower than the camera (a file,
                # a busy machine) must not end passages between two of its frames
                estimate = cam.last_captured + cam.pace() * max(0.0, now - cam.last_arrival)
                outs += self._expire(camera_id, cam, estimate)
        return outs or None

    def flush(self) -> list[Envelope] | None:
        outs, self.outbox = self.outbox, []
        for cam in self.cameras.values():
            for passage in sorted(cam.passages.values(), key=lambda p: p.started):
                outs += self._finish(cam, passage, "drain")
            outs += self._release(cam, None)
        return outs or None

    # -- collecting --------------------------------------------------------------------------------

    def _presence(self, cam: Camera, env: Envelope, t: float) -> None:
        """Detections of tracks with an open passage keep it alive and vote its vehicle type."""
        dets = env.detections
        for det in dets:
            if not isinstance(det, dict) or det.get("track_id") is None:
                continue
            tid = int(det["track_id"])
            if det.get("kind") == "vehicle":
                passage = cam.passages.get(("v", tid))
                vehicle = det
            elif det.get("kind") == "plate":
                passage = cam.passages.get(cam.links.get(tid, ("p", tid)))
                index = det.get("vehicle")
                vehicle = dets[index] if isinstance(index, int) and 0 <= index < len(dets) else None
                if passage is not None and passage.key[0] == "v":
                    vehicle = None  # voted from the vehicle's own detection
            else:
                continue
            if passage is None:
                continue
            passage.seen = max(passage.seen, t)
            passage.last_frame_id = env.frame_id
            if isinstance(vehicle, dict):
                self._vote_vehicle(passage, vehicle)

    def _vote_vehicle(self, passage: Passage, det: dict[str, Any]) -> None:
        weight = float(det.get("score") or 0.5)
        for attr, source in (("type", "label"), ("color", "color"), ("make", "make"), ("model", "model")):
            value = det.get(source)
            if isinstance(value, str) and value:
                votes = passage.attrs.setdefault(attr, {})
                votes[value] = votes.get(value, 0.0) + weight

    def _key(self, cam: Camera, plate_track: int | None, vehicle_track: int | None, normalized: str) -> Key | None:
        if vehicle_track is not None:
            key: Key = ("v", vehicle_track)
            if plate_track is not None:
                cam.links[plate_track] = key
                orphan = cam.passages.get(("p", plate_track))
                if orphan is not None and orphan.kept is None:
                    self._merge(cam, orphan, key)
            return key
        if plate_track is not None:
            return cam.links.get(plate_track, ("p", plate_track))
        if not normalized:
            return None
        groups = [(text, p.key) for p in cam.passages.values() if p.key[0] == "u" and p.kept is None for text in p.texts()]
        found = best_match(normalized, groups, self.params.similarity)
        if found is not None:
            return found[0]
        cam.groups += 1
        return ("u", cam.groups)

    def _adopt_untracked(self, cam: Camera, key: Key, normalized: str) -> None:
        """A tracked read takes in an open untracked passage with a similar text.

        A tracker confirms a track only after a few frames; the reads of those first frames come
        without a track id and would otherwise end as a second passage of the same plate. An open
        untracked passage was seen within ``track_timeout_s`` on this camera, so one wrong
        character is allowed whatever the length (``similarity`` 0.85 allows none below 7).
        """
        groups = [(text, p) for p in cam.passages.values() if p.key[0] == "u" and p.kept is None for text in p.texts()]
        found = best_match(normalized, groups, min(self.params.similarity, one_wrong(len(normalized))))
        if found is not None:
            self._merge(cam, found[0], key)
            self.ctx.count("untracked_adopted")

    def _merge(self, cam: Camera, src: Passage, key: Key) -> None:
        """``src``'s reads join the passage ``key`` (a plate track's into its vehicle's, once the
        plate is seen inside it; an untracked passage into the track that turned up)."""
        dst = cam.passages.get(key)
        if dst is not None and dst.kept is not None:
            return
        del cam.passages[src.key]
        if dst is None:
            src.key = key
            cam.passages[key] = src
            return
        dst.reads.extend(src.reads)
        del dst.reads[:-MAX_READS]
        dst.started = min(dst.started, src.started)
        dst.first_read = min(dst.first_read, src.first_read)
        dst.seen = max(dst.seen, src.seen)
        for text, n in src.unsure.items():
            dst.unsure[text] = dst.unsure.get(text, 0) + n
        dst.plate_tracks |= src.plate_tracks
        for text, best in src.best_text.items():
            if text not in dst.best_text or best.score > dst.best_text[text].score:
                dst.best_text[text] = best
        if src.best is not None and (dst.best is None or src.best.score > dst.best.score):
            dst.best, dst.vehicle_crop, dst.frame_copy = src.best, src.vehicle_crop, src.frame_copy
        for attr, votes in src.attrs.items():
            into = dst.attrs.setdefault(attr, {})
            for value, weight in votes.items():
                into[value] = into.get(value, 0.0) + weight

    def _tracked(self, plate: dict[str, Any], detections: Sequence[Any]) -> dict[str, Any]:
        """An untracked read whose box and a tracked plate's box in the same frame are mostly
        one (``CONTAINED`` of the smaller) is a read of that plate. Detectors now and then find
        a plate twice, once with much of its surroundings, and the tracker follows only one box:
        in the long synthetic scene (seed 15) the second box was read `5769U` twice while track
        32 read `S769LJ`, and its reads went out as an event of their own."""
        box = plate.get("box")
        if plate.get("track_id") is not None or plate.get("vehicle_track_id") is not None or not _is_box(box):
            return plate
        for det in detections:
            if isinstance(det, dict) and det.get("kind") == "plate" and det.get("track_id") is not None \
                    and _is_box(det.get("box")) and _contained(box, det["box"]) >= CONTAINED:
                self.ctx.count("untracked_boxed")
                return {**plate, "track_id": det["track_id"]}
        return plate

    def _add_read(self, cam: Camera, env: Envelope, plate: dict[str, Any]) -> bool:
        """Add one OCR read; True when the frame was read (for the vehicle or frame image)."""
        p = self.params
        text = str(plate.get("text") or "")
        normalized = _normalize(str(plate.get("normalized") or text))
        plate_track = plate.get("track_id")
        vehicle_track = plate.get("vehicle_track_id")
        plate_track = None if plate_track is None else int(plate_track)
        vehicle_track = None if vehicle_track is None else int(vehicle_track)
        confidence = float(plate.get("confidence") or 0.0)
        too_long = len(normalized) > p.max_length
        if too_long:
            self.ctx.count("reads_too_long")
        usable = bool(normalized) and confidence >= p.min_confidence and not too_long
        if plate_track is None and vehicle_track is None and not usable:
            self.ctx.count("reads_low_confidence")
            return False  # an untracked read that cannot vote opens no group
        key = self._key(cam, plate_track, vehicle_track, normalized)
        if key is None:
            return False
        if key[0] != "u" and normalized:
            self._adopt_untracked(cam, key, normalized)
        t = float(env.captured_at)
        passage = cam.passages.get(key)
        identity = self._identity(passage, normalized, confidence) if passage is not None and usable else "same"
        if identity == "switch":
            # the tracker gave this track to another plate: its passage so far is one vehicle's
            self.ctx.count("tracks_switched")
            self.outbox.extend(self._finish(cam, passage, "switch"))
            if plate_track is not None and key[0] == "v":
                cam.links[plate_track] = key
            passage = None
        if passage is None:
            passage = cam.passages[key] = Passage(key, env.camera_id, started=t, seen=t, last_frame_id=env.frame_id)
        passage.seen = max(passage.seen, t)
        passage.last_frame_id = env.frame_id
        if plate_track is not None:
            passage.plate_tracks.add(plate_track)
        if passage.kept is not None:
            return False  # its event went out at max_track_s: only last_seen moves now
        if identity == "foreign":
            self.ctx.count("reads_foreign")
            return False  # another plate's, or a wild misread: the next read tells
        if not usable and normalized and not too_long and p.repeat_reads:
            # a short vanity plate the reader is unsure of, read the same in frame after frame
            passage.unsure[normalized] = passage.unsure.get(normalized, 0) + 1
            usable = passage.unsure[normalized] >= p.repeat_reads
        if not usable:
            self.ctx.count("reads_low_confidence")
            return False
        quality = quality_score(plate.get("quality"), p.quality_ref_width, p.quality_ref_sharpness)
        box = plate.get("box")
        box = [float(v) for v in box] if _is_box(box) else None
        # a plate cut by the frame's edge looks wider than it is: its aspect says nothing
        cut = (plate.get("quality") or {}).get("cut")
        aspect = box_aspect(box) if box and not cut else 0.0
        read = Read(text=text or normalized, normalized=normalized, confidence=confidence,
                    region=plate.get("region") or None, quality=quality, captured_at=t, frame_id=env.frame_id,
                    aspect=aspect or None)
        passage.reads.append(read)
        if len(passage.reads) > MAX_READS:
            passage.reads.remove(min(passage.reads, key=lambda r: r.weight))
        passage.first_read = min(passage.first_read, t)
        self.ctx.count("reads")

        score = read.weight
        crop = plate.get("crop_jpeg")
        best = Best(
            score=score, read=read, crop_jpeg=bytes(crop) if isinstance(crop, (bytes, bytearray, memoryview)) else None,
            box=box, reader=plate.get("reader"), stamps=list(env.stamps),
            pipeline_ms=self._pipeline_ms(env), truth=self._truth(env, box) if p.test_mode else None,
        )
        current = passage.best_text.get(normalized)
        if current is None or score > current.score or (current.crop_jpeg is None and best.crop_jpeg is not None):
            passage.best_text[normalized] = best
            if len(passage.best_text) > MAX_TEXTS:
                weakest = min(passage.best_text, key=lambda k: passage.best_text[k].score)
                del passage.best_text[weakest]
        if passage.best is not None and score <= passage.best.score:
            return False
        passage.best = best
        if not (p.vehicle_image or p.frame_image) or env.frame is None:
            return False
        try:
            image = self.ctx.frame(env)
        except StaleFrame:
            return True
        self._copy_images(passage, env, image, vehicle_track)
        return True

    def _identity(self, passage: Passage, normalized: str, confidence: float) -> Literal["same", "foreign", "switch"]:
        """Whether a confident read belongs to its track's passage.

        Trackers switch identities now and then: two plates crossing, or a new plate entering
        where a lost one was predicted (the long synthetic scene, seed 7 with cpu.yaml: a plate
        track that had read ``HWH9644`` leaving at the frame's left edge took ``E02URM`` entering
        there, and the passage voted ``HWH9644`` for both). A read with nothing in common with
        the passage's texts (``switch_similarity``; not a cut-off part either way) is
        ``foreign``: it does not vote. The next confident read decides: the same foreign plate
        again is a ``switch`` (the passage ends, a new one begins), a read of the passage's
        plate makes the foreign read a wild misread, which one lettered truck or state name
        read between two plate reads must not turn into a split.
        """
        p = self.params
        if not p.switch_similarity or passage.key[0] == "u" or passage.kept is not None or not passage.reads \
                or confidence < SWITCH_CONFIDENCE:
            return "same"
        if not all(self._unrelated(normalized, text) for text in passage.texts()):
            passage.foreign = None
            return "same"
        if passage.foreign is not None and supports(normalized, passage.foreign):
            return "switch"
        passage.foreign = normalized
        return "foreign"

    def _unrelated(self, a: str, b: str) -> bool:
        return similarity(a, b) < self.params.switch_similarity and not end_part_of(a, b) and not end_part_of(b, a) \
            and not truncation_of(a, b) and not truncation_of(b, a)

    def _copy_images(self, passage: Passage, env: Envelope, image: np.ndarray, vehicle_track: int | None) -> None:
        p = self.params
        if p.vehicle_image:
            box = None
            for det in env.detections:
                if isinstance(det, dict) and det.get("kind") == "vehicle" and vehicle_track is not None \
                        and det.get("track_id") == vehicle_track:
                    box = det.get("box")
                    break
            passage.vehicle_crop = None
            if box is not None:
                h, w = image.shape[:2]
                x1, y1 = max(0, int(box[0])), max(0, int(box[1]))
                x2, y2 = min(w, int(round(box[2]))), min(h, int(round(box[3])))
                if x2 - x1 >= 4 and y2 - y1 >= 4:
                    passage.vehicle_crop = np.array(image[y1:y2, x1:x2], copy=True)
        if p.frame_image:
            h, w = image.shape[:2]
            if p.frame_max_width and w > p.frame_max_width:
                size = (p.frame_max_width, max(1, int(round(h * p.frame_max_width / w))))
                passage.frame_copy = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
            else:
                passage.frame_copy = np.array(image, copy=True)

    @staticmethod
    def _pipeline_ms(env: Envelope) -> float | None:
        if not env.stamps:
            return None
        elapsed = (time.monotonic_ns() - int(env.stamps[0][1])) / 1e6
        return round(elapsed, 3) if 0 <= elapsed < 600_000 else None  # other hosts' clocks: no answer

    @staticmethod
    def _truth(env: Envelope, box: list[float] | None) -> dict[str, Any] | None:
        truth = env.meta.get("truth")
        if not isinstance(truth, list) or box is None:
            return None
        best, best_iou = None, 0.0
        for obj in truth:
            if isinstance(obj, dict) and obj.get("plate_box"):
                iou = _iou(box, obj["plate_box"])
                if iou > best_iou:
                    best, best_iou = obj, iou
        if best is None:  # the plate box is off: the vehicle that contains the read's centre
            cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
            for obj in truth:
                vb = obj.get("vehicle_box") if isinstance(obj, dict) else None
                if vb and vb[0] <= cx <= vb[2] and vb[1] <= cy <= vb[3]:
                    best = obj
                    break
        return best

    # -- ending passages ---------------------------------------------------------------------------

    def _expire(self, camera_id: str, cam: Camera, now: float) -> list[Envelope]:
        outs: list[Envelope] = []
        p = self.params
        for passage in sorted(cam.passages.values(), key=lambda x: x.started):
            if now - passage.seen >= p.track_timeout_s:
                outs += self._finish(cam, passage, "timeout")
            elif passage.kept is None and now - passage.started >= p.max_track_s:
                outs += self._finish(cam, passage, "max_track")
        return outs + self._release(cam, now)

    def _site(self, camera_id: str) -> str:
        return self.params.camera_sites.get(camera_id, self.params.site)

    def _finish(self, cam: Camera, passage: Passage, reason: str) -> list[Envelope]:
        p = self.params
        if reason != "max_track":
            cam.passages.pop(passage.key, None)
            if passage.key[0] == "v":
                for plate_track in [k for k, v in cam.links.items() if v == passage.key]:
                    del cam.links[plate_track]
        if passage.kept is not None:  # went on after its max_track_s event: move its last_seen
            kept = passage.kept
            if passage.seen <= kept.last_seen:
                return []
            kept.last_seen = passage.seen
            self.ctx.count("updates")
            return [self._update_envelope(passage, kept, "continued", None)]
        if not passage.reads or (len(passage.reads) < p.min_reads and not p.emit_partial):
            self.ctx.count("tracks_dropped")
            return []
        result = vote(passage.reads, p.region_bonus, p.region_min_share)
        if result is None:
            self.ctx.count("tracks_dropped")
            return []
        if result.support < p.min_reads and not p.emit_partial:
            # reads that each saw a different part of a plate never whole in view
            self.ctx.count("tracks_unconfirmed")
            return []
        if len(result.normalized) < p.min_length:
            self.ctx.count("fragments_dropped")
            return []
        if reason != "max_track" and self._absorb_truncated(cam, passage, result.normalized):
            return []
        if reason == "timeout" and p.continuation_s > 0 and len(result.normalized) <= p.continuation_max_length:
            cam.held.append(Held(passage, result, passage.seen + self._continuation_gap()))
            self.ctx.count("passages_held")
            return []
        return [self._send(passage, result, reason)]

    def _send(self, passage: Passage, result: Vote, reason: str) -> Envelope:
        """The passage's event, or an update of the kept event it duplicates."""
        p = self.params
        self._prune()
        site = self._site(passage.camera_id)
        first = passage.first_read
        duplicate = self._duplicate_of(result.normalized, passage.camera_id, site, first, passage.seen)
        if duplicate is not None:
            kept, score = duplicate
            kept.count += 1
            kept.last_seen = max(kept.last_seen, passage.seen)
            self.ctx.count("duplicates_suppressed")
            self.ctx.count("updates")
            out = self._update_envelope(passage, kept, "duplicate", result.normalized, score)
        else:
            kept = Kept(events.new_event_id(), result.normalized, passage.camera_id, site, first, passage.seen)
            if p.window_s > 0:
                self.recent.append(kept)
            self.ctx.count("events")
            out = self._event_envelope(passage, result, kept, reason)
        if reason == "max_track":  # stays open: later sightings only move last_seen
            passage.kept = kept
            passage.reads.clear()
            passage.best_text.clear()
            passage.vehicle_crop = passage.frame_copy = None
        return out

    def _continued(self, cam: Camera, passage: Passage) -> bool:
        """Whether an open passage of the camera began after ``passage`` and at most
        ``track_timeout_s + continuation_s`` after it was last seen: the same plate, hidden for
        a moment by a passing vehicle, comes back as a new track, read from its first
        characters again (in the long synthetic scene up to 2 s later: `4599` of `4599KDR`)."""
        gap = self._continuation_gap()
        return any(other is not passage and other.kept is None and passage.started < other.started <= passage.seen + gap
                   for other in cam.passages.values())

    def _release(self, cam: Camera, now: float | None) -> list[Envelope]:
        """Held passages go out once their wait is over, or once a later passage that could
        continue them was open and no such passage is open any more (``now`` None: all of them,
        the stage drains). One whose text became a cut-off part of a continuation's text sends
        nothing."""
        outs: list[Envelope] = []
        for held in list(cam.held):
            if now is not None and now < held.until:
                if self._continued(cam, held.passage):
                    held.followed = True
                    continue
                if not held.followed:
                    continue
            cam.held.remove(held)
            if not self._absorb_truncated(cam, held.passage, held.result.normalized, self._continuation_gap()):
                outs.append(self._send(held.passage, held.result, "timeout"))
        return outs

    def _continuation_gap(self) -> float:
        """How long after a short passage was last seen a passage that continues it may begin."""
        return self.params.track_timeout_s + self.params.continuation_s

    def _absorb_truncated(self, cam: Camera, passage: Passage, text: str, gap: float | None = None) -> bool:
        """A passage whose text is a cut-off part of the text of a passage of the same camera
        still open beside it (a plate read while entering the view, before the tracker caught
        it; with ``gap``, a held one: read before a passer-by hid the plate) is part of that
        one: it sends nothing, its time span joins the other passage."""
        gap = self.params.track_timeout_s if gap is None else gap
        for other in [*cam.passages.values(), *(held.passage for held in cam.held)]:
            if other is passage or other.kept is not None or not other.reads:
                continue
            if other.seen < passage.first_read - gap or other.first_read > passage.seen + gap:
                continue
            if any(truncation_of(text, t) for t in other.texts()):
                other.started = min(other.started, passage.started)
                other.first_read = min(other.first_read, passage.first_read)
                other.seen = max(other.seen, passage.seen)
                self.ctx.count("truncated_absorbed")
                return True
        return False

    def _prune(self) -> None:
        horizon = self.newest - (self.params.window_s + self.params.max_track_s + self.params.track_timeout_s)
        while self.recent and self.recent[0].last_seen < horizon:
            self.recent.popleft()

    def _duplicate_of(self, text: str, camera_id: str, site: str, first: float, last: float) -> tuple[Kept, float] | None:
        p = self.params
        if p.window_s <= 0:
            return None
        candidates = []
        truncated: tuple[Kept, float] | None = None
        for kept in self.recent:
            if p.scope == "camera" and kept.camera_id != camera_id:
                continue
            if p.scope == "site" and kept.site != site:
                continue
            gap = max(0.0, first - kept.last_seen, kept.first_seen - last)
            if gap <= p.window_s:
                candidates.append((kept.normalized, kept))
            if gap <= p.track_timeout_s and kept.camera_id == camera_id and truncation_of(text, kept.normalized):
                truncated = (kept, similarity(text, kept.normalized))  # a cut-off read of the plate that just passed
        found = best_match(text, candidates, p.similarity)
        return found if found is not None else truncated

    # -- output ------------------------------------------------------------------------------------

    def _event_envelope(self, passage: Passage, result: Vote, kept: Kept, reason: str) -> Envelope:
        p = self.params
        best = passage.best_text.get(result.normalized) or passage.best
        assert best is not None  # a passage with reads has a best read
        vehicle = {attr: max(votes, key=votes.__getitem__) for attr, votes in passage.attrs.items() if votes}
        extras: dict[str, Any] = dict(p.extras)
        extras.update(reader=best.reader, frame_id=str(best.read.frame_id), finished=reason)
        if not result.exact:
            extras["vote"] = "composite"
        if result.support < p.min_reads:  # never more than the passage's reads
            extras["partial"] = "true"
        if passage.key[0] == "v" and passage.plate_tracks:
            extras["plate_track_ids"] = ",".join(str(t) for t in sorted(passage.plate_tracks))
        if p.test_mode and best.truth is not None:
            extras["truth_plate"] = best.truth.get("plate")
            extras["truth_vehicle_id"] = best.truth.get("vehicle_id")
        event = events.make_event(
            event_id=kept.event_id,
            camera_id=passage.camera_id,
            captured_at=kept.first_seen,
            track_id=passage.track_id,
            plate={"text": result.text, "normalized_text": result.normalized,
                   "confidence": result.confidence, "region": result.region},
            vehicle=vehicle,
            latency={"capture_to_event_ms": max(0.0, (self._wall() - passage.seen) * 1000.0),
                     "pipeline_ms": best.pipeline_ms},
            site=kept.site,
            host=self.host,
            extras=extras,
            first_seen=kept.first_seen,
            last_seen=kept.last_seen,
            count=kept.count,
            reads=result.reads,
        )
        images: dict[str, bytes] = {}
        crop = best.crop_jpeg or (passage.best.crop_jpeg if passage.best else None)
        if crop:
            images["plate_jpeg"] = crop
        for name, array in (("vehicle_jpeg", passage.vehicle_crop), ("frame_jpeg", passage.frame_copy)):
            if array is not None:
                ok, data = cv2.imencode(".jpg", array, [int(cv2.IMWRITE_JPEG_QUALITY), p.jpeg_quality])
                if ok:
                    images[name] = data.tobytes()
        return Envelope(
            camera_id=passage.camera_id, frame_id=self._next_id(passage.camera_id), captured_at=kept.first_seen,
            stamps=list(best.stamps), meta={"event": event, "images": images},
        )

    def _next_id(self, camera_id: str) -> int:
        """Output frame ids: 1, 2, 3, ... per camera. The best read's frame id is in
        ``extras.frame_id``; it is not used here because events end out of frame order and two
        outputs may share a best frame, which would confuse an ordered stage downstream (its
        reorder buffer is keyed by camera and frame id)."""
        cam = self.cameras.setdefault(camera_id, Camera())
        cam.sent += 1
        return cam.sent

    def _update_envelope(self, passage: Passage, kept: Kept, reason: str, text: str | None,
                         score: float | None = None) -> Envelope:
        update = events.make_update(
            event_id=kept.event_id, last_seen=kept.last_seen, count=kept.count, reason=reason,
            camera_id=passage.camera_id, track_id=passage.track_id,
            normalized_text=text if text is not None else kept.normalized, similarity=score,
        )
        return Envelope(camera_id=passage.camera_id, frame_id=self._next_id(passage.camera_id),
                        captured_at=passage.seen, meta={"event_update": update})


STAGE_TYPES = [DedupStage]
