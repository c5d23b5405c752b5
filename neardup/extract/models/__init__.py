"""Importing this package registers every model (one module per family)."""

from neardup.extract.models import efficientnet, hashes, torchvision_models  # noqa: F401
