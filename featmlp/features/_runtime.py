"""Running a pretrained backbone on images, for :mod:`featmlp.features.pretrained`: the preprocessing
(resize, normalisation), batches bounded by memory, the network exported to ONNX once per (weights,
size, stages) into featmlp's cache with TensorFlow's SAME padding folded into its convolutions, one
ONNX Runtime session per process on training's thread policy, and torch eager (the reference, and
the path on a GPU). torch, onnx and onnxruntime are imported where they are used (start-up time).
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np

from .._cpu import env_threads, idle_cores, machine_cores
from .._io import atomic_write
from ..data import default_cache_dir
from ..errors import DataError
from ._backbones import missing_package, pooled_network

NORMS = {
    "tflite": ((127.0, 127.0, 127.0), (128.0, 128.0, 128.0)),
    "imagenet": ((0.485 * 255, 0.456 * 255, 0.406 * 255), (0.229 * 255, 0.224 * 255, 0.225 * 255)),
}

# Images sent through the network at once, mirror images included: bounds the runtime's arena
# whatever the chunk size (lite0 at 128 px, measured: +189 MB for 32 images, +333 MB for 64, +622 MB
# for 128), and large enough that the runtime's per-call costs are spread (2 cores: 215 img/s at 32,
# 250 at 64, no more at 128).
BATCH_IMAGES = 64
# Bumped when the exported graph changes, so that a cached file of an older featmlp is not reused
# (2: TensorFlow's SAME padding folded into the convolutions, _fold_pads).
_EXPORT_VERSION = 2
_ONNX_OPSET = 17


# -- images -------------------------------------------------------------------------------------

def check_images(images) -> np.ndarray:
    images = np.asarray(images)
    if images.dtype != np.uint8:
        raise DataError(f"images must be uint8 (0..255), got dtype {images.dtype}")
    if images.ndim == 4 and images.shape[-1] == 1:
        images = images[..., 0]
    if not (images.ndim == 3 or images.ndim == 4 and images.shape[-1] == 3) or min(images.shape[1:3], default=0) < 1:
        raise DataError(f"images must have shape (N, H, W, 3) RGB or (N, H, W) gray, got {images.shape}")
    return images


def preprocess(images: np.ndarray, size: int, norm: str) -> np.ndarray:
    """``images`` (n, H, W[, 3]) uint8 as the network's input: (n, 3, size, size) float32, resized
    (bilinear, antialiased: Pillow's resize) and normalised (:data:`NORMS`)."""
    import torch

    x = torch.from_numpy(np.ascontiguousarray(images))
    x = x[..., None].expand(*x.shape, 3) if x.ndim == 3 else x  # grayscale: the same in R, G, B
    # Planar (NCHW) before the resize, normalised in place after it: 1.8x the images a second of
    # resizing the channels-last view and copying the result (3,340 against 1,850 img/s, 32 -> 128 px).
    x = _resized(x.permute(0, 3, 1, 2).float().contiguous(), size)
    offset, scale = (torch.tensor(v, dtype=torch.float32).view(1, 3, 1, 1) for v in NORMS[norm])
    return x.sub_(offset).div_(scale).numpy()


def _resized(x, size: int):
    """Float images (n, c, H, W) resized to ``size`` x ``size``: bilinear, antialiased where a side shrinks
    (Pillow's resize); upscaling is plain bilinear either way."""
    if x.shape[2:] == (size, size):
        return x
    import torch.nn.functional as F

    shrink = x.shape[2] > size or x.shape[3] > size
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=shrink)


def resized_uint8(images: np.ndarray, size: int) -> np.ndarray:
    """``images`` (n, H, W[, 3]) uint8 resized to ``size`` x ``size`` as :func:`preprocess` resizes them,
    rounded back to uint8 (the same images where they are that size already)."""
    if images.shape[1:3] == (size, size):
        return images
    import torch

    with _TorchThreads(1):
        x = torch.from_numpy(np.ascontiguousarray(images)).float()
        x = _resized(x[:, None] if x.ndim == 3 else x.permute(0, 3, 1, 2), size)
        x = x.round_().clamp_(0, 255).to(torch.uint8)
        x = x[:, 0] if images.ndim == 3 else x.permute(0, 2, 3, 1)
        return np.ascontiguousarray(x.numpy())


class _TorchThreads:
    """torch on ``threads`` threads inside (None: as it is), restored after."""

    def __init__(self, threads):
        self.threads = threads

    def __enter__(self):
        import torch

        self.before = torch.get_num_threads()
        if self.threads is not None and self.threads != self.before:
            torch.set_num_threads(self.threads)

    def __exit__(self, *exc):
        import torch

        if torch.get_num_threads() != self.before:
            torch.set_num_threads(self.before)


def run_batches(images: np.ndarray, fitted, run) -> np.ndarray:
    """``run(x)`` over :data:`BATCH_IMAGES` images at a time (half images, half their mirror images for
    ``mirror``): the network's columns at ``fitted.size`` (not a second side's nor the HOG's)."""
    n = len(images)
    half = sum(w for _, w in fitted.widths_)
    step = max(1, BATCH_IMAGES // 2) if fitted.mirror else BATCH_IMAGES
    out = np.empty((n, half * (2 if fitted.mirror else 1)), np.float32)
    for start in range(0, n, step):
        # The resize on one thread: a small op, 2,437 img/s on one and 489 on two with the other core busy.
        with _TorchThreads(1):
            x = preprocess(images[start:start + step], fitted.size, fitted.norm)
        b = len(x)
        if fitted.mirror:
            y = np.asarray(run(np.concatenate([x, x[..., ::-1]])), np.float32)
            out[start:start + b, :half], out[start:start + b, half:] = y[:b], y[b:]
        else:
            out[start:start + b] = run(x)
    return out


# -- the runtime -------------------------------------------------------------------------------

def cache_dir() -> Path:
    """Where exported networks are kept: ``<featmlp cache>/pretrained``."""
    return default_cache_dir() / "pretrained"


def onnx_path(fitted) -> Path:
    """The cached ONNX file of ``fitted``'s network: one per (architecture, weights, size, stages,
    pooling, head)."""
    arch = "".join(c if c.isalnum() or c in "-_." else "_" for c in fitted.architecture)
    pool = fitted.pool.replace("+", "")
    return cache_dir() / (f"{arch}-{fitted.weights_sha256_[:16]}-{fitted.size}px-{fitted.stages}stages"
                          f"-{pool}-{fitted.head}head-v{_EXPORT_VERSION}.onnx")


def onnx_file(fitted, net=None) -> Path | bytes:
    """The ONNX file of ``fitted``'s network, exported now when not cached (atomically: a file
    being written by another process is never read half-done); the exported bytes themselves where
    the cache cannot be written (a read-only home: the export is then redone by each process)."""
    import contextlib
    import io
    import warnings

    path = onnx_path(fitted)
    if path.is_file():
        return path
    try:
        import onnx  # noqa: F401 - torch's exporter writes through it
    except ImportError as exc:
        raise missing_package(f"feature set {fitted.NAME}", exc) from None
    import torch


    if net is None:
        net = pooled_network(fitted, fitted.check_weights())
    x = torch.zeros(2, 3, fitted.size, fitted.size)
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (x,), buffer, input_names=["images"], output_names=["features"],
                          dynamic_axes={"images": {0: "n"}, "features": {0: "n"}}, opset_version=_ONNX_OPSET,
                          dynamo=False)
    data = fold_pads(buffer.getvalue())
    try:
        with atomic_write(path, "wb") as f:
            f.write(data)
    except OSError:
        return data
    return path


def fold_pads(model: bytes) -> bytes:
    """The exported graph with each zero ``Pad`` that feeds a ``Conv`` folded into the convolution's own
    (asymmetric) ``pads``. TensorFlow's SAME padding pads one more pixel after than before, which a
    torch convolution cannot say, so the export writes a ``Pad`` before 17 of lite0's 49 convolutions,
    its amounts computed by a chain of shape operations. ONNX Runtime neither folds those into the
    convolution nor runs a Pad in its blocked (NCHWc) layout: the Pads and the layout reorders around
    them took 60 % of the time, 2x fewer images a second (bench_pretrained.py; 211 against 116 img/s
    at 128 px). The amounts are first made constants by the runtime's basic, hardware-independent
    optimisation (constant folding), then each such Pad is removed and its amounts moved into the
    convolution. The result computes the same function (a test checks it against torch eager)."""
    import tempfile

    import onnx
    import onnxruntime as ort
    from onnx import helper, numpy_helper

    with tempfile.TemporaryDirectory(prefix="featmlp-onnx-") as tmp:
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        options.optimized_model_filepath = os.path.join(tmp, "basic.onnx")
        options.log_severity_level = 3
        ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        graph_model = onnx.load(options.optimized_model_filepath)
    graph = graph_model.graph
    constants = {t.name: t for t in graph.initializer}
    readers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    folded = []
    for node in graph.node:
        if node.op_type != "Pad" or len(node.input) < 2 or node.input[1] not in constants:
            continue
        mode = next((a.s for a in node.attribute if a.name == "mode"), b"constant")
        value = constants.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        if mode != b"constant" or (len(node.input) > 2 and node.input[2] and
                                   (value is None or np.any(numpy_helper.to_array(value) != 0))):
            continue
        pads = numpy_helper.to_array(constants[node.input[1]]).astype(int).tolist()
        users = readers.get(node.output[0], [])
        if len(pads) != 8 or pads[0] or pads[1] or pads[4] or pads[5] or min(pads) < 0 \
                or len(users) != 1 or users[0].op_type != "Conv" or node.output[0] in {o.name for o in graph.output}:
            continue
        conv = users[0]
        attrs = {a.name: a for a in conv.attribute}
        if attrs.get("auto_pad") is not None and attrs["auto_pad"].s not in (b"", b"NOTSET"):
            continue
        own = list(attrs["pads"].ints) if "pads" in attrs else [0, 0, 0, 0]  # top, left, bottom, right
        if "pads" in attrs:
            conv.attribute.remove(attrs["pads"])
        conv.attribute.append(helper.make_attribute(
            "pads", [own[0] + pads[2], own[1] + pads[3], own[2] + pads[6], own[3] + pads[7]]))
        conv.input[0] = node.input[0]
        folded.append(node)
    for node in folded:
        graph.node.remove(node)
    used = {name for node in graph.node for name in node.input}
    for tensor in [t for t in graph.initializer if t.name not in used]:
        graph.initializer.remove(tensor)
    onnx.checker.check_model(graph_model)
    return graph_model.SerializeToString()


_SESSIONS: dict[tuple, object] = {}
_LOCK = threading.Lock()


def runtime_threads(threads: int | None = None) -> int:
    """Threads of a session: ``threads`` (1 in worker processes), else ``FEATMLP_NUM_THREADS``, else as
    many as there are idle cores, at most the cores this process may run on: training's policy
    (:func:`featmlp.training.threads.training_threads`). Measured on 2 cores with another process
    busy on one: 111 img/s on one thread, 51 on two (the threads wait for the slower one at every op)."""
    if threads is not None:
        return threads
    override = env_threads()
    if override is not None:
        return override
    cores = machine_cores()
    idle = idle_cores() if cores > 1 else None
    return cores if idle is None else max(1, min(cores, int(idle + 0.25)))


def runtime_session(fitted, threads: int | None = None):
    """This process's ONNX Runtime session for ``fitted``: built once (the weights checked against
    the recorded hash, the network exported or taken from the cache), then reused."""
    threads = runtime_threads(threads)
    key = (fitted.architecture, fitted.weights_sha256_, fitted.size, fitted.stages, fitted.pool, fitted.head,
           threads)
    session = _SESSIONS.get(key)
    if session is not None:
        return session
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise missing_package(f"feature set {fitted.NAME}", exc) from None
    with _LOCK:
        if key in _SESSIONS:
            return _SESSIONS[key]
        fitted.check_weights()
        path = onnx_file(fitted)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        def open_session(model):
            return ort.InferenceSession(model if isinstance(model, bytes) else str(model), options,
                                        providers=["CPUExecutionProvider"])

        try:
            session = open_session(path)
        except Exception:  # noqa: BLE001 - a damaged cache file: exported again
            if isinstance(path, bytes):
                raise
            path.unlink(missing_ok=True)
            session = open_session(onnx_file(fitted))
        _SESSIONS[key] = session
    return session


def cuda_device() -> str | None:
    """``"cuda"`` where torch sees a GPU and ``FEATMLP_DEVICE`` does not say ``cpu``, else None (ONNX
    Runtime on the CPU)."""
    if os.environ.get("FEATMLP_DEVICE", "auto").strip().lower() == "cpu":
        return None
    import torch

    return "cuda" if torch.cuda.is_available() else None


_NETS: dict[tuple, object] = {}


def cuda_network(fitted, device: str):
    key = (fitted.architecture, fitted.weights_sha256_, fitted.size, fitted.stages, fitted.pool, fitted.head, device)
    if key not in _NETS:
        _NETS[key] = pooled_network(fitted, fitted.check_weights()).to(device)
    return _NETS[key]


def eager_features(fitted, images, *, device: str = "cpu", channels_last: bool = False,
                   net=None) -> np.ndarray:
    """The features torch computes eagerly for ``images`` (the reference the runtime is tested
    against, and the path on a GPU): same preprocessing, same weights (checked), float32."""
    import torch

    fitted._check_fitted()
    images = check_images(images)
    if net is None:
        net = pooled_network(fitted, fitted.check_weights())
    net = net.to(device)
    if channels_last:
        net = net.to(memory_format=torch.channels_last)

    def run(x):
        t = torch.from_numpy(np.ascontiguousarray(x)).to(device)
        if channels_last:
            t = t.contiguous(memory_format=torch.channels_last)
        with torch.no_grad():
            return net(t).float().cpu().numpy()

    return run_batches(images, fitted, run)
