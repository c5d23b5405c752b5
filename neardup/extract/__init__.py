"""Feature extraction: the model registry, extractors, the feature store and the pipeline.

``create_extractor(name, **kw)`` builds any registered model; ``extract_features(src, out, ExtractConfig(...))``
(in :mod:`neardup.extract.pipeline`) writes a resumable feature store.
"""

from neardup.extract.config import ExtractConfig
from neardup.extract.registry import (
    MODELS,
    ModelCfg,
    create_extractor,
    get_model_cfg,
    list_models,
    register_model,
    unregister_model,
)

__all__ = ["MODELS", "ExtractConfig", "ModelCfg", "create_extractor", "get_model_cfg", "list_models",
           "register_model", "unregister_model"]
