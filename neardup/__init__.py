"""neardup: find near-duplicate images and improve image similarity without labels.

Importing the package is cheap: models, faiss and torch load only when used.
"""

__version__ = "0.1.0"
