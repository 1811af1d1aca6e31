"""YOLO detectors as TensorRT engines (NVIDIA GPUs, Jetson included).

* :func:`build_engine` parses the ``.onnx`` with TensorRT's ``OnnxParser`` and builds a
  serialized engine: FP16 where the GPU has fast FP16, an optimisation profile for every dynamic
  input dimension (batch 1..``max_batch``, the model's input size), written atomically to
  :func:`engine_path`: ``<model without .onnx>.<gpu-name-slug>.trt<version>.<fp16|fp32>.engine``
  beside the model. An engine only runs on the GPU model and TensorRT version it was built with,
  hence both in the name: a Jetson Orin and a desktop card can share one models folder, and a
  TensorRT upgrade rebuilds instead of failing. ``alpr-topo models build-engine MODEL`` calls it.
* :class:`TensorRTDetector` deserialises the engine (building it on first use) and runs it with
  **cuda-python** (``pip install cuda-python``; its ``cuda.bindings.runtime`` / ``cuda.cudart``
  module: cudaMalloc, cudaMemcpyAsync, one stream). cuda-python was chosen over pycuda (needs
  a compiler to install, keeps its own context) and torch (gigabytes for three calls). Outputs
  whose size depends on the data (an end-to-end model's ``[N, 7]`` after NMS) are received
  through a TensorRT ``IOutputAllocator``. Pre- and post-processing are the ONNX Runtime
  backend's (:class:`~alpr_topo.stages.det_yolo.YoloDetectorBase`), so both backends give the
  same boxes for the same model.

Nothing here imports ``tensorrt`` or cuda-python at module level: :func:`availability` says
whether this machine can use the backend, and ``detect.yolo`` falls back to ONNX Runtime (with one
warning) where it cannot.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .det_yolo import YoloDetectorBase, parse_names_imgsz, _hw
from .det_base import parse_names
from .onnx_float import model_bytes

log = logging.getLogger("alpr_topo.detect.tensorrt")

__all__ = ["TensorRTDetector", "TensorRTUnavailable", "availability", "build_engine", "engine_path", "gpu_name", "slug"]


class TensorRTUnavailable(RuntimeError):
    """This machine cannot run TensorRT engines (no tensorrt, no cuda-python, or no GPU)."""


def slug(text: str) -> str:
    """``NVIDIA GeForce RTX 3060`` -> ``nvidia-geforce-rtx-3060``."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "unknown"


def _cudart() -> Any:
    """cuda-python's runtime module (new and old import paths)."""
    try:
        from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
    except ImportError:
        from cuda import cudart  # type: ignore[no-redef]  # older cuda-python
    return cudart


def _check(result: Any) -> Any:
    """Unpack a cuda-python ``(error, value...)`` tuple, raising on an error."""
    err, *values = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        raise RuntimeError(f"CUDA error {err}")
    if not values:
        return None
    return values[0] if len(values) == 1 else tuple(values)


def gpu_name(device: int = 0) -> str:
    """The GPU's marketing name (cuda-python, else ``nvidia-smi``); raises TensorRTUnavailable."""
    try:
        props = _check(_cudart().cudaGetDeviceProperties(device))
        name = props.name
        return (name.decode(errors="replace") if isinstance(name, bytes) else str(name)).strip("\x00 ").strip()
    except ImportError:
        pass
    except Exception as exc:
        raise TensorRTUnavailable(f"no usable CUDA GPU ({exc})") from exc
    try:
        out = subprocess.run(["nvidia-smi", f"--id={device}", "--query-gpu=name", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise TensorRTUnavailable("no NVIDIA GPU found (cuda-python missing and nvidia-smi not runnable)") from exc
    if out.returncode != 0 or not out.stdout.strip():
        raise TensorRTUnavailable(f"no NVIDIA GPU found (nvidia-smi: {out.stderr.strip() or out.returncode})")
    return out.stdout.strip().splitlines()[0]


def tensorrt_version() -> str:
    import tensorrt as trt

    return str(trt.__version__)


def engine_path(onnx_path: str | os.PathLike[str], gpu: str | None = None, trt_version: str | None = None,
                fp16: bool = True) -> Path:
    """Where the engine for ``onnx_path`` on this GPU and TensorRT version lives (beside it)."""
    model = Path(onnx_path)
    gpu = gpu if gpu is not None else gpu_name()
    trt_version = trt_version if trt_version is not None else tensorrt_version()
    stem = model.with_suffix("") if model.suffix.lower() == ".onnx" else model
    return stem.with_name(f"{stem.name}.{slug(gpu)}.trt{trt_version}.{'fp16' if fp16 else 'fp32'}.engine")


def availability() -> tuple[bool, str]:
    """(True, "") when TensorRT engines can run here, else (False, why not)."""
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return False, "the `tensorrt` Python package is not installed (pip install tensorrt, or JetPack's python3-libnvinfer)"
    try:
        _cudart()
    except ImportError:
        return False, "cuda-python is not installed (pip install cuda-python)"
    try:
        count = _check(_cudart().cudaGetDeviceCount())
    except Exception as exc:
        return False, f"no usable CUDA GPU ({exc})"
    if not count:
        return False, "no CUDA GPU is visible"
    return True, ""


def _trt_logger() -> Any:
    import tensorrt as trt

    return trt.Logger(trt.Logger.WARNING)


def build_engine(onnx_path: str | os.PathLike[str], engine: str | os.PathLike[str] | None = None, *,
                 fp16: bool = True, max_batch: int = 8, input_size: int | Sequence[int] | None = None,
                 workspace_gb: float = 2.0, force: bool = False) -> Path:
    """Build (or reuse) the TensorRT engine of an ONNX model; returns its path.

    ``max_batch`` and ``input_size`` only matter for dynamic dimensions: the profile allows batch
    1..max_batch (optimised for max_batch) and pins a dynamic height/width to ``input_size``
    (default: the model's ``imgsz`` metadata, else 640).
    """
    ok, why = availability()
    if not ok:
        raise TensorRTUnavailable(why)
    import tensorrt as trt

    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise FileNotFoundError(f"{onnx_path} does not exist")
    out = Path(engine) if engine else engine_path(onnx_path, fp16=fp16)
    if out.is_file() and not force:
        return out
    logger = _trt_logger()
    builder = trt.Builder(logger)
    flags = 0
    if hasattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH") and int(trt.__version__.split(".")[0]) < 10:
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    # TensorRT has no importer for the ConvInteger of dynamically quantised models: parse their
    # float32 graph (FP16 engines are built from it where the GPU has fast FP16)
    if not parser.parse(model_bytes(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse {onnx_path.name}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * (1 << 30)))
    use_fp16 = fp16 and getattr(builder, "platform_has_fast_fp16", True)
    if use_fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    hw = _hw(input_size) if input_size else None
    if hw is None:
        hw = _metadata_hw(onnx_path) or (640, 640)
    profile = None
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        shape = list(tensor.shape)
        if all(d > 0 for d in shape):
            continue
        profile = profile or builder.create_optimization_profile()
        lo, opt, hi = list(shape), list(shape), list(shape)
        for axis, dim in enumerate(shape):
            if dim > 0:
                continue
            if axis == 0:
                lo[axis], opt[axis], hi[axis] = 1, max_batch, max_batch
            elif len(shape) == 4 and axis in (2, 3):
                lo[axis] = opt[axis] = hi[axis] = hw[axis - 2]
            elif len(shape) == 4 and axis == 1:
                lo[axis] = opt[axis] = hi[axis] = 3
            else:
                lo[axis], opt[axis], hi[axis] = 1, 1, 1
        profile.set_shape(tensor.name, lo, opt, hi)
    if profile is not None:
        config.add_optimization_profile(profile)
    log.info("building TensorRT engine for %s (%s, batch <= %d): this takes minutes, once",
             onnx_path.name, "FP16" if use_fp16 else "FP32", max_batch)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"TensorRT failed to build an engine for {onnx_path.name} (see its log above)")
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=out.name, suffix=".tmp", dir=out.parent)
    with os.fdopen(fd, "wb") as fh:
        fh.write(memoryview(serialized))
    os.replace(tmp, out)
    log.info("TensorRT engine written to %s", out)
    return out


def _metadata(onnx_path: Path) -> dict[str, str]:
    """The ONNX model's metadata (class names, imgsz), read with a CPU onnxruntime session."""
    try:
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.log_severity_level = 3
        sess = ort.InferenceSession(str(onnx_path), so, providers=["CPUExecutionProvider"])
        return dict(sess.get_modelmeta().custom_metadata_map or {})
    except Exception:
        return {}


def _metadata_hw(onnx_path: Path) -> tuple[int, int] | None:
    return _hw(parse_names_imgsz(_metadata(onnx_path).get("imgsz")))


class _OutputAllocator:
    """Receives outputs whose size TensorRT only knows after running (data-dependent shapes)."""

    def __new__(cls, *args: Any, **kw: Any) -> Any:  # subclass trt.IOutputAllocator lazily
        import tensorrt as trt

        class Allocator(trt.IOutputAllocator):  # type: ignore[misc, name-defined]
            def __init__(self) -> None:
                trt.IOutputAllocator.__init__(self)
                self.pointers: dict[str, int] = {}
                self.sizes: dict[str, int] = {}
                self.shapes: dict[str, tuple[int, ...]] = {}

            def reallocate_output(self, tensor_name: str, memory: int, size: int, alignment: int) -> int:
                if size > self.sizes.get(tensor_name, 0):
                    cudart = _cudart()
                    if tensor_name in self.pointers:
                        _check(cudart.cudaFree(self.pointers[tensor_name]))
                    self.pointers[tensor_name] = int(_check(cudart.cudaMalloc(max(size, 1))))
                    self.sizes[tensor_name] = size
                return self.pointers[tensor_name]

            def reallocate_output_async(self, tensor_name: str, memory: int, size: int, alignment: int,
                                        stream: int) -> int:
                return self.reallocate_output(tensor_name, memory, size, alignment)

            def notify_shape(self, tensor_name: str, shape: Any) -> None:
                self.shapes[tensor_name] = tuple(int(d) for d in shape)

            def free(self) -> None:
                cudart = _cudart()
                for ptr in self.pointers.values():
                    cudart.cudaFree(ptr)
                self.pointers.clear()
                self.sizes.clear()

        return Allocator()


class TensorRTDetector(YoloDetectorBase):
    """A YOLO model as a TensorRT engine, run with cuda-python (see the module docstring).

    ``model`` is the ``.onnx`` (its engine is built beside it on first use) or an ``.engine``
    (then ``onnx`` may name the model for class names and input size metadata).
    """

    def __init__(self, model: str, *, engine: str | None = None, fp16: bool = True, onnx: str | None = None,
                 input_size: int | Sequence[int] | None = None, **kw: Any) -> None:
        ok, why = availability()
        if not ok:
            raise TensorRTUnavailable(why)
        import tensorrt as trt

        super().__init__(model, **kw)
        model_path = Path(model)
        if model_path.suffix.lower() == ".engine":
            engine_file = model_path
            onnx_path = Path(onnx) if onnx else None
        else:
            onnx_path = model_path
            engine_file = Path(engine) if engine else engine_path(model_path, fp16=fp16)
            if not engine_file.is_file():
                build_engine(model_path, engine_file, fp16=fp16, max_batch=self.batch_size, input_size=input_size)
        self.engine_file = engine_file
        meta = _metadata(onnx_path) if onnx_path and onnx_path.is_file() else {}
        self.names = parse_names(meta.get("names"))
        self.cudart = _cudart()
        self.runtime = trt.Runtime(_trt_logger())
        self.engine = self.runtime.deserialize_cuda_engine(engine_file.read_bytes())
        if self.engine is None:
            raise RuntimeError(f"{engine_file} could not be loaded: built for another GPU or TensorRT version? "
                               "delete it to rebuild")
        self.context = self.engine.create_execution_context()
        self.stream = _check(self.cudart.cudaStreamCreate())
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if n not in self.inputs]
        self.input_name = self.inputs[0]
        self.output_name = self.outputs[0]
        shape = list(self.engine.get_tensor_shape(self.input_name))
        self.input_dtype = np.dtype(trt.nptype(self.engine.get_tensor_dtype(self.input_name)))
        if shape[2] > 0 and shape[3] > 0:
            self.input_hw = (int(shape[2]), int(shape[3]))
        else:
            self.input_hw = _hw(input_size) or _hw(parse_names_imgsz(meta.get("imgsz"))) or (640, 640)
        if shape[0] > 0:
            self.max_batch, self.fixed_batch = int(shape[0]), True
        else:
            hi = self.engine.get_tensor_profile_shape(self.input_name, 0)[2]
            self.max_batch = min(self.batch_size, int(hi[0]))
        from .det_yolo import ClassMap

        self.classmap = ClassMap(self.kind, self.names, self.class_filter)
        self.allocator = _OutputAllocator()
        self._buffers: dict[str, tuple[int, int]] = {}  # name -> (device pointer, bytes)
        log.info("%s: TensorRT %s engine %s, input %dx%d, batch <= %d", Path(model).name, trt.__version__,
                 engine_file.name, self.input_hw[1], self.input_hw[0], self.max_batch)

    def _device(self, name: str, nbytes: int) -> int:
        ptr, size = self._buffers.get(name, (0, 0))
        if nbytes > size:
            if ptr:
                _check(self.cudart.cudaFree(ptr))
            ptr = int(_check(self.cudart.cudaMalloc(nbytes)))
            self._buffers[name] = (ptr, nbytes)
        return ptr

    def infer(self, batch: np.ndarray) -> np.ndarray:
        cudart = self.cudart
        batch = np.ascontiguousarray(batch, dtype=self.input_dtype)
        self.context.set_input_shape(self.input_name, tuple(batch.shape))
        d_in = self._device(self.input_name, batch.nbytes)
        _check(cudart.cudaMemcpyAsync(d_in, batch.ctypes.data, batch.nbytes,
                                      cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, self.stream))
        self.context.set_tensor_address(self.input_name, d_in)
        fixed: dict[str, tuple[tuple[int, ...], np.dtype]] = {}
        import tensorrt as trt

        for name in self.outputs:
            shape = tuple(self.context.get_tensor_shape(name))
            dtype = np.dtype(trt.nptype(self.engine.get_tensor_dtype(name)))
            if all(d >= 0 for d in shape):
                nbytes = int(np.prod(shape)) * dtype.itemsize
                self.context.set_tensor_address(name, self._device(name, max(nbytes, 1)))
                fixed[name] = (shape, dtype)
            else:  # data-dependent (NMS inside): TensorRT asks the allocator once it knows
                self.context.set_output_allocator(name, self.allocator)
        if not self.context.execute_async_v3(int(self.stream)):
            raise RuntimeError("TensorRT execution failed")
        name = self.output_name
        dtype = np.dtype(trt.nptype(self.engine.get_tensor_dtype(name)))
        if name in fixed:
            shape, _ = fixed[name]
            ptr = self._buffers[name][0]
        else:  # the final shape is only certain once the stream has run
            _check(cudart.cudaStreamSynchronize(self.stream))
            shape = self.allocator.shapes.get(name, (0, 7))
            ptr = self.allocator.pointers.get(name, 0)
        host = np.empty(shape, dtype=dtype)
        if host.nbytes and ptr:
            _check(cudart.cudaMemcpyAsync(host.ctypes.data, ptr, host.nbytes,
                                          cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost, self.stream))
        _check(cudart.cudaStreamSynchronize(self.stream))
        return host.astype(np.float32, copy=False)

    def close(self) -> None:
        try:
            for ptr, _ in self._buffers.values():
                self.cudart.cudaFree(ptr)
            self._buffers.clear()
            self.allocator.free()
            self.cudart.cudaStreamDestroy(self.stream)
        except Exception:  # closing during interpreter shutdown
            pass
        self.context = None
        self.engine = None
