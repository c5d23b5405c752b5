"""Exact and approximate (faiss) nearest-neighbour search and its evaluation."""
