"""The results store: atomic writes, per-cell predictions, provenance records."""
