"""Dynamically quantised ONNX models turned back into float32 graphs at load time.

``onnxruntime.quantization.quantize_dynamic`` stores weights as int8 and quantises every
activation at run time (``DynamicQuantizeLinear`` → ``ConvInteger`` → ``Cast`` → ``Mul`` by the
scales). That suits transformers on CPUs with VNNI; for a convolutional detector it is slower
than float: onnxruntime has no fused kernel for ``ConvInteger``, and each layer pays for
quantising its input. The YOLOv9-t plate detector of ``../shared/models`` runs 1.3-1.5x faster as
float32 on a 2-core AVX2 machine (docs/detect.md), with the same boxes to within a pixel or two.
TensorRT cannot parse ``ConvInteger`` at all. So the int8 weights are expanded
(``(w - zero_point) * scale``) into float32 ``Conv``/``MatMul`` nodes that read the float input
directly; the file on disk stays as it is.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np

__all__ = ["expanded", "float_graph", "model_bytes"]

log = logging.getLogger(__name__)

INTEGER_OPS = {"ConvInteger": "Conv", "MatMulInteger": "MatMul"}


def model_bytes(path: str | os.PathLike[str]) -> bytes:
    """The model to load: its float32 graph when ``path`` is dynamically quantised, else the file."""
    converted = expanded(path)
    if converted is None:
        with open(path, "rb") as f:
            return f.read()
    return converted


def expanded(path: str | os.PathLike[str]) -> bytes | None:
    """:func:`float_graph`, or None with a warning where the file cannot be expanded (it then
    runs as it is, slower)."""
    try:
        return float_graph(path)
    except Exception as exc:
        log.warning("%s: could not expand its int8 weights to float32 (%s); running the quantised graph",
                    os.path.basename(str(path)), exc)
        return None


def float_graph(path: str | os.PathLike[str]) -> bytes | None:
    """The serialized float32 model, or None when ``path`` has no ``ConvInteger``/``MatMulInteger``
    node. Nodes that do not follow ``quantize_dynamic``'s pattern are left quantised."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(path))
    graph = model.graph
    if not any(n.op_type in INTEGER_OPS for n in graph.node):
        return None
    inits = {i.name: i for i in graph.initializer}
    producer = {o: n for n in graph.node for o in n.output}
    consumers: dict[str, list[Any]] = {}
    for n in graph.node:
        for name in n.input:
            consumers.setdefault(name, []).append(n)

    replaced: dict[int, Any] = {}  # id(integer node) -> float node
    dropped: set[int] = set()  # ids of the Cast and Mul nodes the float node stands for
    weights = []
    for node in graph.node:
        if node.op_type not in INTEGER_OPS:
            continue
        found = _dynamic_pattern(node, producer, consumers, inits)
        if found is None:
            continue
        x, cast, mul, w_scale = found
        w = numpy_helper.to_array(inits[node.input[1]]).astype(np.float32)
        w_zero = numpy_helper.to_array(inits[node.input[3]]).astype(np.float32) \
            if len(node.input) > 3 and node.input[3] else np.zeros((), np.float32)
        w = (w - _per_output(w_zero, w, node.op_type)) * _per_output(w_scale, w, node.op_type)
        name = node.input[1] + "_float32"
        weights.append(numpy_helper.from_array(w.astype(np.float32), name))
        op = INTEGER_OPS[node.op_type]
        float_node = helper.make_node(op, [x, name], [mul.output[0]], name=(node.name or name) + "_float32")
        if op == "Conv":
            float_node.attribute.extend(node.attribute)
        replaced[id(node)] = float_node
        dropped.update((id(cast), id(mul)))
    if not replaced:
        return None

    nodes = [replaced.get(id(n), n) for n in graph.node if id(n) not in dropped]
    nodes = _live(nodes, {o.name for o in graph.output})
    del graph.node[:]
    graph.node.extend(nodes)
    used = {name for n in nodes for name in n.input}
    kept = [i for i in list(graph.initializer) + weights if i.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    onnx.checker.check_model(model)
    log.info("%s: %d int8 layers expanded to float32", os.path.basename(str(path)), len(replaced))
    return model.SerializeToString()


def _dynamic_pattern(node: Any, producer: dict[str, Any], consumers: dict[str, list[Any]],
                     inits: dict[str, Any]) -> tuple[str, Any, Any, np.ndarray] | None:
    """(float input, Cast node, scaling Mul node, weight scale) of ``quantize_dynamic``'s
    ``DynamicQuantizeLinear → XInteger → Cast → Mul(x_scale * w_scale)`` chain, or None."""
    from onnx import numpy_helper

    quantize = producer.get(node.input[0])
    if quantize is None or quantize.op_type != "DynamicQuantizeLinear" or node.input[1] not in inits:
        return None
    after = consumers.get(node.output[0], [])
    if len(after) != 1 or after[0].op_type != "Cast":
        return None
    cast = after[0]
    after = consumers.get(cast.output[0], [])
    if len(after) != 1 or after[0].op_type != "Mul":
        return None
    mul = after[0]
    scale = producer.get(next((i for i in mul.input if i != cast.output[0]), ""))
    while scale is not None and scale.op_type == "Reshape":  # a per-channel scale shaped for the output
        scale = producer.get(scale.input[0])
    if scale is None or scale.op_type != "Mul" or quantize.output[1] not in scale.input:
        return None
    w_scale = next((i for i in scale.input if i != quantize.output[1]), "")
    if w_scale not in inits:
        return None
    return quantize.input[0], cast, mul, numpy_helper.to_array(inits[w_scale]).astype(np.float32)


def _per_output(value: np.ndarray, w: np.ndarray, op: str) -> np.ndarray:
    """A per-tensor or per-output-channel value shaped to broadcast over the weights
    (Conv: output channels first; MatMul: output columns last)."""
    if value.size <= 1:
        return value.reshape(())
    return value.reshape((-1,) + (1,) * (w.ndim - 1)) if op == "ConvInteger" else value.reshape((1,) * (w.ndim - 1) + (-1,))


def _live(nodes: list[Any], outputs: set[str]) -> list[Any]:
    """``nodes`` without those whose outputs nothing uses (the quantisers and scale products)."""
    while True:
        used = outputs | {name for n in nodes for name in n.input}
        live = [n for n in nodes if any(o in used for o in n.output)]
        if len(live) == len(nodes):
            return live
        nodes = live
