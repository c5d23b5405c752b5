"""Near-duplicate finding for a user's own collection: exact hashes, features, a calibrated threshold,
groups that do not chain, a review report and safe actions.

    >>> from neardup.dedup import find_duplicates, DedupConfig
    >>> result = find_duplicates(["photos/"], "scan/", DedupConfig(keep="largest"))
    >>> result.path_groups()   # sets of paths; result.to_dict() for the counts and the calibration
"""

from neardup.dedup.find import DedupConfig, DedupResult, find_duplicates

__all__ = ["DedupConfig", "DedupResult", "find_duplicates"]
