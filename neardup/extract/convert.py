"""Convert the published SimCLR (TensorFlow 1) and BYOL (JAX/Haiku) checkpoints to PyTorch files.

SimCLR TF1 checkpoints (``ResNet50_1x/model.ckpt-225206`` for v1,
``simclrv2/pretrained/r50_1x_sk0/model.ckpt-250228`` for v2) name layers by creation
order: ``base_model/conv2d/kernel``, ``base_model/conv2d_1/kernel``, ... (HWIO) and
``base_model/batch_normalization[_N]/{gamma,beta,moving_mean,moving_variance}``;
``ema_model/base_model/...`` holds the EMA copy, ``.../Momentum`` the optimizer slots,
``head_supervised/linear_layer/dense/{kernel,bias}`` the linear classifier and
``head_contrastive/nl_{0,1,2}/dense/kernel`` with ``nl_{i}/batch_normalization/*`` the
v2 projection head (``nl_2`` has no ``beta``). As in tonylins' and Separius'
converters, the N-th conv/BN variable goes to the N-th Conv2d/BatchNorm2d of the
PyTorch module in creation order, every shape checked; the architecture is
identified from the conv shapes. Reading the checkpoint itself needs TensorFlow.

BYOL's ``pretrain_res50x1.pkl`` is ``dill.dump(dict(experiment_state=..., step=..., rng=...))``
where ``experiment_state`` holds ``online_params`` / ``online_state`` Haiku trees:
``{module: {name: array}}`` with modules like ``res_net50/~/block_group_0/~/block_0/~/conv_0``
(``w``, HWIO), ``.../batchnorm_0`` (``scale``, ``offset``, shape (1,1,1,C)),
``.../shortcut_conv``, ``.../shortcut_batchnorm``, ``res_net50/~/initial_conv`` and
``initial_batchnorm``, and state ``.../batchnorm_0/~/mean_ema`` / ``var_ema``
(``average``, ``hidden``, ``counter``). It is read with a restricted unpickler
(numpy array reconstruction only; container classes become inert records) and
mapped to torchvision keys as ajtejankar/byol-convert does.
"""

from __future__ import annotations

import io
import pickle
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from neardup.errors import UsageError
from neardup.extract.models import simclr as S
from neardup.io_utils import atomic_write


# --------------------------------------------------------------------------- SimCLR TF1
def _index(name: str) -> int:
    m = re.search(r"_(\d+)$", name)
    return int(m.group(1)) if m else 0


def _tf_layers(variables: Mapping[str, np.ndarray], prefix: str) -> tuple[list[str], list[str]]:
    """Conv and BN scopes under ``prefix`` in creation order (``conv2d``, ``conv2d_1``, ...)."""
    convs = {k.rsplit("/", 1)[0] for k in variables if re.fullmatch(re.escape(prefix) + r"conv2d(_\d+)?/kernel", k)}
    bns = {k.rsplit("/", 1)[0] for k in variables
           if re.fullmatch(re.escape(prefix) + r"batch_normalization(_\d+)?/moving_mean", k)}
    return sorted(convs, key=_index), sorted(bns, key=_index)


def _modules(model: nn.Module, kind: type) -> list[str]:
    return [n for n, m in model.named_modules() if isinstance(m, kind)]


def identify_simclr(conv_shapes: list[tuple[int, ...]]) -> tuple[int, int, int]:
    """(depth, width, sk) whose conv shapes (HWIO, creation order) are exactly ``conv_shapes``."""
    for depth in S.DEPTHS:
        for width in (1, 2, 3, 4):
            for sk in (0, 1):
                n_convs = (3 if sk else 1) + sum(S.DEPTHS[depth]) * (5 if sk else 3) + 4
                stem_out = 64 * width // 2 if sk else 64 * width
                if n_convs != len(conv_shapes) or conv_shapes[0][-1] != stem_out:
                    continue  # cheap filter before building the candidate
                with torch.device("meta"):
                    net = S.ResNet(S.DEPTHS[depth], width, S.SK_RATIO if sk else 0.0)
                convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
                if len(convs) == len(conv_shapes) and all(tuple(m.weight.permute(2, 3, 1, 0).shape) == s
                                                          for m, s in zip(convs, conv_shapes, strict=True)):
                    return depth, width, sk
    raise UsageError(f"no SimCLR ResNet (depth 50/101/152, width 1-4, SK or not) has these {len(conv_shapes)} "
                     f"convs (first {conv_shapes[:1]})")


def simclr_tf1_to_torch(variables: Mapping[str, np.ndarray], layout: str = "auto", ema: bool = False,
                        arch: tuple[tuple[int, ...], int, int] | None = None) -> tuple[dict, str]:
    """Map TF1 SimCLR variables (name -> numpy array) onto a PyTorch checkpoint.

    Args:
        variables: every variable of the checkpoint, by its TF name.
        layout: ``v2`` (Separius: ``{'resnet', 'head'}``), ``v1`` (tonylins: ``{'state_dict'}``)
            or ``auto`` (v2 when a ``head_contrastive/nl_0`` head or SK is present, else v1).
        ema: take ``ema_model/base_model/*`` instead of ``base_model/*``.
        arch: ``(blocks per group, width, sk)``; identified from the conv shapes when None.

    Returns:
        (checkpoint dict, short description such as ``r50_1x_sk1``).

    Raises:
        UsageError: no matching architecture, a missing variable or a shape mismatch.
    """
    prefix = ("ema_model/" if ema else "") + "base_model/"
    conv_scopes, bn_scopes = _tf_layers(variables, prefix)
    if not conv_scopes:
        raise UsageError(f"no {prefix}conv2d*/kernel variables: not a SimCLR TF1 checkpoint")
    if arch is None:
        depth, width, sk = identify_simclr([tuple(variables[c + "/kernel"].shape) for c in conv_scopes])
        layers: tuple[int, ...] = S.DEPTHS[depth]
        tag = f"r{depth}_{width}x_sk{sk}"
    else:
        layers, width, sk = arch
        tag = f"custom_{width}x_sk{sk}"
    has_head = ("ema_model/" if ema else "") + "head_contrastive/nl_0/dense/kernel" in variables
    if layout == "auto":
        layout = "v2" if has_head or sk or width == 3 or layers != S.DEPTHS[50] else "v1"
    if layout == "v1" and (sk or width == 3):
        raise UsageError("the v1 (torchvision) layout has no SK or 3x variant; use --layout v2")
    with torch.device("meta"):
        model: nn.Module = (S.WideResNet(layers, width) if layout == "v1"
                            else S.ResNet(layers, width, S.SK_RATIO if sk else 0.0))
    own = model.state_dict()
    sd: dict[str, torch.Tensor] = {}

    def put(key: str, value: np.ndarray, src: str) -> None:
        t = torch.from_numpy(np.ascontiguousarray(value)).float()
        if key in own and tuple(t.shape) != tuple(own[key].shape):
            raise UsageError(f"{src} {tuple(t.shape)} does not fit {key} {tuple(own[key].shape)}")
        sd[key] = t

    conv_names, bn_names = _modules(model, nn.Conv2d), _modules(model, nn.BatchNorm2d)
    if (len(conv_names), len(bn_names)) != (len(conv_scopes), len(bn_scopes)):
        raise UsageError(f"checkpoint has {len(conv_scopes)} convs / {len(bn_scopes)} BNs, "
                         f"the {tag} model {len(conv_names)} / {len(bn_names)}")
    for name, scope in zip(conv_names, conv_scopes, strict=True):
        put(f"{name}.weight", variables[scope + "/kernel"].transpose(3, 2, 0, 1), scope)
    for name, scope in zip(bn_names, bn_scopes, strict=True):
        for ours, theirs in (("weight", "gamma"), ("bias", "beta"), ("running_mean", "moving_mean"),
                             ("running_var", "moving_variance")):
            put(f"{name}.{ours}", variables[f"{scope}/{theirs}"], f"{scope}/{theirs}")
        sd[f"{name}.num_batches_tracked"] = torch.tensor(0)
    if "head_supervised/linear_layer/dense/kernel" in variables:
        put("fc.weight", variables["head_supervised/linear_layer/dense/kernel"].T, "head_supervised kernel")
        put("fc.bias", variables["head_supervised/linear_layer/dense/bias"], "head_supervised bias")
    if layout == "v1":
        return {"state_dict": sd}, f"{tag} (v1 layout)"
    ckpt: dict[str, Any] = {"resnet": sd}
    if has_head:
        ckpt["head"] = _head_to_torch(variables, ("ema_model/" if ema else "") + "head_contrastive/")
    return ckpt, f"{tag} (v2 layout{', with projection head' if has_head else ''})"


def _t(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a)).float()


def _head_to_torch(variables: Mapping[str, np.ndarray], prefix: str) -> dict[str, torch.Tensor]:
    head: dict[str, torch.Tensor] = {}
    for i in range(3):
        p = f"{prefix}nl_{i}/"
        if p + "dense/kernel" not in variables:
            raise UsageError(f"missing {p}dense/kernel: expected a 3-layer SimCLR v2 projection head")
        head[f"layers.{3 * i}.weight"] = _t(variables[p + "dense/kernel"].T)
        bn, b = p + "batch_normalization/", f"layers.{3 * i + 1}."
        head[b + "weight"] = _t(variables[bn + "gamma"])
        beta = variables.get(bn + "beta")  # the last layer has center=False: no beta
        head[b + "bias"] = torch.zeros_like(head[b + "weight"]) if beta is None else _t(beta)
        head[b + "running_mean"] = _t(variables[bn + "moving_mean"])
        head[b + "running_var"] = _t(variables[bn + "moving_variance"])
        head[b + "num_batches_tracked"] = torch.tensor(0)
    return head


def read_tf_checkpoint(path: str | Path) -> dict[str, np.ndarray]:
    """Every variable of a TF checkpoint (a ``model.ckpt-N`` prefix or its folder) as numpy arrays.

    Raises:
        UsageError: TensorFlow is not installed, or nothing readable at ``path``.
    """
    try:
        import tensorflow as tf
    except ImportError:
        raise UsageError("reading a TensorFlow checkpoint needs TensorFlow: pip install tensorflow-cpu "
                         "(or tensorflow), then run the conversion again") from None
    path = Path(path)
    prefix = tf.train.latest_checkpoint(str(path)) if path.is_dir() else str(path)
    if not prefix:
        raise UsageError(f"no TensorFlow checkpoint in {path}")
    reader = tf.train.load_checkpoint(prefix)
    return {name: reader.get_tensor(name) for name, _ in tf.train.list_variables(prefix)
            if not name.endswith("/Momentum")}


# --------------------------------------------------------------------------- BYOL Haiku pickle
class _Record:
    """Inert stand-in for a pickled container class (NamedTuple, Haiku FlatMapping, ...): it only keeps its data."""

    _global = ""
    args: tuple[Any, ...]
    kwargs: dict[Any, Any]
    state: Any

    def __new__(cls, *args: Any, **kwargs: Any) -> _Record:
        self = object.__new__(cls)
        self.args, self.kwargs, self.state = args, kwargs, None
        return self

    def __setstate__(self, state: Any) -> None:
        self.state = state

    # list/dict-style BUILD opcodes (APPENDS/SETITEMS) on a record
    def append(self, x: Any) -> None:
        self.args += (x,)

    def extend(self, xs: Any) -> None:
        self.args += tuple(xs)

    def __setitem__(self, k: Any, v: Any) -> None:
        self.kwargs[k] = v


CONTAINER_MODULES = ("byol.", "haiku.", "jax.", "jaxlib.", "optax.", "collections", "__main__")


def _numpy_globals() -> dict[tuple[str, str], Any]:
    try:
        from numpy._core import multiarray
    except ImportError:  # numpy < 2
        from numpy.core import multiarray  # type: ignore[no-redef]
    import codecs

    out = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype, ("_codecs", "encode"): codecs.encode}
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
        out[(mod, "_reconstruct")] = multiarray._reconstruct
        out[(mod, "scalar")] = multiarray.scalar
    return out


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays and plain containers only; any other callable is refused.

    Allowed globals: numpy's array/dtype/scalar reconstruction and ``_codecs.encode``
    (protocol-2 bytes). Classes from ``CONTAINER_MODULES`` (the BYOL experiment-state
    NamedTuple, Haiku/optax containers) become inert :class:`_Record` objects; nothing
    from the file is ever executed.
    """

    _allowed = _numpy_globals()

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self._allowed:
            return self._allowed[(module, name)]
        if module == "collections" and name == "OrderedDict":
            return dict
        if module == "dill._dill" and name in ("_create_namedtuple", "_load_type"):
            return lambda *a, **k: type(f"{name}", (_Record,), {"_global": f"dill:{a[:1]}"})
        if module.startswith(CONTAINER_MODULES) or module in ("byol", "haiku", "jax", "optax"):
            return type(name, (_Record,), {"_global": f"{module}.{name}"})
        raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name}: only numpy arrays and containers "
                                     f"are allowed")


def read_haiku_pickle(path: str | Path) -> Any:
    """Load a BYOL ``.pkl`` with :class:`RestrictedUnpickler`.

    Raises:
        UsageError: unreadable file or a forbidden global (named in the message).
    """
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"weights file not found: {path}")
    try:
        with open(path, "rb") as f:
            return RestrictedUnpickler(f).load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, KeyError, IndexError,
            RecursionError, OverflowError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read {path} as a BYOL Haiku pickle safely: {type(exc).__name__}: "
                         f"{str(exc)[:200]}") from None


#: a Haiku experiment state is a few levels deep; far deeper (or larger) trees are not BYOL checkpoints
MAX_TREE_DEPTH = 64
MAX_TREE_NODES = 2_000_000


def _children(node: Any, path: tuple) -> list[tuple[Any, tuple]]:
    if isinstance(node, _Record):
        out = [(a, path + (f"{type(node).__name__}[{i}]",)) for i, a in enumerate(node.args)]
        if node.kwargs:
            out.append((node.kwargs, path))
        if node.state is not None:
            out.append((node.state, path))
        return out
    if isinstance(node, Mapping):
        return [(v, path + (k,)) for k, v in node.items()]
    if isinstance(node, (list, tuple)):
        if node and all(isinstance(x, tuple) and len(x) == 2 and isinstance(x[0], str) for x in node):
            return [(dict(node), path)]  # a mapping pickled as its items
        return [(v, path + (i,)) for i, v in enumerate(node)]
    return []


def _walk(obj: Any, path: tuple = ()) -> Iterator[tuple[tuple, Mapping]]:
    """Every mapping in ``obj`` (depth first, in order), through dicts, sequences and records.

    Iterative, each container visited once, with depth and size limits: a crafted pickle (nested
    100,000 deep, or one list referenced twice at every level) gives one clear error, not a
    RecursionError or an endless walk.
    """
    stack: list[tuple[Any, tuple, int]] = [(obj, path, 0)]
    seen: set[int] = set()
    alive: list[Any] = []  # keeps visited containers alive, so their ids are not reused
    visits = 0
    while stack:
        node, p, depth = stack.pop()
        if not isinstance(node, (_Record, Mapping, list, tuple)) or id(node) in seen:
            continue
        seen.add(id(node))
        alive.append(node)
        visits += 1
        if depth > MAX_TREE_DEPTH or visits > MAX_TREE_NODES:
            raise UsageError(f"the pickle is nested deeper than {MAX_TREE_DEPTH} levels or holds more than "
                             f"{MAX_TREE_NODES} containers: not a BYOL checkpoint")
        if isinstance(node, Mapping):
            yield p, node
        stack.extend((c, cp, depth + 1) for c, cp in reversed(_children(node, p)))


def _find_tree(obj: Any, key_suffix: str, preferred: str) -> Mapping:
    found = [(p, m) for p, m in _walk(obj) if any(isinstance(k, str) and k.endswith(key_suffix) for k in m)]
    if not found:
        raise UsageError(f"no Haiku tree with a module ending in {key_suffix!r}: not a BYOL checkpoint")
    for p, m in found:
        if preferred in p:
            return m
    return found[0][1]  # experiment_state is (online_params, target_params, online_state, ...): online first


_BLOCK = r".*block_group_(\d+)/~/block_(\d+)/~/"
_HAIKU_RULES = [
    (_BLOCK + r"conv_(\d+)", lambda m: f"layer{int(m[1]) + 1}.{m[2]}.conv{int(m[3]) + 1}"),
    (_BLOCK + r"batchnorm_(\d+)", lambda m: f"layer{int(m[1]) + 1}.{m[2]}.bn{int(m[3]) + 1}"),
    (_BLOCK + r"shortcut_conv", lambda m: f"layer{int(m[1]) + 1}.{m[2]}.downsample.0"),
    (_BLOCK + r"shortcut_batchnorm", lambda m: f"layer{int(m[1]) + 1}.{m[2]}.downsample.1"),
    (r".*initial_conv", lambda m: "conv1"),
    (r".*initial_batchnorm", lambda m: "bn1"),
]
_PARAM = {"w": "weight", "scale": "weight", "offset": "bias"}
_STATE = {"mean_ema": "running_mean", "var_ema": "running_var"}


def haiku_module_to_torch(module: str) -> str | None:
    """``res_net50/~/block_group_1/~/block_0/~/shortcut_conv`` -> ``layer2.0.downsample.0``; None if not encoder."""
    if any(part in module for part in ("projector", "predictor", "classifier", "logits")):
        return None
    for pattern, repl in _HAIKU_RULES:
        m = re.fullmatch(pattern, module)
        if m:
            return repl(m)
    return None


def byol_haiku_to_torchvision(ckpt: Any) -> dict[str, torch.Tensor]:
    """The online encoder of an unpickled BYOL checkpoint as a torchvision-layout state dict.

    Raises:
        UsageError: no encoder tree, or leaves that are not the arrays a BYOL encoder holds.
    """
    params = _find_tree(ckpt, "initial_conv", "online_params")
    state = _find_tree(ckpt, "initial_batchnorm/~/mean_ema", "online_state")
    sd: dict[str, torch.Tensor] = {}
    try:
        for module, leaves in params.items():
            name = haiku_module_to_torch(module) if isinstance(module, str) else None
            if name is None:
                continue
            for leaf, value in _leaves(leaves, module):
                if leaf not in _PARAM:
                    raise UsageError(f"unexpected parameter {module}/{leaf}")
                t = _tensor(value, f"{module}/{leaf}")
                if leaf == "w" and t.ndim != 4:
                    raise UsageError(f"{module}/w has shape {tuple(t.shape)}, expected a 4-d HWIO kernel")
                sd[f"{name}.{_PARAM[leaf]}"] = t.permute(3, 2, 0, 1).contiguous() if leaf == "w" else t.reshape(-1)
        for module, leaves in state.items():
            if not isinstance(module, str):
                continue
            base, _, kind = module.rpartition("/~/")
            name = haiku_module_to_torch(base)
            if name is None or kind not in _STATE:
                continue
            average = dict(_leaves(leaves, module)).get("average")
            if average is None:
                raise UsageError(f"{module} has no 'average'")
            sd[f"{name}.{_STATE[kind]}"] = _tensor(average, f"{module}/average").reshape(-1)
    except UsageError as exc:
        raise UsageError(f"not a BYOL checkpoint: {exc}") from None
    if not sd:
        raise UsageError("no encoder parameters found in the BYOL checkpoint")
    return sd


def _leaves(leaves: Any, module: str) -> list[tuple[Any, Any]]:
    if not isinstance(leaves, Mapping):
        raise UsageError(f"{module} is a {type(leaves).__name__}, not a mapping of arrays")
    return list(leaves.items())


def _tensor(value: Any, where: str) -> torch.Tensor:
    """A float tensor from a pickled numpy array (or number); UsageError for anything else."""
    try:
        arr = np.asarray(value)
        if arr.dtype.kind not in "fiub":
            raise TypeError(f"dtype {arr.dtype}")
        return torch.from_numpy(np.ascontiguousarray(arr)).float()
    except (TypeError, ValueError, RuntimeError) as exc:
        raise UsageError(f"{where} is not a numeric array ({exc})") from None


# --------------------------------------------------------------------------- file-level conversions
def save_torch(obj: Any, out: str | Path) -> None:
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write(out, lambda f: f.write(buf.getvalue()))


def convert_simclr(src: str | Path, out: str | Path, layout: str = "auto", ema: bool = False) -> str:
    """TF1 SimCLR checkpoint -> ``out`` (.pth); returns what was written, in words."""
    ckpt, desc = simclr_tf1_to_torch(read_tf_checkpoint(src), layout=layout, ema=ema)
    save_torch(ckpt, out)
    return desc


def byol_from_pickle(path: str | Path) -> dict[str, torch.Tensor]:
    """The online encoder of a BYOL Haiku ``.pkl`` (restricted unpickler); errors name ``path``."""
    ckpt = read_haiku_pickle(path)
    try:
        return byol_haiku_to_torchvision(ckpt)
    except UsageError as exc:
        raise UsageError(f"{path}: {exc}") from None


def convert_byol(src: str | Path, out: str | Path) -> str:
    """BYOL Haiku ``.pkl`` -> torchvision-layout state dict ``out``; returns what was written, in words."""
    sd = byol_from_pickle(src)
    if "conv1.weight" not in sd:
        raise UsageError(f"{src}: the BYOL encoder has no initial conv (conv1.weight)")
    save_torch(sd, out)
    blocks = [sum(1 for k in sd if re.fullmatch(rf"layer{g}\.\d+\.conv1\.weight", k)) for g in range(1, 5)]
    return f"online encoder: {len(sd)} tensors, width {sd['conv1.weight'].shape[0] // 64}x, blocks {blocks}"
