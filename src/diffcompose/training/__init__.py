"""Training Paint-by-Example: self-reference data, mask shapes, reference augmentations, trainer."""
