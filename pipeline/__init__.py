"""avzsl engine: configuration, CLI, manifests, decoding, feature stores, Dask cluster, stage runner, reports."""

__version__ = "0.1.0"
