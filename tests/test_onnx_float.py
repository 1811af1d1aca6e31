"""Dynamically quantised models run as float32 (stages/onnx_float.py).

Small Conv + MatMul graphs are built here with ``onnx.helper``, quantised with onnxruntime's own
``quantize_dynamic`` (per tensor and per channel), expanded back, and run: the expanded graph has
no integer op left and computes what the float model computes with the int8-rounded weights
(the int8 graph also rounds every activation, so it does not).
The shared plate detector (``../shared/models``) is checked the same way on a real photo.
"""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization import QuantType, quantize_dynamic

from alpr_topo.stages.det_base import box_iou
from alpr_topo.stages.det_yolo import YoloOnnxDetector
from alpr_topo.stages.onnx_float import float_graph, model_bytes

SHARED = Path(__file__).resolve().parents[2] / "shared"
PLATE_MODEL = SHARED / "models" / "plate-detector-yolov9t-416-int8.onnx"
PHOTO = SHARED / "data" / "openalpr-us" / "car13.jpg"
INTEGER_OPS = {"ConvInteger", "MatMulInteger", "DynamicQuantizeLinear"}


def _float_model(path: Path) -> None:
    """x [1,3,16,16] -> Conv 8x3x3x3 (+bias) -> Relu -> flatten -> MatMul [8*14*14, 5]."""
    rng = np.random.default_rng(0)
    w = rng.normal(0, 0.5, (8, 3, 3, 3)).astype(np.float32)
    w[3] *= 8  # one channel with a much wider range: per-channel scales differ
    b = rng.normal(0, 0.1, 8).astype(np.float32)
    m = rng.normal(0, 0.1, (8 * 14 * 14, 5)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w", "b"], ["c"], kernel_shape=[3, 3]),
         helper.make_node("Relu", ["c"], ["r"]),
         helper.make_node("Reshape", ["r", "shape"], ["f"]),
         helper.make_node("MatMul", ["f", "m"], ["y"])],
        "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 5])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b"), numpy_helper.from_array(m, "m"),
         numpy_helper.from_array(np.array([1, -1], np.int64), "shape")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))


def _run(model: str | bytes, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


def _ops(model: bytes) -> set[str]:
    return {n.op_type for n in onnx.load_from_string(model).graph.node}


@pytest.mark.parametrize("per_channel", [False, True])
def test_quantised_graph_runs_as_float(tmp_path: Path, per_channel: bool) -> None:
    src, quantised = tmp_path / "float.onnx", tmp_path / "int8.onnx"
    _float_model(src)
    quantize_dynamic(str(src), str(quantised), weight_type=QuantType.QUInt8, per_channel=per_channel)
    assert INTEGER_OPS & {n.op_type for n in onnx.load(str(quantised)).graph.node}

    expanded = float_graph(quantised)
    assert expanded is not None
    assert not INTEGER_OPS & _ops(expanded)
    assert {"Conv", "MatMul"} <= _ops(expanded)

    # the reference: the float model with its weights rounded the way the int8 file stores them
    # (per column for MatMul with per_channel, numpy broadcasting over the last axis)
    stored = {i.name: numpy_helper.to_array(i).astype(np.float32) for i in onnx.load(str(quantised)).graph.initializer}
    reference = onnx.load(str(src))
    for init in reference.graph.initializer:
        if init.name in ("w", "m"):
            rounded = (stored[f"{init.name}_quantized"] - stored[f"{init.name}_zero_point"]) * stored[f"{init.name}_scale"]
            init.CopyFrom(numpy_helper.from_array(rounded.astype(np.float32), init.name))
    x = np.random.default_rng(1).normal(0, 1, (1, 3, 16, 16)).astype(np.float32)
    want = _run(reference.SerializeToString(), x)
    got = _run(expanded, x)
    assert np.allclose(got, want, rtol=1e-4, atol=1e-4 * float(np.abs(want).max()))
    # and unlike the int8 graph, which also rounds every activation
    assert not np.allclose(_run(str(quantised), x), want, rtol=1e-4, atol=1e-4 * float(np.abs(want).max()))


def test_float_models_are_loaded_as_they_are(tmp_path: Path) -> None:
    src = tmp_path / "float.onnx"
    _float_model(src)
    assert float_graph(src) is None
    assert model_bytes(src) == src.read_bytes()


def test_unknown_pattern_is_left_quantised(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A ConvInteger fed by a uint8 graph input (no DynamicQuantizeLinear) has nothing to expand."""
    w = numpy_helper.from_array(np.ones((2, 1, 3, 3), np.uint8), "w")
    graph = helper.make_graph(
        [helper.make_node("ConvInteger", ["x", "w"], ["y"])], "int",
        [helper.make_tensor_value_info("x", TensorProto.UINT8, [1, 1, 5, 5])],
        [helper.make_tensor_value_info("y", TensorProto.INT32, [1, 2, 3, 3])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "int.onnx"
    onnx.save(model, str(path))
    assert float_graph(path) is None
    assert model_bytes(path) == path.read_bytes()
    # a file that is no model at all: the loader's error is logged, the bytes go to onnxruntime as they are
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a model")
    with caplog.at_level(logging.WARNING):
        assert model_bytes(broken) == b"not a model"
    assert "could not expand" in caplog.text


def test_shared_plate_detector_as_float(tmp_path: Path) -> None:
    if not PLATE_MODEL.exists() or not PHOTO.exists():
        pytest.skip(f"{PLATE_MODEL} or {PHOTO} is absent (tests use ../shared; see DESIGN.md)")
    expanded = float_graph(PLATE_MODEL)
    assert expanded is not None and not INTEGER_OPS & _ops(expanded)
    image = cv2.imread(str(PHOTO))
    as_float = YoloOnnxDetector(str(PLATE_MODEL), kind="plate", providers="cpu", threads=2, dequantize=True)
    as_int8 = YoloOnnxDetector(str(PLATE_MODEL), kind="plate", providers="cpu", threads=2, dequantize=False)
    (a,), (b,) = as_float.detect([image]), as_int8.detect([image])
    assert a and b
    assert box_iou(a[0].box, b[0].box) > 0.9
    assert abs(a[0].score - b[0].score) < 0.1
