"""Per-family pieces whose math differs from the generic decoder (one small file each)."""
