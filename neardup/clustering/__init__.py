"""Near-duplicate clustering estimators and their scores."""
