"""DAAN and its baselines, losses, metrics, data loading from stores, and the AV-GZSL training/evaluation protocol."""
