"""Near-duplicate finding for a user's own collection: exact hashes, features, a calibrated threshold,
groups that do not chain, a review report and safe actions."""
