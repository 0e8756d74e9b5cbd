"""Sharded feature stores: lock-free parallel writes, an index that drives resume, memory-mapped reads.

Public API: :class:`FeatureStore` (``create``, ``open``, ``header``, ``index``, ``video_ids``, ``features``,
``timestamps``, ``pooled``, ``writer``, ``verify``, ``compact``), :class:`ShardWriter`, :class:`StoreLease`, and the
AV-GZSL layout converters in :mod:`pipeline.store.layouts`.
"""

from pipeline.store.lease import StoreBusy, StoreLease
from pipeline.store.store import FeatureStore, ShardWriter, StoreError
from pipeline.store.verify import Problem, verify_store

__all__ = ["FeatureStore", "Problem", "ShardWriter", "StoreBusy", "StoreError", "StoreLease", "verify_store"]
