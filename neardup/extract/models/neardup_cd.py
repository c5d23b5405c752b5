"""neardup_cd: the copy-detection model neardup trains itself and ships as its default.

EfficientNet-Lite0 fine-tuned by ``neardup finetune`` (NT-Xent on attack views: the study's seed attacks, the
biomedical set and the extended overlays, pads, memes, stripes and chains) from the ImageNet weights, on the
200 BSDS500 training photos only: the validation photos are held out for its table, and checks on other photo
collections stay independent. The recipe is
``neardup/configs/recipes/neardup_cd.yaml``; ``make model`` retrains it.

Bundled file (``neardup/weights/neardup_cd.pt``, format ``neardup.cd/1``): the encoder's float16 state dict
without the unused ImageNet classifier (6.7 MB), the crop and the recipe. Its sha256 is recorded in
``neardup_cd.json`` beside it and checked before the file is read, so a damaged or swapped file is refused
instead of giving other features under the same name. Read with ``weights_only=True``.
"""

from __future__ import annotations

import io
import json
import os
from dataclasses import replace
from pathlib import Path
from typing import Any, Unpack

import torch

import neardup._compat  # noqa: F401  (before timm)
from neardup.errors import UsageError
from neardup.extract.base import TorchExtractor, empty_model
from neardup.extract.models.efficientnet import PooledFeatures
from neardup.extract.registry import ExtractorOptions, ModelCfg, check_fit, register_model
from neardup.extract.weights import file_sha256, load_strict, read_checkpoint

FORMAT = "neardup.cd/1"
WEIGHTS_DIR = Path(__file__).resolve().parents[2] / "weights"
WEIGHTS = WEIGHTS_DIR / "neardup_cd.pt"
RECORD = WEIGHTS_DIR / "neardup_cd.json"
#: the classifier of the ImageNet network: not part of the feature path, so not shipped
DROPPED_PREFIX = "net.classifier."


def cd_arch(cfg: ModelCfg) -> torch.nn.Module:
    """EfficientNet-Lite0's pooled-feature network without a classifier (the shipped layout)."""
    import timm

    return PooledFeatures(timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=0))


def record() -> dict[str, Any]:
    """The bundled weights' record (sha256, recipe, training photos, the table): ``neardup_cd.json``."""
    try:
        doc = json.loads(RECORD.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UsageError(f"the bundled neardup_cd record {RECORD} cannot be read ({exc}); reinstall neardup") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("sha256"), str):
        raise UsageError(f"the bundled neardup_cd record {RECORD} has no sha256; reinstall neardup")
    return doc


def verified_weights() -> Path:
    """The bundled weights file, after checking its sha256 against the record (computed once per file version)."""
    if not WEIGHTS.is_file():
        raise UsageError(f"the bundled neardup_cd weights are missing ({WEIGHTS}); reinstall neardup or run "
                         f"`make model`")
    want = record()["sha256"]
    got = file_sha256(WEIGHTS)
    if got != want:
        raise UsageError(f"the bundled neardup_cd weights {WEIGHTS} do not match their sha256 (file {got[:12]}…, "
                         f"record {want[:12]}…): reinstall neardup or run `make model`")
    return WEIGHTS


def load_cd_file(path: str | os.PathLike) -> tuple[torch.nn.Module, dict[str, Any]]:
    """(the network with the file's weights in float32, the file's record) of a ``neardup.cd/1`` file."""
    blob = read_checkpoint(path)
    if blob.get("format") != FORMAT:
        raise UsageError(f"{path} is not a neardup_cd weights file (format {blob.get('format')!r}, expected "
                         f"{FORMAT}; fine-tuned runs load with --model finetuned)")
    sd = blob.get("state_dict")
    if not isinstance(sd, dict):
        raise UsageError(f"{path}: no state_dict")
    model = empty_model(lambda: cd_arch(MODEL_CFG))
    load_strict(model, {k: v.float() for k, v in sd.items()}, str(path))
    return model, blob


def pack(encoder_file: str | os.PathLike, out: str | os.PathLike, recipe: str = "", fit: str | None = None,
         **info: Any) -> str:
    """Write a ``neardup finetune`` encoder (RUN/best.pt, format neardup.finetuned/1) as a ``neardup.cd/1`` file:
    float16, classifier dropped, crop, fit (``fit`` if given, else the encoder's) and ``recipe`` kept. Returns the
    written file's sha256.

    Raises:
        UsageError: not a fine-tuned efficientnet_lite0 encoder.
    """
    from neardup.extract.models.finetuned import FORMAT as FINETUNED
    from neardup.io_utils import atomic_write

    blob = read_checkpoint(encoder_file)
    fit = check_fit(blob.get("fit", "crop") if fit is None else fit, "to pack")
    if blob.get("format") != FINETUNED or blob.get("base_model") != "efficientnet_lite0":
        raise UsageError(f"{encoder_file}: expected an efficientnet_lite0 encoder from neardup finetune "
                         f"(format {FINETUNED})")
    sd = {k: v.detach().to(torch.float16) if v.is_floating_point() else v
          for k, v in blob["state_dict"].items() if not k.startswith(DROPPED_PREFIX)}
    buf = io.BytesIO()
    torch.save({"format": FORMAT, "base_model": "efficientnet_lite0", "state_dict": sd,
                "input_size": int(blob.get("input_size", 224)), "resize_size": int(blob.get("resize_size", 256)),
                "fit": fit, "recipe": recipe, **info}, buf)
    atomic_write(out, lambda f: f.write(buf.getvalue()))
    return file_sha256(out)


MODEL_CFG = ModelCfg(
    name="neardup_cd", num_features=1280, family="efficientnet", input_size=224, resize_size=256, fit="squash",
    interpolation="bicubic", mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5),
    weights_format=f"{FORMAT} file (float16 state dict, as `make model` writes)",
    weights_hint="bundled: neardup/weights/neardup_cd.pt (sha256 in neardup_cd.json)",
    feature_layer="global average pool after the 1280-channel head conv (pre-logits)",
    paper="neardup: EfficientNet-Lite0 fine-tuned with NT-Xent on attack views (SimCLR, Chen et al. 2020; "
          "augmentations after SSCD, Pizzi et al. 2022)", license="MIT (weights trained from Apache-2.0 weights)",
    stages=(("net.conv_stem", "net.bn1"), *((f"net.blocks.{i}",) for i in range(7))))


@register_model(MODEL_CFG, arch=cd_arch, weights_found=lambda: WEIGHTS.is_file() and RECORD.is_file())
def neardup_cd(cfg: ModelCfg, *, weights: str | None = None, layer: str | None = None,
               **options: Unpack[ExtractorOptions]) -> TorchExtractor:
    """The bundled weights (sha256 checked), or ``weights``: another ``neardup.cd/1`` file (``make model``'s)."""
    path = str(weights) if weights else str(verified_weights())
    model, blob = load_cd_file(path)
    fit = check_fit(blob.get("fit", "crop"), f"in {path}")  # how its network was trained to see images (older: crop)
    return TorchExtractor(replace(cfg, fit=fit), model, weights_path=path, **options)
