"""Detect stages: vehicles and plates into ``env.detections`` (docs/vision.md, docs/detect.md).

* ``detect.yolo``: a YOLO model (``.onnx`` through ONNX Runtime or TensorRT, ``.pt`` through
  ultralytics): plates, vehicles, or both.
* ``detect.plates``: the embedded, offline plate detector (PP-OCR text detection and reading
  from rapidocr-onnxruntime, classical morphology as a fallback). Needs no model file.
* ``detect.motion``: vehicles by background subtraction, per camera, where no vehicle model runs.

Every stage appends its detections to those already in the envelope (a vehicle stage then a
plate stage, or the other way round) and sets ``vehicle`` on every plate: the index of the
vehicle detection that contains it, or None.

Batching: when several envelopes wait (several cameras), the runtime hands up to
``batch_size`` of them to ``process_batch``, one model call for their frames; a lone envelope
goes through ``process`` at once.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Iterator, Literal, Sequence

from pydantic import Field, field_validator

from ..core.envelope import Envelope
from ..core.stage import Stage, StageParams
from .det_base import Detector, associate

__all__ = ["DetectStage", "YoloStage", "PlatesStage", "MotionStage", "make_yolo_detector", "model_file_checks",
           "STAGE_TYPES"]

log = logging.getLogger("alpr_topo.detect")
_fallback_warned: set[str] = set()
_fallback_lock = threading.Lock()


_check_files: ContextVar[bool] = ContextVar("alpr_topo_check_model_files", default=True)


@contextmanager
def model_file_checks(enabled: bool) -> Iterator[None]:
    """Turn the model-file existence check of parameter validation off (``alpr-topo models``
    lists a topology's models, missing ones included) or on, in this context."""
    token = _check_files.set(enabled)
    try:
        yield
    finally:
        _check_files.reset(token)


def model_checks_enabled() -> bool:
    """Whether parameter validation requires model files to exist (see :func:`model_file_checks`)."""
    return _check_files.get()


def _check_model_file(path: str | None) -> str | None:
    """Validation of a model path: it must be a file, else say how to get it."""
    if path is None or not _check_files.get():
        return path
    if not os.path.isfile(path):
        from ..tools.models import missing_model_hint

        where = os.path.abspath(path)
        raise ValueError(f"model file {path!r} does not exist (looked at {where}); {missing_model_hint(path)}")
    return path


# -- parameters -------------------------------------------------------------------------------


class CommonParams(StageParams):
    batch_size: int = Field(8, ge=1, le=256, description="frames per model call in process_batch (several cameras)")


class ModelParams(CommonParams):
    warmup: bool = Field(True, description="run the model once at setup, so the first frame is not slow")


class YoloParams(ModelParams):
    model: str = Field(..., min_length=1, description="model file: .onnx (ONNX Runtime or TensorRT), .engine, .pt "
                                                      "(ultralytics); e.g. ${ALPR_MODELS:-models}/plate-detector-yolov9t-416-int8.onnx")
    backend: Literal["auto", "onnxruntime", "tensorrt", "ultralytics"] = Field(
        "auto", description="auto: by file suffix (.onnx -> onnxruntime, .engine -> tensorrt, .pt -> ultralytics); "
                            "tensorrt falls back to onnxruntime with one warning where it cannot run")
    kind: Literal["plate", "vehicle", "auto"] = Field(
        "auto", description="what the model finds: plate, vehicle (car/truck/bus/motorcycle), or auto by class names")
    classes: list[str | int] | None = Field(None, description="keep only these classes (names or ids); default by kind")
    conf: float = Field(0.25, ge=0, le=1, description="minimum confidence")
    iou: float = Field(0.45, gt=0, le=1, description="NMS IoU threshold (raw outputs; end-to-end models do their own)")
    input_size: int | list[int] | None = Field(None, description="model input (size or [h, w]) for models with dynamic input; "
                                                                 "default from the model")
    layout: Literal["auto", "raw", "raw_obj", "nms7", "nms6"] = Field("auto", description="output layout (docs/detect.md)")
    providers: str | list[str] = Field("auto", description="ONNX Runtime execution providers: auto (TensorRT, CUDA, CPU "
                                                          "as available), or names such as cuda, cpu")
    threads: int | None = Field(None, ge=1, le=64, description="CPU intra-op threads (default: physical cores, at most 4)")
    dequantize: bool = Field(True, description="run a dynamically quantised (int8 ConvInteger) model as float32: "
                                               "onnxruntime has no fast kernel for it and TensorRT cannot parse it "
                                               "(docs/detect.md); false runs the int8 graph")
    max_det: int = Field(100, ge=1, description="at most this many detections per frame")
    engine: str | None = Field(None, description="TensorRT engine file (default: built beside the model, named by GPU and TensorRT version)")
    fp16: bool = Field(True, description="TensorRT: build FP16 engines where the GPU has fast FP16")
    device: str | None = Field(None, description="ultralytics backend: device such as 'cpu' or '0'")

    @field_validator("model")
    @classmethod
    def _model_exists(cls, value: str) -> str:
        return _check_model_file(value) or value


class PlatesParams(ModelParams):
    max_side: int = Field(960, ge=320, le=4096, description="longer side of the frame for the text detector (pixels)")
    thresh: float = Field(0.3, gt=0, lt=1, description="text probability threshold of the DB map")
    box_thresh: float = Field(0.5, gt=0, lt=1, description="minimum mean probability of a text region")
    unclip_ratio: float = Field(1.6, gt=0, le=4, description="how far text regions are grown (PaddleOCR's unclip)")
    min_score: float = Field(0.3, ge=0, le=1, description="minimum plate score (shape x plate-like reading)")
    relative: float = Field(0.5, ge=0, le=1, description="drop candidates scoring below this share of the frame's best")
    max_plates: int = Field(3, ge=1, le=100, description="at most this many plates per frame")
    min_height: float = Field(16.0, ge=1, description="plate text lines lower than about this (pixels) score less")
    verify: bool = Field(True, description="read candidates with PP-OCR's recogniser to tell plates from other text")
    read_top: int = Field(6, ge=1, le=64, description="text lines read per frame (the best-shaped ones)")
    retry_enhanced: bool = Field(True, description="frames with no plausible plate: run again on a contrast-stretched, "
                                                   "larger frame (costs a second pass on such frames)")
    classic_fallback: bool = Field(True, description="frames with no plausible plate: try the classical morphology detector")
    refine_box: bool = Field(True, description="grow each plate's text-line box to the plate's visible edges")
    threads: int | None = Field(None, ge=1, le=64, description="CPU intra-op threads (default: physical cores, at most 4)")
    providers: str | list[str] = Field("cpu", description="ONNX Runtime execution providers for the PP-OCR models")
    det_model: str | None = Field(None, description="PP-OCR detection model (default: the one inside rapidocr-onnxruntime)")
    rec_model: str | None = Field(None, description="PP-OCR recognition model (default: the one inside rapidocr-onnxruntime)")

    @field_validator("det_model", "rec_model")
    @classmethod
    def _model_exists(cls, value: str | None) -> str | None:
        return _check_model_file(value)


class MotionParams(CommonParams):
    work_width: int = Field(480, ge=64, le=4096, description="frames are downscaled to this width for the background model")
    history: int = Field(300, ge=2, description="frames the background model remembers")
    var_threshold: float = Field(25.0, gt=0, description="MOG2 variance threshold: higher, less sensitive")
    detect_shadows: bool = Field(True, description="mark shadows and leave them out of vehicles")
    min_area: float = Field(0.004, gt=0, lt=1, description="smallest vehicle box, as a share of the frame")
    max_area: float = Field(0.6, gt=0, le=1, description="largest vehicle box, as a share of the frame")
    warmup_frames: int = Field(10, ge=0, description="frames per camera to learn the background before reporting")
    learning_rate: float = Field(-1.0, ge=-1, le=1, description="background learning rate (-1: automatic, 1/history)")
    idle_s: float = Field(600.0, gt=0, description="forget a camera's background after this long without frames")
    max_cameras: int = Field(256, ge=1, description="background models kept at most (least recently seen dropped)")


# -- stages -----------------------------------------------------------------------------------


class DetectStage(Stage):
    """Shared: frames in, detections appended, plates associated with vehicles, counters."""

    detector: Detector

    def make_detector(self) -> Detector:
        raise NotImplementedError

    def setup(self) -> None:
        started = time.monotonic()
        self.detector = self.make_detector()
        if getattr(self.params, "warmup", False):
            self.detector.warmup()
        self.log.info("%s ready in %.1f s", self.detector.name, time.monotonic() - started)

    def teardown(self) -> None:
        detector = getattr(self, "detector", None)
        if detector is not None:
            detector.close()

    def run_detector(self, images: list[Any], envs: Sequence[Envelope]) -> list[list[Any]]:
        return self.detector.detect(images)

    def process(self, env: Envelope) -> Envelope:
        return self.process_batch([env])[0]

    def process_batch(self, envs: Sequence[Envelope]) -> list[Envelope]:
        """Detect on the frames of several envelopes, ``batch_size`` frames per model call."""
        step = getattr(self.params, "batch_size", 1)
        for start in range(0, len(envs), step):
            chunk = list(envs[start:start + step])
            images = [self.ctx.frame(env) for env in chunk]
            for env, dets in zip(chunk, self.run_detector(images, chunk)):
                env.detections.extend(d.to_dict() for d in dets)
                associate(env.detections)
                for d in dets:
                    self.ctx.count(f"{d.kind}s")
        return list(envs)


def make_yolo_detector(p: YoloParams, logger: logging.Logger | None = None) -> Detector:
    """The backend ``p`` asks for, falling back from TensorRT to ONNX Runtime where needed."""
    logger = logger or log
    suffix = Path(p.model).suffix.lower()
    backend = p.backend
    if backend == "auto":
        backend = {".pt": "ultralytics", ".engine": "tensorrt"}.get(suffix, "onnxruntime")
    common: dict[str, Any] = dict(kind=p.kind, classes=p.classes, conf=p.conf, batch_size=p.batch_size)
    if backend == "tensorrt":
        from .det_tensorrt import TensorRTDetector, availability

        ok, why = availability()
        if ok:
            return TensorRTDetector(p.model, engine=p.engine, fp16=p.fp16, input_size=p.input_size, iou=p.iou,
                                    layout=p.layout, max_det=p.max_det, **common)
        if suffix == ".engine":
            raise RuntimeError(f"{p.model} is a TensorRT engine but TensorRT cannot run here: {why}")
        with _fallback_lock:
            first = why not in _fallback_warned
            _fallback_warned.add(why)
        if first:
            logger.warning("backend tensorrt asked for %s, but %s: running it with ONNX Runtime instead "
                           "(providers: %s)", Path(p.model).name, why, p.providers)
        backend = "onnxruntime"
    if backend == "ultralytics":
        from .det_ultralytics import UltralyticsDetector

        return UltralyticsDetector(p.model, iou=p.iou, input_size=p.input_size, device=p.device, max_det=p.max_det,
                                   **common)
    from .det_yolo import YoloOnnxDetector

    return YoloOnnxDetector(p.model, providers=p.providers, threads=p.threads, input_size=p.input_size, iou=p.iou,
                            dequantize=p.dequantize,
                            layout=p.layout, max_det=p.max_det, **common)


class YoloStage(DetectStage):
    """Plates and/or vehicles with a YOLO model (ONNX Runtime, TensorRT or ultralytics)."""

    type_name = "detect.yolo"
    Params = YoloParams
    params: YoloParams

    def make_detector(self) -> Detector:
        return make_yolo_detector(self.params, self.log)


class PlatesStage(DetectStage):
    """Plates with the embedded PP-OCR text models (offline, no model file to get)."""

    type_name = "detect.plates"
    Params = PlatesParams
    params: PlatesParams

    def make_detector(self) -> Detector:
        from .det_ppocr import PPOCRPlateDetector

        p = self.params
        return PPOCRPlateDetector(det_model=p.det_model, rec_model=p.rec_model, max_side=p.max_side, thresh=p.thresh,
                                  box_thresh=p.box_thresh, unclip_ratio=p.unclip_ratio, min_score=p.min_score,
                                  relative=p.relative, max_plates=p.max_plates, read_top=p.read_top,
                                  min_height=p.min_height, verify=p.verify, retry_enhanced=p.retry_enhanced,
                                  classic_fallback=p.classic_fallback, refine_box=p.refine_box, threads=p.threads,
                                  providers=p.providers)


    def run_detector(self, images: list[Any], envs: Sequence[Envelope]) -> list[list[Any]]:
        before = dict(self.detector.stats)  # type: ignore[attr-defined]
        result = self.detector.detect(images)
        for key in ("retries", "fallbacks"):  # frames that needed the second pass / the classical one
            delta = self.detector.stats[key] - before[key]  # type: ignore[attr-defined]
            if delta:
                self.ctx.count(f"plate_{key}", delta)
        return result


class MotionStage(DetectStage):
    """Vehicles by background subtraction (one background model per camera)."""

    type_name = "detect.motion"
    Params = MotionParams
    params: MotionParams
    ordered = True  # a background model needs its camera's frames in order, on one replica

    def make_detector(self) -> Detector:
        from .det_motion import MotionDetector

        p = self.params
        return MotionDetector(work_width=p.work_width, history=p.history, var_threshold=p.var_threshold,
                              detect_shadows=p.detect_shadows, min_area_frac=p.min_area, max_area_frac=p.max_area,
                              warmup_frames=p.warmup_frames, learning_rate=p.learning_rate, idle_s=p.idle_s,
                              max_cameras=p.max_cameras)

    def setup(self) -> None:
        self.detector = self.make_detector()  # nothing to warm up: a background model starts empty

    def run_detector(self, images: list[Any], envs: Sequence[Envelope]) -> list[list[Any]]:
        return self.detector.detect(images, cameras=[env.camera_id for env in envs])  # type: ignore[call-arg]


STAGE_TYPES = [YoloStage, PlatesStage, MotionStage]
