"""Importing this package registers every model (one module per family); ``neardup models`` lists them in this order."""

from neardup.extract.models import neardup_cd  # noqa: F401, I001  (the default: listed first)
from neardup.extract.models import byol, efficientnet, hashes, simclr, torchvision_models  # noqa: F401, I001
from neardup.extract.models import finetuned, trained  # noqa: F401  (listed last: they wrap the others)
