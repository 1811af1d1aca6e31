"""Detection: letterbox math, YOLO decoders (raw and end-to-end), the embedded PP-OCR plate
detector, motion, plate-vehicle association, provider and TensorRT fallbacks, model-file checks.

The raw-output decoder is tested with a small ONNX graph written here byte by byte: it ignores
the image and emits a crafted ``[B, 84, N]`` tensor, so NMS, class filtering and the letterbox
mapping are checked against known answers.
Tests needing the shared models or photos (``../shared``) skip with the reason when absent.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from alpr_topo.core.testing import StageHarness
from alpr_topo.stages import det_tensorrt, det_yolo, detect
from alpr_topo.stages.det_base import (COCO_NAMES, Detection, associate, box_iou, iou_matrix, letterbox, nms,
                                       parse_names)
from alpr_topo.stages.det_yolo import (ClassMap, YoloOnnxDetector, decode_nms6, decode_nms7, decode_raw,
                                       guess_layout, resolve_providers)

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
PLATE_MODEL = SHARED / "models" / "plate-detector-yolov9t-416-int8.onnx"
OPENALPR_US = SHARED / "data" / "openalpr-us"
THREADS = 2
SAMPLES = ("car13", "wts-lg-000010", "wts-lg-000126", "us3")


def need(path: Path) -> None:
    if not path.exists():
        pytest.skip(f"{path} is absent (tests use ../shared relative to the repository; see DESIGN.md)")


def truth(name: str) -> tuple[np.ndarray, list[float], str]:
    image = cv2.imread(str(OPENALPR_US / f"{name}.jpg"))
    _, x, y, w, h, text = (OPENALPR_US / f"{name}.txt").read_text().strip().split("\t")[:6]
    x, y, w, h = (float(v) for v in (x, y, w, h))
    return image, [x, y, x + w, y + h], text


# -- a tiny ONNX writer (protobuf wire format) ------------------------------------------------


def _varint(n: int) -> bytes:
    n &= (1 << 64) - 1
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _f(num: int, value: object) -> bytes:
    """One protobuf field: int -> varint, str/bytes -> length-delimited."""
    if isinstance(value, int):
        return _varint(num << 3) + _varint(value)
    data = value.encode() if isinstance(value, str) else bytes(value)
    return _varint((num << 3) | 2) + _varint(len(data)) + data


def _tensor(name: str, array: np.ndarray) -> bytes:
    dtype = {np.dtype(np.float32): 1, np.dtype(np.int64): 7}[array.dtype]
    return b"".join(_f(1, int(d)) for d in array.shape) + _f(2, dtype) + _f(8, name) + _f(9, array.tobytes())


def _value_info(name: str, dims: list) -> bytes:
    shape = b"".join(_f(1, _f(2, d) if isinstance(d, str) else _f(1, d)) for d in dims)
    return _f(1, name) + _f(2, _f(1, _f(1, 1) + _f(2, shape)))


def _node(op: str, inputs: list[str], outputs: list[str], ints: dict[str, list[int]] | None = None,
          scalars: dict[str, int] | None = None) -> bytes:
    body = b"".join(_f(1, i) for i in inputs) + b"".join(_f(2, o) for o in outputs) + _f(4, op)
    for key, values in (ints or {}).items():
        body += _f(5, _f(1, key) + b"".join(_f(8, v) for v in values) + _f(20, 7))
    for key, value in (scalars or {}).items():
        body += _f(5, _f(1, key) + _f(3, value) + _f(20, 2))
    return body


def write_raw_yolo(path: Path, pred: np.ndarray, size: int = 64, names: str | None = None,
                   dynamic_batch: bool = True) -> Path:
    """An ONNX model: images [B,3,size,size] -> output0 [B, C, N] = ``pred`` for every image."""
    channels, anchors = pred.shape
    nodes = [
        _node("ReduceMax", ["images"], ["m"], ints={"axes": [1, 2, 3]}, scalars={"keepdims": 1}),
        _node("Reshape", ["m", "shape"], ["m2"]),
        _node("Mul", ["m2", "zero"], ["z"]),
        _node("Add", ["pred", "z"], ["output0"]),
    ]
    inits = [_tensor("pred", pred[None].astype(np.float32)), _tensor("shape", np.array([-1, 1, 1], np.int64)),
             _tensor("zero", np.zeros(1, np.float32))]
    batch = "batch" if dynamic_batch else 1
    graph = (b"".join(_f(1, n) for n in nodes) + _f(2, "crafted") + b"".join(_f(5, t) for t in inits)
             + _f(11, _value_info("images", [batch, 3, size, size]))
             + _f(12, _value_info("output0", [batch, channels, anchors])))
    model = _f(1, 8) + _f(2, "alpr-topo-test") + _f(7, graph) + _f(8, _f(1, "") + _f(2, 13))
    if names is not None:
        model += _f(14, _f(1, "names") + _f(2, names))
    path.write_bytes(model)
    return path


def raw_pred(rows: list[tuple[float, float, float, float, int, float]], nc: int = 80) -> np.ndarray:
    """[4+nc, N] from (cx, cy, w, h, class, score) rows."""
    pred = np.zeros((4 + nc, len(rows)), np.float32)
    for i, (cx, cy, w, h, cls, score) in enumerate(rows):
        pred[:4, i] = (cx, cy, w, h)
        pred[4 + cls, i] = score
    return pred


CAR, TRUCK, BUS, PERSON = COCO_NAMES.index("car"), COCO_NAMES.index("truck"), COCO_NAMES.index("bus"), 0
ROWS = [
    (20, 30, 10, 8, CAR, 0.9),     # kept
    (21, 30, 10, 8, CAR, 0.8),     # same car, lower score: suppressed by NMS
    (21, 30, 10, 8, TRUCK, 0.7),   # same place but another class: class-aware NMS keeps it
    (40, 40, 8, 8, PERSON, 0.95),  # not a vehicle
    (50, 20, 6, 6, CAR, 0.1),      # below conf
    (44, 24, 12, 10, BUS, 0.6),    # kept
    (10, 10, 4, 4, CAR, 0.0),      # empty anchors: 8 in all, so [1, 84, 8] cannot pass for
    (12, 12, 4, 4, CAR, 0.0),      # an end-to-end [B, N, 6] output
]


@pytest.fixture(scope="module")
def crafted(tmp_path_factory) -> Path:
    return write_raw_yolo(tmp_path_factory.mktemp("onnx") / "crafted-coco.onnx", raw_pred(ROWS))


# -- letterbox and boxes -----------------------------------------------------------------------


def test_letterbox_keeps_ratio_pads_114_and_maps_boxes_back() -> None:
    image = np.full((200, 400, 3), 255, np.uint8)
    image[50:150, 100:300] = 0  # a black box in the frame
    canvas, lb = letterbox(image, (416, 416))
    assert canvas.shape == (416, 416, 3)
    assert lb.ratio == pytest.approx(416 / 400)
    assert (lb.pad_x, lb.pad_y) == (0, (416 - 208) // 2)
    assert (canvas[: lb.pad_y] == 114).all() and (canvas[lb.pad_y + 208:] == 114).all()
    frame_box = np.array([[100, 50, 300, 150]], np.float32)
    in_input = lb.to_input(frame_box)
    x1, y1, x2, y2 = in_input[0].round().astype(int)
    assert canvas[y1 + 2:y2 - 2, x1 + 2:x2 - 2].max() < 40  # the box lands on the black area
    np.testing.assert_allclose(lb.to_frame(in_input), frame_box, atol=1e-3)


def test_letterbox_tall_frame_and_clipping() -> None:
    image = np.zeros((300, 100, 3), np.uint8)
    canvas, lb = letterbox(image, (64, 96))  # (height, width)
    assert canvas.shape == (64, 96, 3)
    assert lb.ratio == pytest.approx(64 / 300)
    assert lb.pad_y == 0 and lb.pad_x == (96 - round(100 * 64 / 300)) // 2
    out = lb.to_frame(np.array([[-50, -10, 500, 500]], np.float32))[0]
    assert out.tolist() == [0, 0, 100, 300]  # clipped to the frame


def test_iou_and_nms() -> None:
    assert box_iou([0, 0, 10, 10], [5, 0, 15, 10]) == pytest.approx(50 / 150)
    assert box_iou([0, 0, 1, 1], [2, 2, 3, 3]) == 0.0
    boxes = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [20, 20, 30, 30], [1, 0, 11, 10]], np.float32)
    m = iou_matrix(boxes, boxes)
    assert m.shape == (4, 4) and m[0, 0] == pytest.approx(1.0)
    scores = np.array([0.9, 0.8, 0.7, 0.6], np.float32)
    assert nms(boxes, scores, 0.5).tolist() == [0, 2]
    assert nms(boxes, scores, 0.5, classes=np.array([0, 0, 0, 1])).tolist() == [0, 2, 3]


def test_parse_names_forms() -> None:
    assert parse_names("{0: 'person', 1: 'car'}") == {0: "person", 1: "car"}
    assert parse_names('["plate"]') == {0: "plate"}
    assert parse_names('{"0": "License Plate"}') == {0: "License Plate"}
    assert parse_names("not a literal {") is None
    assert parse_names(None) is None


# -- raw decoder -------------------------------------------------------------------------------


def test_decode_raw_nms_conf_and_class_filter() -> None:
    pred = raw_pred(ROWS)
    keep = ClassMap("vehicle", None, None, nc=80).keep_mask(80)
    boxes, scores, classes = decode_raw(pred, conf=0.25, iou=0.45, keep=keep, channels_first=True)
    assert sorted((c, round(float(v), 2)) for c, v in zip(classes.tolist(), scores)) == [(CAR, 0.9), (BUS, 0.6), (TRUCK, 0.7)]
    car = boxes[classes == CAR][0]
    np.testing.assert_allclose(car, [15, 26, 25, 34])  # cx,cy,w,h -> x1,y1,x2,y2
    # the transposed layout [N, 4+nc] decodes the same
    b2, s2, c2 = decode_raw(pred.T.copy(), conf=0.25, iou=0.45, keep=keep, channels_first=False)
    assert sorted(c2.tolist()) == sorted(classes.tolist())
    # without a class filter the person comes back, and it suppresses nothing of another class
    _, _, all_classes = decode_raw(pred, conf=0.25, iou=0.45, channels_first=True)
    assert PERSON in all_classes.tolist() and CAR in all_classes.tolist()
    # with many anchors (as in a real [84, 8400] output) the orientation is guessed right
    wide = np.zeros((84, 500), np.float32)
    wide[:, : pred.shape[1]] = pred
    _, _, guessed = decode_raw(wide, conf=0.25, iou=0.45, keep=keep)
    assert sorted(guessed.tolist()) == sorted(classes.tolist())


def test_decode_end_to_end_layouts() -> None:
    nms7 = np.array([[0, 1, 2, 11, 12, 0, 0.9], [1, 5, 5, 9, 9, 0, 0.8], [0, 3, 3, 4, 4, 0, 0.1]], np.float32)
    per_image = decode_nms7(nms7, 2, conf=0.25)
    assert [len(b) for b, _, _ in per_image] == [1, 1]
    assert per_image[0][0].tolist() == [[1, 2, 11, 12]]
    nms6 = np.array([[[1, 2, 3, 4, 0.9, 2], [0, 0, 0, 0, 0.0, 0]]], np.float32)
    (boxes, scores, classes), = decode_nms6(nms6, conf=0.25)
    assert boxes.tolist() == [[1, 2, 3, 4]] and classes.tolist() == [2]
    assert guess_layout(["n", 7]) == "nms7"
    assert guess_layout([1, 300, 6]) == "nms6"
    assert guess_layout([1, 84, 8400]) == "raw"


def test_crafted_onnx_vehicles_nms_and_letterbox_mapping(crafted: Path) -> None:
    det = YoloOnnxDetector(str(crafted), kind="vehicle", threads=THREADS, providers="cpu")
    assert det.input_hw == (64, 64) and not det.fixed_batch  # dynamic batch, size from the model
    frame = np.zeros((64, 128, 3), np.uint8)  # letterboxed: ratio 0.5, 16 rows of padding on top
    dets = det.detect([frame])[0]
    assert [(d.label, round(d.score, 2)) for d in dets] == [("car", 0.9), ("truck", 0.7), ("bus", 0.6)]
    assert all(d.kind == "vehicle" and d.detector == "yolo:crafted-coco" for d in dets)
    car = dets[0].box
    np.testing.assert_allclose(car, [15 / 0.5, (26 - 16) / 0.5, 25 / 0.5, (34 - 16) / 0.5], atol=1e-4)


def test_crafted_onnx_classes_param_and_kind_auto(crafted: Path) -> None:
    only_cars = YoloOnnxDetector(str(crafted), kind="vehicle", classes=["car"], threads=THREADS, providers="cpu")
    assert [d.label for d in only_cars.detect([np.zeros((64, 64, 3), np.uint8)])[0]] == ["car"]
    auto = YoloOnnxDetector(str(crafted), kind="auto", threads=THREADS, providers="cpu")  # 80 unnamed -> COCO
    assert sorted(d.label for d in auto.detect([np.zeros((64, 64, 3), np.uint8)])[0]) == ["bus", "car", "truck"]


def test_crafted_onnx_names_metadata_gives_plates_and_vehicles(tmp_path: Path) -> None:
    rows = [(10, 10, 8, 4, 0, 0.9), (40, 40, 20, 20, 1, 0.8), (30, 10, 5, 5, 2, 0.85), (5, 5, 2, 2, 0, 0.0)]
    model = write_raw_yolo(tmp_path / "two.onnx", raw_pred(rows, nc=3),
                           names="{0: 'license_plate', 1: 'car', 2: 'traffic light'}")
    det = YoloOnnxDetector(str(model), kind="auto", threads=THREADS, providers="cpu")
    got = sorted((d.kind, d.label) for d in det.detect([np.zeros((64, 64, 3), np.uint8)])[0])
    assert got == [("plate", "plate"), ("vehicle", "car")]


def test_batches_across_frames_in_chunks(crafted: Path) -> None:
    det = YoloOnnxDetector(str(crafted), kind="vehicle", batch_size=2, threads=THREADS, providers="cpu")
    shapes = []
    real = det.infer
    det.infer = lambda batch: shapes.append(batch.shape[0]) or real(batch)  # type: ignore[method-assign]
    frames = [np.zeros((64, 64, 3), np.uint8), np.zeros((64, 128, 3), np.uint8), np.zeros((32, 64, 3), np.uint8)]
    results = det.detect(frames)
    assert shapes == [2, 1]
    assert [len(r) for r in results] == [3, 3, 3]
    assert results[0][0].box != results[1][0].box  # each frame's own letterbox


def test_fixed_batch_model_runs_per_frame(tmp_path: Path) -> None:
    model = write_raw_yolo(tmp_path / "fixed.onnx", raw_pred(ROWS), dynamic_batch=False)
    det = YoloOnnxDetector(str(model), kind="vehicle", batch_size=8, threads=THREADS, providers="cpu")
    assert det.fixed_batch and det.max_batch == 1
    assert [len(r) for r in det.detect([np.zeros((64, 64, 3), np.uint8)] * 3)] == [3, 3, 3]


def test_fixed_input_size_mismatch_is_an_error(crafted: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="fixed input of 64x64"):
        YoloOnnxDetector(str(crafted), input_size=640, threads=THREADS, providers="cpu")


# -- the shared plate detector (end-to-end, NMS inside) ----------------------------------------


@pytest.fixture(scope="module")
def plate_yolo() -> YoloOnnxDetector:
    need(PLATE_MODEL)
    det = YoloOnnxDetector(str(PLATE_MODEL), kind="plate", threads=THREADS, providers="cpu")
    det.warmup()
    return det


def test_e2e_plate_detector_on_real_photos(plate_yolo: YoloOnnxDetector) -> None:
    need(OPENALPR_US)
    assert plate_yolo.input_hw == (416, 416) and plate_yolo.fixed_batch and plate_yolo.max_batch == 1
    frames, truths = zip(*[truth(n)[:2] for n in SAMPLES])
    results = plate_yolo.detect(list(frames))  # batch of 4 run one by one (fixed batch 1)
    for name, dets, gt in zip(SAMPLES, results, truths):
        assert dets, name
        assert all(d.kind == "plate" and d.label == "plate" for d in dets)
        assert max(box_iou(d.box, gt) for d in dets) > 0.5, name


def test_yolo_stage_appends_and_keeps_earlier_detections() -> None:
    need(PLATE_MODEL)
    need(OPENALPR_US)
    image, gt, _ = truth("car13")
    h, w = image.shape[:2]
    earlier = {"box": [0.0, 0.0, float(w), float(h)], "score": 0.9, "kind": "vehicle", "label": "car", "detector": "x"}
    with StageHarness("detect.yolo", {"model": str(PLATE_MODEL), "threads": THREADS, "kind": "plate"}) as hs:
        out = hs.process(hs.frame_envelope(image, detections=[earlier]))
    dets = out[0].detections
    assert dets[0]["detector"] == "x"
    plates = [d for d in dets if d["kind"] == "plate"]
    assert plates and plates[0]["vehicle"] == 0 and plates[0]["detector"] == "yolo:plate-detector-yolov9t-416-int8"
    assert set(plates[0]) == {"box", "score", "kind", "label", "detector", "vehicle"}
    assert box_iou(plates[0]["box"], gt) > 0.5
    assert hs.counters["plates"] >= 1


# -- the embedded default ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def plates_harness():
    with StageHarness("detect.plates", {"threads": THREADS}) as h:
        yield h


def test_embedded_default_finds_plates_on_real_photos(plates_harness) -> None:
    need(OPENALPR_US)
    for name in SAMPLES:
        image, gt, _ = truth(name)
        dets = plates_harness.process(plates_harness.frame_envelope(image))[0].detections
        assert dets, name
        assert all(d["kind"] == "plate" and d["detector"] in ("ppocr-det", "contours") for d in dets)
        assert max(box_iou(d["box"], gt) for d in dets) > 0.4, name


def test_embedded_default_synthetic_plate_and_blank_frame(plates_harness) -> None:
    frame = np.full((480, 640, 3), 90, np.uint8)
    cv2.rectangle(frame, (230, 300), (430, 400), (235, 235, 235), -1)  # 2:1, characters ~45% of its height
    cv2.putText(frame, "7ABC123", (243, 372), cv2.FONT_HERSHEY_SIMPLEX, 1.5, (20, 20, 20), 4)
    dets = plates_harness.process(plates_harness.frame_envelope(frame))[0].detections
    assert len(dets) == 1
    assert box_iou(dets[0]["box"], [230, 300, 430, 400]) > 0.6  # grown from the text to the plate's edges
    blank = plates_harness.process(plates_harness.frame_envelope(np.full((480, 640, 3), 128, np.uint8)))
    assert blank[0].detections == []


def test_embedded_models_come_from_rapidocr() -> None:
    from alpr_topo.stages.det_ppocr import DET_MODEL_NAME, REC_MODEL_NAME, embedded_model, text_plausibility

    for name in (DET_MODEL_NAME, REC_MODEL_NAME):
        path = embedded_model(name)
        assert path.is_file() and "rapidocr_onnxruntime" in str(path)
    assert text_plausibility("7ABC123", 0.95) > 0.8
    assert text_plausibility("2014-05-13 07:41:21", 0.95) < 0.3  # a camera's clock
    assert text_plausibility("Lamborghini", 0.95) < 0.3
    assert text_plausibility("", 1.0) == 0.0


def test_classic_fallback_alone_finds_a_contrasted_plate() -> None:
    from alpr_topo.stages.det_classic import ClassicPlateDetector

    frame = np.full((480, 640, 3), 70, np.uint8)
    cv2.rectangle(frame, (260, 300), (420, 380), (230, 230, 230), -1)  # 2:1, characters ~45% of its height
    cv2.putText(frame, "4KB918", (270, 357), cv2.FONT_HERSHEY_SIMPLEX, 1.45, (10, 10, 10), 4)
    dets = ClassicPlateDetector().detect([frame])[0]
    assert dets and max(box_iou(d.box, [260, 300, 420, 380]) for d in dets) > 0.4
    assert all(d.detector == "contours" for d in dets)


# -- motion -----------------------------------------------------------------------------------


def _scene(rng: np.random.Generator, x: int | None) -> np.ndarray:
    """A noisy grey road, with a red 60x40 "vehicle" at column ``x`` (None: empty road)."""
    frame = np.full((240, 320, 3), 100, np.uint8)
    frame[:, :, 1] = 110
    noise = rng.integers(-3, 4, frame.shape, dtype=np.int16)
    frame = np.clip(frame.astype(np.int16) + noise, 0, 255).astype(np.uint8)
    if x is not None:
        cv2.rectangle(frame, (x, 120), (x + 60, 160), (30, 30, 200), -1)
    return frame


def test_motion_finds_a_moving_rectangle_per_camera() -> None:
    rng = np.random.default_rng(1)
    params = {"warmup_frames": 5, "work_width": 320}
    with StageHarness("detect.motion", params) as h:
        found = []
        for i in range(40):  # the empty road first: the background is learnt
            assert h.process(h.frame_envelope(_scene(rng, None), camera_id="a", frame_id=i))[0].detections == []
        for i in range(40, 60):
            x = 10 + 8 * (i - 40)
            out = h.process(h.frame_envelope(_scene(rng, x), camera_id="a", frame_id=i))[0]
            if i >= 42:
                found.append((out.detections, [x, 120, x + 60, 160]))
        for dets, box in found:
            assert len(dets) == 1
            d = dets[0]
            assert (d["kind"], d["label"], d["detector"]) == ("vehicle", "vehicle", "motion")
            assert box_iou(d["box"], box) > 0.5
        # another camera starts with its own, empty background: nothing during its warm-up
        other = h.process(h.frame_envelope(_scene(rng, 100), camera_id="b", frame_id=0))[0]
        assert other.detections == []
        assert set(h.stage.detector.cameras) == {"a", "b"}
    assert detect.MotionStage.ordered  # a camera's frames stay in order, on one replica


def test_motion_static_scene_reports_nothing() -> None:
    rng = np.random.default_rng(2)
    with StageHarness("detect.motion", {"warmup_frames": 3}) as h:
        for i in range(15):
            out = h.process(h.frame_envelope(_scene(rng, 100), frame_id=i))[0]
        assert out.detections == []


# -- association ------------------------------------------------------------------------------


def test_association_plate_inside_lower_part_of_vehicle() -> None:
    dets = [
        {"box": [0, 0, 200, 150], "kind": "vehicle"},        # 0: car behind
        {"box": [100, 60, 400, 300], "kind": "vehicle"},     # 1: car in front, overlapping
        {"box": [220, 250, 280, 275], "kind": "plate"},      # inside 1 only
        {"box": [80, 120, 120, 140], "kind": "plate"},       # inside 0 (and 1's top-left corner area? no: x<100)
        {"box": [150, 110, 190, 130], "kind": "plate"},      # inside both: lower part of 0, top of 1
        {"box": [500, 500, 540, 520], "kind": "plate"},      # inside none
        {"box": [60, 5, 100, 20], "kind": "plate"},          # top of 0 (a roof sign): not a plate of it
    ]
    associate(dets)
    assert [d.get("vehicle") for d in dets[2:]] == [1, 0, 0, None, None]
    assert "vehicle" not in dets[0]


def test_detection_to_dict_is_plain() -> None:
    d = Detection((np.float32(1.5), 2, 3, 4), np.float64(0.5), "plate", "plate", "t").to_dict()
    assert d == {"box": [1.5, 2.0, 3.0, 4.0], "score": 0.5, "kind": "plate", "label": "plate", "detector": "t",
                 "vehicle": None}
    assert all(type(v) is float for v in d["box"])


# -- providers and backends -------------------------------------------------------------------


def test_auto_providers_pick_gpu_first_when_offered() -> None:
    assert resolve_providers("auto", ["CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    offered = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    assert resolve_providers("auto", offered) == offered
    assert resolve_providers(["cuda", "cpu"], offered) == ["CUDAExecutionProvider", "CPUExecutionProvider"]


def test_missing_gpu_provider_falls_back_to_cpu_with_one_warning(monkeypatch, caplog) -> None:
    monkeypatch.setattr(det_yolo, "_warned", set())
    caplog.set_level(logging.WARNING, logger="alpr_topo.detect.yolo")
    for _ in range(3):
        assert resolve_providers(["cuda"], ["CPUExecutionProvider"], what="m.onnx") == ["CPUExecutionProvider"]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    text = warnings[0].getMessage()
    assert "CUDAExecutionProvider" in text and "CPUExecutionProvider" in text and "onnxruntime-gpu" in text


def test_session_on_missing_gpu_provider_still_runs(crafted: Path, monkeypatch, caplog) -> None:
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has CUDA: nothing falls back")
    monkeypatch.setattr(det_yolo, "_warned", set())
    caplog.set_level(logging.WARNING, logger="alpr_topo.detect.yolo")
    det = YoloOnnxDetector(str(crafted), kind="vehicle", providers=["cuda"], threads=THREADS)
    assert det.providers == ["CPUExecutionProvider"]
    assert len(det.detect([np.zeros((64, 64, 3), np.uint8)])[0]) == 3
    assert sum("CUDAExecutionProvider" in r.getMessage() for r in caplog.records) == 1


def test_tensorrt_engine_cache_path_is_keyed_by_gpu_and_version() -> None:
    p = det_tensorrt.engine_path("models/plate.onnx", gpu="NVIDIA GeForce RTX 3060", trt_version="10.3.0")
    assert p == Path("models/plate.nvidia-geforce-rtx-3060.trt10.3.0.fp16.engine")
    orin = det_tensorrt.engine_path("models/plate.onnx", gpu="Orin (nvgpu)", trt_version="8.6.2", fp16=False)
    assert orin == Path("models/plate.orin-nvgpu.trt8.6.2.fp32.engine")
    assert det_tensorrt.engine_path("m/x.onnx", gpu="A", trt_version="10.3.0") != \
        det_tensorrt.engine_path("m/x.onnx", gpu="B", trt_version="10.3.0")
    assert det_tensorrt.slug("NVIDIA H100 80GB HBM3") == "nvidia-h100-80gb-hbm3"


def test_tensorrt_backend_falls_back_to_onnxruntime_with_one_warning(crafted: Path, monkeypatch, caplog) -> None:
    monkeypatch.setattr(det_tensorrt, "availability", lambda: (False, "no TensorRT in this test"))
    monkeypatch.setattr(detect, "_fallback_warned", set())
    caplog.set_level(logging.WARNING)
    params = detect.YoloParams(model=str(crafted), backend="tensorrt", kind="vehicle", threads=THREADS, providers="cpu")
    for _ in range(2):
        det = detect.make_yolo_detector(params)
        assert isinstance(det, YoloOnnxDetector)
    msgs = [r.getMessage() for r in caplog.records if "tensorrt" in r.getMessage().lower()]
    assert len(msgs) == 1 and "no TensorRT in this test" in msgs[0] and "ONNX Runtime" in msgs[0]
    with pytest.raises(det_tensorrt.TensorRTUnavailable, match="no TensorRT in this test"):
        det_tensorrt.build_engine(str(crafted))


def test_tensorrt_availability_reports_a_reason() -> None:
    ok, why = det_tensorrt.availability()
    assert ok or why  # either it can run, or it says why not


@pytest.mark.gpu
def test_tensorrt_engine_builds_and_detects(tmp_path: Path) -> None:
    ok, why = det_tensorrt.availability()
    if not ok:
        pytest.skip(f"TensorRT cannot run here: {why}")
    need(PLATE_MODEL)
    need(OPENALPR_US)
    model = tmp_path / PLATE_MODEL.name
    shutil.copy(PLATE_MODEL, model)
    engine = det_tensorrt.build_engine(model)
    assert engine == det_tensorrt.engine_path(model) and engine.is_file()
    det = det_tensorrt.TensorRTDetector(str(model), kind="plate")
    image, gt, _ = truth("car13")
    dets = det.detect([image])[0]
    assert dets and max(box_iou(d.box, gt) for d in dets) > 0.5
    det.close()


def test_ultralytics_backend(tmp_path: Path) -> None:
    pytest.importorskip("ultralytics", reason="ultralytics is optional and not installed")
    weights = Path.home() / ".cache" / "alpr-topo-test" / "yolo11n.pt"
    if not weights.is_file():
        pytest.skip(f"no local ultralytics checkpoint at {weights} (tests never download)")
    from alpr_topo.stages.det_ultralytics import UltralyticsDetector

    det = UltralyticsDetector(str(weights), kind="vehicle")
    assert det.detect([np.zeros((320, 320, 3), np.uint8)]) == [[]]


# -- validation --------------------------------------------------------------------------------


MISSING_TOPOLOGY = """\
name: det
stages:
  cam:
    type: source.test_pattern
  plates:
    type: detect.yolo
    inputs: [cam]
    params:
      kind: plate
      model: ${ALPR_MODELS:-models}/plate-detector-yolov9t-416-int8.onnx
"""


def test_missing_model_is_reported_with_file_line_and_how_to_get_it(tmp_path: Path) -> None:
    from alpr_topo.core.topology import TopologyError, parse

    with pytest.raises(TopologyError) as err:
        parse(MISSING_TOPOLOGY, "det.yaml", environ={"ALPR_MODELS": str(tmp_path / "nowhere")})
    (problem,) = err.value.problems
    assert (problem.file, problem.line) == ("det.yaml", 10)
    text = str(problem)
    assert "does not exist" in text and "plate-detector-yolov9t-416-int8.onnx" in text
    assert "alpr-topo models pull plate-detector-yolov9t-416-int8" in text and "docs/models.md" in text


def test_present_model_validates(tmp_path: Path) -> None:
    from alpr_topo.core.topology import parse

    (tmp_path / "plate-detector-yolov9t-416-int8.onnx").write_bytes(b"not really a model")
    topo = parse(MISSING_TOPOLOGY, "det.yaml", environ={"ALPR_MODELS": str(tmp_path)})
    assert topo.stages["plates"].params["model"].endswith("plate-detector-yolov9t-416-int8.onnx")
    assert topo.stages["plates"].params["conf"] == 0.25


def test_harness_rejects_a_missing_model_at_construction(tmp_path: Path) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="does not exist"):
        StageHarness("detect.yolo", {"model": str(tmp_path / "absent.onnx")})
    with pytest.raises(ValidationError, match="does not exist"):
        StageHarness("detect.plates", {"det_model": str(tmp_path / "absent.onnx")})


def test_stage_types_are_registered() -> None:
    from alpr_topo.core.plugins import stage_types

    types = stage_types()
    for name in ("detect.yolo", "detect.plates", "detect.motion"):
        assert name in types
        assert types[name].describe()["params"]


def test_batch_processing_several_envelopes_in_one_call(crafted: Path) -> None:
    with StageHarness("detect.yolo", {"model": str(crafted), "kind": "vehicle", "threads": THREADS,
                                      "batch_size": 4}) as h:
        envs = [h.frame_envelope(np.zeros((64, 64, 3), np.uint8), camera_id=f"cam{i}") for i in range(3)]
        calls = []
        real = h.stage.detector.detect
        h.stage.detector.detect = lambda images: calls.append(len(images)) or real(images)
        out = h.stage.process_batch(envs)
        assert calls == [3]
        assert [len(e.detections) for e in out] == [3, 3, 3]

