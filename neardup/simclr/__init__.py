"""SimCLR-style fine-tuning (NT-Xent on manipulated views)."""
