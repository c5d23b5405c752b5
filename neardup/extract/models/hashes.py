"""Perceptual hashes (64 bits each) from the imagehash package, stored as packed bits."""

from __future__ import annotations

import functools
from typing import Unpack

import imagehash

from neardup.extract.base import HashExtractor
from neardup.extract.registry import ExtractorOptions, ModelCfg, register_model

HASHES = {
    "phash": (imagehash.phash, "DCT of a 32x32 grey image, bits above the median (Zauner 2010)"),
    "dhash": (imagehash.dhash, "horizontal gradient signs of a 9x8 grey image (Krawetz 2013)"),
    "ahash": (imagehash.average_hash, "8x8 grey image, bits above the mean"),
    "whash": (imagehash.whash, "Haar wavelet of a grey image, bits above the median"),
}


def _register(name: str) -> None:
    fn, doc = HASHES[name]
    cfg = ModelCfg(name=name, num_features=64, metric="hamming", kind="hash", family="hash", input_size=0,
                   resize_size=0, weights_format="none", weights_hint="no weights", feature_layer=doc,
                   paper="imagehash (J. Buchner)", license="BSD-2-Clause")

    @register_model(cfg)
    def build(cfg: ModelCfg, *, weights: str | None = None, layer: str | None = None,
              **options: Unpack[ExtractorOptions]) -> HashExtractor:
        """No weights and no network: ``create_extractor`` has refused the options that would not apply."""
        return HashExtractor(cfg, functools.partial(fn, hash_size=8))


for _name in HASHES:
    _register(_name)
