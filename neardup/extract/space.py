"""The feature space a set of vectors lives in, and the one check that two sets share it.

Why: vectors from another model, dimension, preprocessing, stored transform (L2 / PCA
whitening) or weights file are not comparable, yet faiss and numpy compare them without a
word and return nonsense neighbours. Every place that mixes vectors (search's database,
queries and distractors; ``cluster`` over several folders; ``index add`` and ``query``)
describes each side with a :class:`FeatureSpace` and calls :func:`require_same_space`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING, Any

from neardup.errors import UsageError
from neardup.io_utils import read_json_object

if TYPE_CHECKING:
    from neardup.extract.store import FeatureStore


@dataclass(frozen=True)
class FeatureSpace:
    """What makes two feature vectors comparable.

    Attributes:
        model: extractor name.
        dim: dimension of the vectors as used (bits for hashes; after any stored transform).
        metric: the extractor's metric, ``cosine`` for float features or ``hamming`` for hashes (the kind of
            vector; an index may search it with another metric, e.g. l2).
        preprocessing: the extractor's preprocessing (input size, resize, interpolation...); None if unknown.
        transform: digest of the stored transform (``extract --normalize/--whiten/--transform-from``), None without.
        weights: sha256 of the weights file the extractor loaded; None when unknown or when there is none
            (hashes). Compared only when both sides know it: older folders did not record it.
        quantization: None for float features (PyTorch or fp32 ONNX: the same space); the int8 key
            (calibration digest and recipe) of ``--engine onnx-int8``, whose features differ.
    """

    model: str
    dim: int
    metric: str
    preprocessing: dict[str, Any] | None = None
    transform: str | None = None
    weights: str | None = None
    quantization: str | None = None

    def __hash__(self) -> int:  # preprocessing is a dict: hash what is hashable
        return hash((self.model, self.dim, self.metric, self.transform, self.weights, self.quantization))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FeatureSpace:
        """The space of a ``to_dict()`` record (unknown keys, from newer versions, are ignored)."""
        return cls(**{f.name: d[f.name] for f in fields(cls) if f.name in d})

    @classmethod
    def of_store(cls, store: FeatureStore) -> FeatureSpace:
        """The space of a feature folder: meta.json, its stored transform, and the weights digest of job.json.

        Raises:
            UsageError: a damaged job.json or transform file (named).
        """
        meta = store.meta
        weights = meta.get("weights_sha256")
        job = store.root / "job.json"
        if weights is None and job.is_file():
            weights = read_json_object(job, "job record").get("weights_sha256")
        tf = store.transform
        quant = meta.get("quantization")
        return cls(store.model, store.dim, store.metric, meta.get("preprocessing"),
                   tf.digest() if tf is not None else None, weights if isinstance(weights, str) else None,
                   quant if isinstance(quant, str) else None)

    @classmethod
    def of_index(cls, meta: Any) -> FeatureSpace:
        """The space of an index's vectors, from its ``IndexMeta`` (the flat fields of folders that predate it)."""
        if getattr(meta, "space", None):
            return cls.from_dict(meta.space)
        return cls(meta.model, int(meta.num_features), "hamming" if meta.binary else "cosine", meta.preprocessing,
                   meta.transform)

    @classmethod
    def of_extractor(cls, extractor: Any) -> FeatureSpace:
        """The space of raw features ``extractor`` computes (no stored transform); hashes its weights file."""
        from neardup.extract.weights import file_sha256

        d = extractor.describe()
        path = getattr(extractor, "weights_path", None)
        return cls(d["model"], int(d["num_features"]), d["metric"], d["preprocessing"], None,
                   file_sha256(path) if path else None, d.get("quantization"))

    def describe(self) -> str:
        """``resnet50 (2048-d)``: how messages name the space."""
        return f"{self.model} ({self.dim}-d)"


def _first_difference(ref: FeatureSpace, other: FeatureSpace, ref_name: str, name: str) -> str | None:
    """How ``other`` differs from ``ref``, as the clause of an error message (None when they match)."""
    if other.model != ref.model:
        return (f"{name} holds {other.describe()} but {ref_name} holds {ref.describe()}; "
                f"extract with --model {ref.model}")
    if other.transform != ref.transform:  # before the dimension: whitening changes it
        def tf(t: str | None) -> str:
            return f"digest {t}" if t else "none"
        return (f"{name} and {ref_name} use different stored transforms (L2/whitening: {tf(other.transform)} "
                f"against {tf(ref.transform)}); extract both with the same --normalize/--whiten, or the second "
                f"with --transform-from the first")
    if other.dim != ref.dim:
        return f"{name} holds {other.describe()} but {ref_name} holds {ref.describe()}; extract with the same --layer"
    if other.metric != ref.metric:
        return f"{name} holds {other.metric} features but {ref_name} holds {ref.metric} features"
    if other.preprocessing is not None and ref.preprocessing is not None and other.preprocessing != ref.preprocessing:
        return (f"{name} uses preprocessing {other.preprocessing} but {ref_name} uses {ref.preprocessing}; "
                f"re-extract with the same --input-size")
    if other.quantization != ref.quantization:
        def q(x: str | None) -> str:
            return f"int8 ({x})" if x else "float (fp32)"
        return (f"{name} holds {q(other.quantization)} features but {ref_name} holds {q(ref.quantization)} "
                f"features; extract both with the same --engine (onnx-int8 with the same --calibration, or a "
                f"float engine: auto, torch, onnx)")
    if other.weights and ref.weights and other.weights != ref.weights:
        return (f"{name} was extracted with other weights (sha256 {other.weights[:12]}) than {ref_name} "
                f"(sha256 {ref.weights[:12]}); extract with the same --weights")
    return None


def require_same_space(spaces: list[FeatureSpace], what: list[str]) -> FeatureSpace:
    """Refuse vectors from different feature spaces; returns the (first) common space.

    Args:
        spaces: the spaces of the vector sets to be mixed, the reference first.
        what: a name for each, as messages print it (``the index``, ``feature folder F``).

    Raises:
        UsageError: naming the first set that differs from the first one, and how.
    """
    if len(spaces) != len(what) or not spaces:
        raise ValueError(f"{len(spaces)} spaces but {len(what)} names")
    ref = spaces[0]
    for space, name in zip(spaces[1:], what[1:], strict=True):
        diff = _first_difference(ref, space, what[0], name)
        if diff:
            raise UsageError(f"feature spaces disagree: {diff}")
    return ref
