"""Image sets, robust decoding, attacks and the ground-truth manifest."""
