"""Feature extraction: the model registry, extractors, the feature store and the pipeline."""

from neardup.extract.registry import MODELS, ModelCfg, create_extractor, get_model_cfg, list_models, register_model

__all__ = ["MODELS", "ModelCfg", "create_extractor", "get_model_cfg", "list_models", "register_model"]
