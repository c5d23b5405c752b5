"""Importing this package registers every model (one module per family)."""

from neardup.extract.models import byol, efficientnet, hashes, simclr, torchvision_models  # noqa: F401
from neardup.extract.models import finetuned  # noqa: F401  (after the models it wraps)
