"""The options of one extraction, as one dataclass: what ``neardup extract`` builds from its flags.

Why a dataclass: 19 keyword arguments passed through three layers drift apart; one
object with the library defaults, one ``validate()`` and one ``to_dict()`` does not.
The CLI's options default to None, so these defaults apply unless a flag is given.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import Any

from neardup.data.images import DEFAULT_MAX_PIXELS
from neardup.errors import UsageError
from neardup.extract.registry import ENGINES, check_engine


def _int_at_least(x: Any, lo: int) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x >= lo


@dataclass
class ExtractConfig:
    """Everything ``extract_features`` needs besides the input and the output folder.

    Attributes:
        model: a registered model name (``neardup models``). weights: its checkpoint (None: the default).
        batch_size: images per forward. workers: decoding processes (None: one per spare core, at most 8).
        device: auto|cpu|cuda[:N]. amp: auto (bf16 on CUDA, off on CPU)|off|fp16|bf16.
        engine: auto (ONNX Runtime on CPU when its export matches PyTorch within 1e-4)|torch|onnx|onnx-int8
            (the statically quantised ONNX graph: faster on CPUs, features in their own space).
        calibration: images (folder or list file, up to 64 used) that calibrate onnx-int8 (None: photos bundled
            with scikit-image).
        input_size: crop size override (None: the model's). layer: feature layer, for models with several.
        compile: torch.compile the network (PyTorch engine). shard_size: images per committed shard.
        dtype: stored float dtype (float32|float16). max_pixels: larger images are skipped.
        globs: keep only files matching these patterns (relative to the input folder).
        normalize / whiten / whiten_sample: fit and store an L2 / L2+PCA-whitening transform on a sample.
        transform_from: reuse the stored transform of another feature folder (queries like their database).
        overwrite: start over, removing only extract's own earlier output.
    """

    model: str = "neardup_cd"
    weights: str | None = None
    batch_size: int = 32
    workers: int | None = None
    device: str = "auto"
    amp: str = "auto"
    engine: str = "auto"
    calibration: str | None = None
    input_size: int | None = None
    layer: str | None = None
    compile: bool = False
    shard_size: int = 10_000
    dtype: str = "float32"
    globs: tuple[str, ...] = ()
    max_pixels: int = DEFAULT_MAX_PIXELS
    normalize: bool = False
    whiten: int | None = None
    whiten_sample: int = 100_000
    transform_from: str | None = None
    overwrite: bool = False

    def validate(self) -> ExtractConfig:
        """The CLI's click types, re-checked for API callers; returns ``self``.

        Raises:
            UsageError: the first bad value, named by its flag.
        """
        if not isinstance(self.model, str) or not self.model:
            raise UsageError(f"--model must be a model name, got {self.model!r}")
        for flag, value, lo in (("--batch-size", self.batch_size, 1), ("--shard-size", self.shard_size, 1),
                                ("--max-pixels", self.max_pixels, 1), ("--whiten-sample", self.whiten_sample, 2)):
            if not _int_at_least(value, lo):
                raise UsageError(f"{flag} must be an integer >= {lo}, got {value!r}")
        if self.workers is not None and not _int_at_least(self.workers, 0):
            raise UsageError(f"--workers must be an integer >= 0, got {self.workers!r}")
        if self.whiten is not None and not _int_at_least(self.whiten, 1):
            raise UsageError(f"--whiten must be a positive integer, got {self.whiten!r}")
        if self.dtype not in ("float32", "float16"):
            raise UsageError(f"unknown --dtype {self.dtype!r}; use float32 or float16")
        if not isinstance(self.engine, str):
            raise UsageError(f"unknown --engine {self.engine!r}; use {', '.join(ENGINES)}")
        check_engine(self.engine)
        if self.calibration is not None and self.engine != "onnx-int8":
            raise UsageError(f"--calibration applies to --engine onnx-int8, not to --engine {self.engine}")
        if self.compile and self.engine in ("onnx", "onnx-int8"):
            raise UsageError(f"--compile runs PyTorch; it does not apply to --engine {self.engine}")
        if self.amp not in (None, "auto", "off", "fp16", "bf16"):
            raise UsageError(f"unknown --amp {self.amp!r}; use auto, off, fp16 or bf16")
        if isinstance(self.globs, str) or not all(isinstance(g, str) for g in self.globs):
            raise UsageError(f"--glob must be a list of patterns, got {self.globs!r}")
        for flag, path in (("--weights", self.weights), ("--transform-from", self.transform_from),
                           ("--calibration", self.calibration)):
            if path is not None and not isinstance(path, (str, os.PathLike)):
                raise UsageError(f"{flag} must be a path, got {path!r}")
        return self

    def to_dict(self) -> dict[str, Any]:
        """JSON/YAML scalars (globs as a list)."""
        d = asdict(self)
        d["globs"] = list(self.globs)
        for key in ("weights", "transform_from", "calibration"):
            d[key] = None if d[key] is None else os.fspath(d[key])
        return d
