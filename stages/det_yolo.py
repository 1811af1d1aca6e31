"""YOLO detectors through ONNX Runtime: raw Ultralytics exports and end-to-end (NMS inside) ones.

Output layouts (``layout`` param; ``auto`` tells them apart by the output's shape):

==========  ============================  ===============================================
layout      output                        rows
==========  ============================  ===============================================
``raw``     ``[B, 4+nc, N]`` (v8/v9/11)   ``cx, cy, w, h, score per class``; NMS done here.
            or ``[B, N, 4+nc]``            (the transposed form is recognised too)
``raw_obj`` ``[B, N, 5+nc]`` (v5/v7)      ``cx, cy, w, h, objectness, class scores``
``nms7``    ``[N, 7]``                    ``batch, x1, y1, x2, y2, class, score``
                                          (YOLOv9 end2end, open-image-models plates)
``nms6``    ``[B, N, 6]``                 ``x1, y1, x2, y2, score, class`` (YOLOv10 and
                                          Ultralytics ``nms=True`` exports)
==========  ============================  ===============================================

Boxes come back through the letterbox (aspect kept, grey 114 padding) to frame pixels.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from .det_base import (COCO_NAMES, Detection, Detector, Letterbox, default_threads, letterbox, nms,
                       parse_names, plate_label, vehicle_label)
from .onnx_float import expanded

log = logging.getLogger("alpr_topo.detect.yolo")

__all__ = [
    "ClassMap", "YoloDetectorBase", "YoloOnnxDetector", "decode_nms6", "decode_nms7", "decode_raw",
    "make_session", "resolve_providers", "LAYOUTS",
]

LAYOUTS = ("auto", "raw", "raw_obj", "nms7", "nms6")

# -- execution providers ----------------------------------------------------------------------

PROVIDER_ALIASES = {
    "tensorrt": "TensorrtExecutionProvider",
    "trt": "TensorrtExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "gpu": "CUDAExecutionProvider",
    "rocm": "ROCMExecutionProvider",
    "migraphx": "MIGraphXExecutionProvider",
    "openvino": "OpenVINOExecutionProvider",
    "dml": "DmlExecutionProvider",
    "directml": "DmlExecutionProvider",
    "coreml": "CoreMLExecutionProvider",
    "cpu": "CPUExecutionProvider",
}
CPU = "CPUExecutionProvider"
AUTO_ORDER = ("TensorrtExecutionProvider", "CUDAExecutionProvider", CPU)
_warned: set[tuple[str, ...]] = set()
_warn_lock = threading.Lock()


def provider_name(name: str) -> str:
    """``cuda`` -> ``CUDAExecutionProvider``; full names pass through."""
    return PROVIDER_ALIASES.get(name.strip().lower(), name.strip())


def resolve_providers(requested: str | Sequence[str] | None, available: Iterable[str] | None = None,
                      what: str = "the model") -> list[str]:
    """The execution providers to open a session with, best first, CPU always last.

    ``auto`` (or None) takes TensorRT, CUDA, then CPU, whichever this onnxruntime build offers.
    Providers asked for by name but missing from the build are dropped with ONE warning per
    process (per set of missing providers), and the model runs on what is left (the CPU).
    """
    if available is None:
        import onnxruntime as ort

        available = ort.get_available_providers()
    available = list(available)
    if requested is None or (isinstance(requested, str) and requested.strip().lower() == "auto"):
        return [p for p in AUTO_ORDER if p in available or p == CPU]
    names = [requested] if isinstance(requested, str) else list(requested)
    wanted: list[str] = []
    for item in names:
        for part in str(item).split(","):
            if part.strip():
                p = provider_name(part)
                if p not in wanted:
                    wanted.append(p)
    missing = tuple(p for p in wanted if p not in available and p != CPU)
    chosen = [p for p in wanted if p in available or p == CPU]
    if CPU not in chosen:
        chosen.append(CPU)
    if missing:
        with _warn_lock:
            first = missing not in _warned
            _warned.add(missing)
        if first:
            log.warning(
                "%s asked for %s but this onnxruntime (%s) offers only %s: running %s on %s instead. "
                "For the GPU install onnxruntime-gpu with matching CUDA/cuDNN (or TensorRT); "
                "set `providers: cpu` to run on the CPU without this warning.",
                what, ", ".join(missing), _ort_version(), ", ".join(available) or "nothing",
                what, ", ".join(chosen),
            )
    return chosen


def _ort_version() -> str:
    try:
        import onnxruntime as ort

        return f"onnxruntime {ort.__version__}"
    except Exception:
        return "onnxruntime"


def session_options(threads: int | None = None) -> Any:
    """CPU-friendly options: few intra-op threads, no spinning (an idle spinning pool burns a
    whole core on a small CPU), one inter-op thread, every graph optimisation."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = int(threads or default_threads())
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.add_session_config_entry("session.inter_op.allow_spinning", "0")
    so.log_severity_level = 3  # shape-inference chatter of exported graphs is noise here
    return so


def provider_options(provider: str, model: str) -> dict[str, Any]:
    """Per-provider options: TensorRT builds FP16 engines and caches them beside the model."""
    if provider == "TensorrtExecutionProvider":
        cache = os.path.join(os.path.dirname(os.path.abspath(model)), ".trt-cache")
        return {"trt_fp16_enable": True, "trt_engine_cache_enable": True, "trt_engine_cache_path": cache,
                "trt_timing_cache_enable": True, "trt_timing_cache_path": cache}
    return {}


def make_session(model: str | os.PathLike[str], providers: str | Sequence[str] | None = "auto",
                 threads: int | None = None, dequantize: bool = False) -> Any:
    """An ``onnxruntime.InferenceSession`` with :func:`session_options` and resolved providers.
    ``dequantize``: a dynamically quantised model runs as its float32 graph (:mod:`.onnx_float`)."""
    import onnxruntime as ort

    model = str(model)
    chosen = resolve_providers(providers, what=Path(model).name)
    opts = [provider_options(p, model) for p in chosen]
    graph: str | bytes = (expanded(model) if dequantize else None) or model
    try:
        return ort.InferenceSession(graph, sess_options=session_options(threads), providers=chosen,
                                    provider_options=opts)
    except Exception as exc:
        if chosen == [CPU]:
            raise
        # a GPU provider listed by the build can still fail to start (driver, libraries)
        log.warning("could not start %s on %s (%s); running it on the CPU", Path(model).name,
                    ", ".join(chosen), str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        return ort.InferenceSession(graph, sess_options=session_options(threads), providers=[CPU])


# -- decoding ---------------------------------------------------------------------------------


def xywh_to_xyxy(b: np.ndarray) -> np.ndarray:
    out = np.empty_like(b)
    out[:, 0] = b[:, 0] - b[:, 2] / 2
    out[:, 1] = b[:, 1] - b[:, 3] / 2
    out[:, 2] = b[:, 0] + b[:, 2] / 2
    out[:, 3] = b[:, 1] + b[:, 3] / 2
    return out


def decode_raw(pred: np.ndarray, conf: float, iou: float, keep: np.ndarray | None = None,
               objectness: bool = False, max_det: int = 300,
               channels_first: bool | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One image of a raw YOLO output: ``[4+nc, N]`` (or ``[N, 4+nc]``; with ``objectness``
    ``[N, 5+nc]``) -> boxes ``[K, 4]`` xyxy in model-input pixels, scores ``[K]``, classes ``[K]``.

    ``keep`` is a boolean mask over classes (None: all). NMS is class-aware.
    ``channels_first``: whether axis 0 holds the box and class values; None guesses (the shorter
    axis: a model has far more anchors than classes).
    """
    pred = np.asarray(pred, dtype=np.float32)
    if channels_first is None:
        channels_first = pred.shape[0] < pred.shape[1]
    rows = pred.T if channels_first else pred  # -> [anchors, 4(+1)+nc]
    if objectness:
        cls_scores = rows[:, 5:] * rows[:, 4:5]
    else:
        cls_scores = rows[:, 4:]
    boxes = rows[:, :4]
    if cls_scores.shape[1] == 0:
        return np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64)
    if keep is not None:
        cls_scores = np.where(np.asarray(keep, bool)[None, :cls_scores.shape[1]], cls_scores, -1.0)
    classes = cls_scores.argmax(axis=1)
    scores = cls_scores[np.arange(len(classes)), classes]
    sel = scores >= conf
    boxes, scores, classes = xywh_to_xyxy(boxes[sel]), scores[sel], classes[sel]
    idx = nms(boxes, scores, iou, classes=classes, max_det=max_det)
    return boxes[idx], scores[idx], classes[idx].astype(np.int64)


def decode_nms7(out: np.ndarray, n_images: int, conf: float) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """End-to-end ``[N, 7]`` = batch, x1, y1, x2, y2, class, score -> per image (boxes, scores, classes)."""
    out = np.asarray(out, dtype=np.float32).reshape(-1, 7)
    result = []
    for i in range(n_images):
        rows = out[(out[:, 0].round() == i) & (out[:, 6] >= conf)]
        result.append((rows[:, 1:5], rows[:, 6], rows[:, 5].round().astype(np.int64)))
    return result


def decode_nms6(out: np.ndarray, conf: float) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """End-to-end ``[B, N, 6]`` = x1, y1, x2, y2, score, class -> per image (boxes, scores, classes)."""
    out = np.asarray(out, dtype=np.float32)
    if out.ndim == 2:
        out = out[None]
    result = []
    for rows in out:
        rows = rows[rows[:, 4] >= conf]
        result.append((rows[:, :4], rows[:, 4], rows[:, 5].round().astype(np.int64)))
    return result


def guess_layout(shape: Sequence[Any]) -> str:
    """The layout of an output from its shape (see the module docstring)."""
    dims = list(shape)
    if len(dims) == 2 and dims[-1] == 7:
        return "nms7"
    if len(dims) == 3 and dims[-1] == 6:
        return "nms6"
    if len(dims) == 3:
        return "raw"
    raise ValueError(f"cannot tell the layout of a YOLO output of shape {tuple(shape)}; set `layout`")


# -- classes ----------------------------------------------------------------------------------


class ClassMap:
    """Which model classes to report and as what (kind, label) of docs/vision.md.

    ``kind``: ``plate`` (every kept class is a plate), ``vehicle`` (car/truck/bus/motorcycle by
    default), ``auto`` (class names decide: "...plate..." -> plate, vehicle names -> vehicle,
    the rest dropped; an unnamed model that is not an 80-class COCO model is taken for a plate
    detector). ``classes`` narrows (or, for ``vehicle``, widens) the kept classes, by name or id.
    """

    def __init__(self, kind: str, names: dict[int, str] | None, classes: Sequence[str | int] | None,
                 nc: int | None = None) -> None:
        if kind not in ("plate", "vehicle", "auto"):
            raise ValueError(f"kind must be plate, vehicle or auto, got {kind!r}")
        if names is None and nc == 80:
            names = dict(enumerate(COCO_NAMES))
        self.kind = kind
        self.names = names
        self.classes = list(classes) if classes else None
        self._cache: dict[int, tuple[str, str] | None] = {}

    def name(self, cls: int) -> str:
        if self.names and cls in self.names:
            return self.names[cls]
        return f"class{cls}"

    def _wanted(self, cls: int) -> bool | None:
        """True/False when ``classes`` decides, None when it does not say."""
        if self.classes is None:
            return None
        name = self.name(cls).lower()
        return any((isinstance(c, int) and c == cls) or (isinstance(c, str) and (c.lower() == name or c == str(cls)))
                   for c in self.classes)

    def map(self, cls: int) -> tuple[str, str] | None:
        """(kind, label) for a class id, or None to drop it."""
        if cls in self._cache:
            return self._cache[cls]
        wanted = self._wanted(cls)
        result: tuple[str, str] | None
        name = self.name(cls)
        if wanted is False:
            result = None
        elif self.kind == "plate":
            result = ("plate", "plate")
        elif self.kind == "vehicle":
            label = vehicle_label(name)
            result = ("vehicle", label) if label else (("vehicle", name.lower()) if wanted else None)
        else:  # auto
            if self.names is None:
                result = ("plate", "plate")
            elif plate_label(name):
                result = ("plate", "plate")
            else:
                label = vehicle_label(name)
                result = ("vehicle", label) if label else None
        self._cache[cls] = result
        return result

    def keep_mask(self, nc: int) -> np.ndarray:
        return np.array([self.map(c) is not None for c in range(nc)], dtype=bool)

    def describe(self, nc: int | None) -> str:
        ids = range(nc) if nc else sorted(self.names or {})
        kept = [f"{c}:{self.name(c)}->{self.map(c)[1]}" for c in ids if self.map(c)]
        if not kept and not nc and not self.names:
            return "all classes -> plate" if self.kind in ("plate", "auto") else "none"
        return ", ".join(kept[:12]) + (" ..." if len(kept) > 12 else "")


# -- the detector -----------------------------------------------------------------------------


class YoloDetectorBase(Detector):
    """Letterbox, batch and decode; subclasses run the network (:meth:`infer`)."""

    def __init__(self, model: str, *, kind: str = "auto", classes: Sequence[str | int] | None = None,
                 conf: float = 0.25, iou: float = 0.45, batch_size: int = 8, layout: str = "auto",
                 max_det: int = 300, name: str | None = None) -> None:
        if layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
        self.model = str(model)
        self.kind = kind
        self.class_filter = classes
        self.conf = conf
        self.iou = iou
        self.batch_size = max(1, batch_size)
        self.layout = layout
        self.max_det = max_det
        self.name = name or f"yolo:{Path(self.model).stem}"
        # set by subclasses once the model is open
        self.input_hw: tuple[int, int] = (640, 640)
        self.max_batch: int = self.batch_size
        self.input_dtype: Any = np.float32
        self.names: dict[int, str] | None = None
        self.classmap = ClassMap(kind, None, classes)

    def infer(self, batch: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def warmup(self) -> None:
        self.detect([np.zeros((self.input_hw[0], self.input_hw[1], 3), np.uint8)])

    def preprocess(self, images: Sequence[np.ndarray]) -> tuple[np.ndarray, list[Letterbox]]:
        batch = np.empty((len(images), 3, *self.input_hw), dtype=self.input_dtype)
        boxes = []
        for i, image in enumerate(images):
            if image.ndim == 2:
                import cv2

                image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
            canvas, lb = letterbox(image, self.input_hw)
            batch[i] = canvas[:, :, ::-1].transpose(2, 0, 1) * np.float32(1 / 255.0)  # BGR -> RGB, 0..1
            boxes.append(lb)
        return batch, boxes

    def detect(self, images: Sequence[np.ndarray]) -> list[list[Detection]]:
        results: list[list[Detection]] = []
        step = max(1, min(self.batch_size, self.max_batch))
        for start in range(0, len(images), step):
            chunk = images[start:start + step]
            batch, lbs = self.preprocess(chunk)
            n = len(chunk)
            if self.max_batch > n and self.fixed_batch:
                pad = np.zeros((self.max_batch - n, *batch.shape[1:]), dtype=batch.dtype)
                batch = np.concatenate([batch, pad])
            out = self.infer(batch)
            for (boxes, scores, classes), lb in zip(self.decode(out, n), lbs):
                results.append(self._detections(boxes, scores, classes, lb))
        return results

    fixed_batch = False

    def decode(self, out: np.ndarray, n: int) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        layout = self.layout if self.layout != "auto" else guess_layout(out.shape)
        if layout == "nms7":
            return decode_nms7(out, n, self.conf)
        if layout == "nms6":
            return decode_nms6(out, self.conf)[:n]
        objectness = layout == "raw_obj"
        extra = 5 if objectness else 4
        per_image = []
        for i in range(n):
            pred = out[i]
            first = self._channels_first(pred.shape, extra)
            nc = (pred.shape[0] if first else pred.shape[1]) - extra
            if self.classmap.names is None and nc == 80 and self.names is None:
                self.classmap = ClassMap(self.kind, None, self.class_filter, nc=80)
            per_image.append(decode_raw(pred, self.conf, self.iou, self.classmap.keep_mask(nc), objectness,
                                        self.max_det, channels_first=first))
        return per_image

    def _channels_first(self, shape: Sequence[int], extra: int) -> bool:
        """Which axis of ``[a, b]`` holds box + class values: the one matching the class names
        (or COCO's 80), else the shorter one."""
        expected = [extra + len(self.names)] if self.names else []
        expected.append(extra + len(COCO_NAMES))
        for channels in expected:
            if shape[0] == channels and shape[1] != channels:
                return True
            if shape[1] == channels and shape[0] != channels:
                return False
        return shape[0] < shape[1]

    def _detections(self, boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray, lb: Letterbox) -> list[Detection]:
        if len(boxes) == 0:
            return []
        frame_boxes = lb.to_frame(boxes)
        out = []
        for box, score, cls in zip(frame_boxes, scores, classes):
            mapped = self.classmap.map(int(cls))
            if mapped is None or box[2] - box[0] < 1 or box[3] - box[1] < 1:
                continue
            out.append(Detection((float(box[0]), float(box[1]), float(box[2]), float(box[3])), float(score),
                                 mapped[0], mapped[1], self.name))
        out.sort(key=lambda d: -d.score)
        return out[: self.max_det]


class YoloOnnxDetector(YoloDetectorBase):
    """A YOLO ``.onnx`` run by ONNX Runtime (CPU, CUDA or TensorRT execution provider)."""

    def __init__(self, model: str, *, providers: str | Sequence[str] = "auto", threads: int | None = None,
                 input_size: int | Sequence[int] | None = None, dequantize: bool = True, **kw: Any) -> None:
        super().__init__(model, **kw)
        self.session = make_session(self.model, providers=providers, threads=threads, dequantize=dequantize)
        self.providers = self.session.get_providers()
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self.output_name = self.session.get_outputs()[0].name
        meta = self.session.get_modelmeta().custom_metadata_map or {}
        self.metadata = dict(meta)
        shape = list(inp.shape)
        if len(shape) != 4:
            raise ValueError(f"{Path(self.model).name}: expected an image input [B, 3, H, W], got {shape}")
        self.input_dtype = np.float16 if "float16" in inp.type else np.float32
        fixed_hw = all(isinstance(v, int) and v > 0 for v in shape[2:])
        wanted = _hw(input_size) if input_size else None
        if fixed_hw:
            self.input_hw = (int(shape[2]), int(shape[3]))
            if wanted and wanted != self.input_hw:
                raise ValueError(f"{Path(self.model).name} takes a fixed input of {self.input_hw[1]}x{self.input_hw[0]}, "
                                 f"not input_size {wanted[1]}x{wanted[0]}; leave input_size unset or re-export the model")
        else:
            self.input_hw = wanted or _hw(parse_names_imgsz(meta.get("imgsz"))) or (640, 640)
        if isinstance(shape[0], int) and shape[0] > 0:
            self.max_batch = int(shape[0])
            self.fixed_batch = True
        else:
            self.max_batch = self.batch_size
        self.names = parse_names(meta.get("names"))
        out_shape = self.session.get_outputs()[0].shape
        nc = None
        if self.layout in ("auto", "raw") and len(out_shape) == 3 and all(isinstance(v, int) for v in out_shape[1:]) \
                and out_shape[2] not in (6, 7):
            nc = out_shape[1 if self._channels_first(out_shape[1:], 4) else 2] - 4
        self.classmap = ClassMap(kind=self.kind, names=self.names, classes=self.class_filter, nc=nc)
        log.info("%s: input %dx%d, batch %s, providers %s, classes %s", Path(self.model).name, self.input_hw[1],
                 self.input_hw[0], self.max_batch if self.fixed_batch else "dynamic", ",".join(self.providers),
                 self.classmap.describe(nc))

    def infer(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run([self.output_name], {self.input_name: batch})[0]

    def close(self) -> None:
        self.session = None


def parse_names_imgsz(value: Any) -> Any:
    """Ultralytics writes ``imgsz`` as ``"[640, 640]"``."""
    if value is None:
        return None
    import ast

    try:
        return ast.literal_eval(value) if isinstance(value, str) else value
    except (ValueError, SyntaxError):
        return None


def _hw(size: Any) -> tuple[int, int] | None:
    """An input size as (height, width) from 640, [640] or [h, w]."""
    if size is None:
        return None
    if isinstance(size, (int, np.integer)):
        return int(size), int(size)
    vals = [int(v) for v in size]
    if len(vals) == 1:
        return vals[0], vals[0]
    return vals[0], vals[1]
