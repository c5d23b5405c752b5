"""ONNX Runtime engines for CPU extraction: ``onnx`` (fp32, same features) and ``onnx-int8`` (faster, close features).

Why: on a CPU, ONNX Runtime runs EfficientNet-Lite0 several times faster than eager PyTorch. The fp32
graph is exported once per (model, weights, input size) and cached; before it is used, its output is
checked against PyTorch's on a random batch, and a graph that differs by more than ``tol`` is refused
(``auto`` then stays on PyTorch). TensorFlow-style 'same' padding (timm's ``Conv2dSame``) is frozen to
constants for the export size first: a padding computed from the input shape in the graph keeps ONNX
Runtime from fusing it into the convolutions, which made the graph about 2x slower.

``onnx-int8`` quantises that fp32 graph with ONNX Runtime's static post-training quantisation (QDQ,
per-channel int8 weights, uint8 activations whose ranges are calibrated on real photos). Its features
differ from fp32 ones (cosine ~0.99 per image), so they are another feature space: the quantisation
key (calibration set digest + recipe) is recorded in ``FeatureSpace.quantization`` and job.json.
"""

from __future__ import annotations

import copy
import hashlib
import os
import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np
import torch

from neardup.errors import UsageError
from neardup.extract.registry import ModelCfg
from neardup.io_utils import atomic_write

if TYPE_CHECKING:
    from PIL import Image

#: 2: 'same' padding frozen to constants (graphs of version 1 are not reused: another cache key)
EXPORT_VERSION = 2
#: calibration images used at most (evenly spaced over a larger set)
MAX_CALIBRATION = 64
#: skimage.data photos bundled with scikit-image (no download): the default calibration set
BUNDLED_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "camera", "hubble_deep_field", "immunohistochemistry",
                  "retina", "coins", "moon", "brick", "grass", "gravel", "text", "page", "clock")
#: an int8 graph whose features on the calibration images fall below these cosines (to fp32) is refused;
#: measured for efficientnet_lite0 on the bundled photos: min 0.94 (gravel, a texture) / mean 0.99; a graph below
#: the bounds is broken, not slightly off
INT8_MIN_COSINE, INT8_MEAN_COSINE = 0.85, 0.95


def cache_dir() -> Path:
    return Path(os.environ.get("NEARDUP_CACHE", Path.home() / ".cache" / "neardup")) / "onnx"


def available() -> bool:
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def _fingerprint(model: torch.nn.Module, input_size: int) -> str:
    h = hashlib.sha256(f"{type(model).__name__}:{input_size}:{torch.__version__}:v{EXPORT_VERSION}".encode())
    for k, v in model.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def freeze_same_padding(model: torch.nn.Module, input_size: int) -> torch.nn.Module:
    """A copy of ``model`` whose timm ``Conv2dSame`` layers pad by constants computed for ``input_size``.

    Same output at that size (the padding is what ``pad_same`` would compute); the exported graph then
    runs at that size only, which is the only size an extractor feeds it. ``model`` is returned as is
    when it has no such layer.
    """
    try:
        from timm.layers import Conv2dSame
        from timm.layers.padding import pad_same_arg
    except ImportError:  # pragma: no cover - timm is a dependency
        return model
    if not any(isinstance(m, Conv2dSame) for m in model.modules()):
        return model
    model = copy.deepcopy(model)
    sizes: dict[str, tuple[int, int]] = {}
    hooks = [m.register_forward_pre_hook(lambda _m, args, n=n: sizes.__setitem__(n, tuple(args[0].shape[-2:])))
             for n, m in model.named_modules() if isinstance(m, Conv2dSame)]
    with torch.inference_mode():
        model(torch.zeros(1, 3, input_size, input_size))
    for h in hooks:
        h.remove()
    for name, size in sizes.items():
        old: Any = model.get_submodule(name)
        left, right, top, bottom = pad_same_arg(list(size), list(old.weight.shape[-2:]), list(old.stride),
                                                list(old.dilation))
        conv = torch.nn.Conv2d(old.in_channels, old.out_channels, old.kernel_size, old.stride, 0, old.dilation,
                               old.groups, old.bias is not None)
        conv.load_state_dict(old.state_dict())
        parent, _, leaf = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, leaf,
                torch.nn.Sequential(torch.nn.ZeroPad2d((left, right, top, bottom)), conv))
    return model


def _session(path: Path, threads: int | None) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads or torch.get_num_threads()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def _write_bytes(path: Path, data: bytes) -> None:
    def write(f: IO[bytes]) -> None:
        f.write(data)

    atomic_write(path, write)


class OnnxEncoder:
    """Runs a TorchExtractor's network through ONNX Runtime in fp32; same ``encode`` contract.

    Raises:
        ValueError: the graph's output differs from PyTorch's by more than ``tol``.
    """

    engine = "onnx"
    quantization: str | None = None  # fp32: the same feature space as PyTorch

    def __init__(self, model: torch.nn.Module, name: str, input_size: int, threads: int | None = None,
                 tol: float = 1e-4):
        model = model.float().eval().to(memory_format=torch.contiguous_format)  # type: ignore[call-overload]
        self.fp32_path = cache_dir() / f"{name}-{input_size}-{_fingerprint(model, input_size)}.onnx"
        if not self.fp32_path.is_file():
            self._export(freeze_same_padding(model, input_size), self.fp32_path, input_size)
        self.threads = threads
        self.path = self.fp32_path
        self.session = _session(self.fp32_path, threads)
        x = torch.randn(2, 3, input_size, input_size, generator=torch.Generator().manual_seed(0))
        with torch.inference_mode():
            ref = model(x).numpy()
        self.max_abs_diff = float(np.abs(self.run(x.numpy()) - ref).max())
        if not self.max_abs_diff <= tol:
            raise ValueError(f"ONNX graph differs from PyTorch by {self.max_abs_diff:.2e} > {tol}")

    @staticmethod
    def _export(model: torch.nn.Module, path: Path, input_size: int) -> None:
        import io

        buf = io.BytesIO()
        target: Any = buf  # torch.onnx.export writes to a file object too
        x = torch.zeros(1, 3, input_size, input_size)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(model, (x,), target, input_names=["images"], output_names=["features"],
                              dynamic_axes={"images": {0: "batch"}, "features": {0: "batch"}},
                              opset_version=17, dynamo=False)
        _write_bytes(path, buf.getvalue())

    def run(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {"images": np.ascontiguousarray(x, dtype=np.float32)})[0]


# --------------------------------------------------------------------------- int8
@dataclass(frozen=True)
class Int8Recipe:
    """How the fp32 graph is quantised (``onnxruntime.quantization.quantize_static``); part of the cache key.

    Chosen on BSDS val + its 58 attacks with efficientnet_lite0 (docs/readme/engine_norm.md): QDQ, per-channel
    int8 weights, uint8 activations, MinMax calibration, and the first two Conv nodes (the stem and the first
    depthwise conv, the most sensitive layers; cheap in fp32) kept in fp32: R@1 -0.0002 against fp32 at
    2.2x its single-thread speed (quantising them too: R@1 -0.0012 for +4 % speed). Per-tensor weights
    lost 0.1 cosine; ``reduce_range`` lost accuracy for no speed (VNNI CPUs); QOperator ran no faster than
    QDQ; int8 activations (S8S8) ran at fp32 speed on x86; Entropy/Percentile calibration were no better.
    ``float_convs``: leading Conv nodes kept, with everything before them, in fp32.
    """

    quant_format: str = "QDQ"
    per_channel: bool = True
    activation_type: str = "QUInt8"
    weight_type: str = "QInt8"
    calibrate_method: str = "MinMax"
    float_convs: int = 2

    def key(self) -> str:
        return hashlib.sha256(repr(sorted(asdict(self).items())).encode()).hexdigest()[:8]


def bundled_photos() -> list[Image.Image]:
    """The default calibration set: photos bundled with scikit-image (read from its package, never downloaded)."""
    import skimage.data
    from PIL import Image

    photos = []
    for name in BUNDLED_PHOTOS:
        a = np.asarray(getattr(skimage.data, name)())
        if a.dtype == bool:
            a = a.astype(np.uint8) * 255
        if a.ndim == 2:
            a = np.stack([a] * 3, axis=-1)
        photos.append(Image.fromarray(np.ascontiguousarray(a[..., :3]).astype(np.uint8)))
    return photos


def calibration_batch(cfg: ModelCfg, source: str | os.PathLike | None = None,
                      max_images: int = MAX_CALIBRATION) -> np.ndarray:
    """The preprocessed calibration images (N, 3, H, W) float32, in a fixed order.

    Args:
        cfg: the model's config (its preprocessing is applied, as for extraction).
        source: a folder, list file or manifest of images (at most ``max_images`` of them, evenly spaced
            in sorted order), or None for the photos bundled with scikit-image.

    Raises:
        UsageError: no readable image in ``source``.
    """
    from neardup.extract.base import build_transform

    transform = build_transform(cfg)
    if source is None:
        images: Sequence[Image.Image] = bundled_photos()
        return torch.stack([transform(im) for im in images]).numpy()
    from neardup.data.images import ImageDecodeError, load_image
    from neardup.extract.pipeline import collect_inputs

    paths, _, _ = collect_inputs(source)
    if len(paths) > max_images:
        paths = [paths[(i * len(paths)) // max_images] for i in range(max_images)]
    tensors = []
    for p in paths:
        try:
            tensors.append(transform(load_image(p)))
        except ImageDecodeError:
            continue
    if not tensors:
        raise UsageError(f"--calibration {source}: no readable image among {len(paths)}")
    return torch.stack(tensors).numpy()


def calibration_digest(batch: np.ndarray) -> str:
    """What identifies a calibration set: the sha256 of its preprocessed pixels (images, order, preprocessing)."""
    h = hashlib.sha256(str(batch.shape).encode())
    h.update(np.ascontiguousarray(batch, dtype=np.float32).tobytes())
    return h.hexdigest()[:12]


def _quantizable_exclusions(path: Path, float_convs: int) -> list[str]:
    """Names of the nodes before the (``float_convs`` + 1)-th Conv, in graph order (kept in fp32)."""
    if float_convs <= 0:
        return []
    import onnx

    names, convs = [], 0
    for node in onnx.load(str(path)).graph.node:
        if node.op_type == "Conv":
            convs += 1
            if convs > float_convs:
                break
        names.append(node.name)
    return names


def quantize_graph(fp32_path: Path, out: Path, batch: np.ndarray, recipe: Int8Recipe) -> None:
    """Quantise ``fp32_path`` into ``out`` (written atomically), calibrated on ``batch``."""
    from onnxruntime import quantization as q
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(q.CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter([{"images": batch[i:i + 16]} for i in range(0, len(batch), 16)])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.items, None)

    with tempfile.TemporaryDirectory(prefix="neardup-int8-") as tmp:
        pre, qpath = Path(tmp) / "pre.onnx", Path(tmp) / "int8.onnx"
        quant_pre_process(str(fp32_path), str(pre))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            q.quantize_static(str(pre), str(qpath), Reader(), quant_format=getattr(q.QuantFormat, recipe.quant_format),
                              per_channel=recipe.per_channel,
                              activation_type=getattr(q.QuantType, recipe.activation_type),
                              weight_type=getattr(q.QuantType, recipe.weight_type),
                              calibrate_method=getattr(q.CalibrationMethod, recipe.calibrate_method),
                              nodes_to_exclude=_quantizable_exclusions(pre, recipe.float_convs))
        _write_bytes(out, qpath.read_bytes())


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    na = np.linalg.norm(a, axis=1)
    nb = np.linalg.norm(b, axis=1)
    return (a * b).sum(axis=1) / np.maximum(na * nb, 1e-12)


class Int8Encoder(OnnxEncoder):
    """The fp32 graph (exported and checked as :class:`OnnxEncoder`) quantised to int8 and cached.

    The cache key holds the fp32 graph's fingerprint, the calibration digest and the recipe, so another
    calibration set gives another graph. Before use, the int8 features of the calibration images are
    compared with the fp32 graph's: a mean or minimum cosine below ``INT8_MEAN_COSINE``/``INT8_MIN_COSINE``
    is refused (a broken quantisation, not a small loss).

    Attributes:
        quantization: ``int8-<calibration digest>-<recipe key>``, the feature space's quantisation field.
        min_cosine, mean_cosine: int8 against fp32 on the calibration images.

    Raises:
        ValueError: the fp32 export differs from PyTorch, or the int8 graph from fp32 (see above).
    """

    engine = "onnx-int8"

    def __init__(self, model: torch.nn.Module, name: str, input_size: int, calibration: np.ndarray,
                 threads: int | None = None, tol: float = 1e-4, recipe: Int8Recipe | None = None):
        super().__init__(model, name, input_size, threads, tol)
        recipe = recipe or Int8Recipe()
        digest = calibration_digest(calibration)
        self.quantization = f"int8-{digest}-{recipe.key()}"
        self.path = self.fp32_path.with_name(f"{self.fp32_path.stem}-{self.quantization}.onnx")
        if not self.path.is_file():
            quantize_graph(self.fp32_path, self.path, calibration, recipe)
        ref = self.run(calibration)  # still the fp32 session
        self.session = _session(self.path, threads)
        cos = _cosines(self.run(calibration), ref)
        self.min_cosine, self.mean_cosine = float(cos.min()), float(cos.mean())
        if not (self.min_cosine >= INT8_MIN_COSINE and self.mean_cosine >= INT8_MEAN_COSINE):
            raise ValueError(f"the int8 graph's features differ from fp32 on the calibration images (cosine min "
                             f"{self.min_cosine:.3f} < {INT8_MIN_COSINE} or mean {self.mean_cosine:.3f} < "
                             f"{INT8_MEAN_COSINE})")


def onnx_encoder(model: torch.nn.Module, cfg: ModelCfg, device: torch.device, engine: str,
                 calibration: str | os.PathLike | None = None) -> OnnxEncoder | None:
    """The ONNX Runtime encoder ``engine`` asks for, or None to run PyTorch.

    ``torch`` -> None. ``auto`` -> fp32 ONNX on CPU when onnxruntime is installed and the export is exact,
    else None. ``onnx`` -> fp32 ONNX or a one-line error saying why it cannot run. ``onnx-int8`` -> the
    int8 graph calibrated on ``calibration`` (None: photos bundled with scikit-image), or an error.

    Raises:
        UsageError: ``onnx``/``onnx-int8`` on a GPU, without onnxruntime, or with an export or quantisation
            that fails or differs; ``calibration`` with another engine.
    """
    if calibration is not None and engine != "onnx-int8":
        raise UsageError(f"--calibration applies to --engine onnx-int8, not to --engine {engine}")
    if engine == "torch" or (engine == "auto" and (device.type != "cpu" or not available())):
        return None
    if engine != "auto" and device.type != "cpu":
        raise UsageError(f"--engine {engine} runs on the CPU only; use --engine torch with --device cuda")
    if not available():
        raise UsageError(f"--engine {engine} needs onnx and onnxruntime: pip install 'neardup[onnx]'")
    try:
        if engine == "onnx-int8":
            batch = calibration_batch(cfg, calibration)
            return Int8Encoder(model, cfg.name, cfg.input_size, batch)
        return OnnxEncoder(model, cfg.name, cfg.input_size)
    except UsageError:
        raise
    except Exception as exc:  # export unsupported or inexact: keep PyTorch
        if engine != "auto":
            raise UsageError(f"--engine {engine} is unavailable for {cfg.name}: {exc}") from None
        return None
