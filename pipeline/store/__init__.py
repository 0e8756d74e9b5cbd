"""Sharded feature stores: lock-free parallel writes, an index that drives resume, memory-mapped reads.

Public API: :class:`FeatureStore` (``create``, ``open``, ``header``, ``index``, ``video_ids``, ``features``,
``timestamps``, ``pooled``, ``writer``), :class:`ShardWriter`, :class:`StoreLease`, :func:`verify_store`,
:func:`compact_store`, and the AV-GZSL layout converters in :mod:`pipeline.store.layouts`.
"""

from pipeline.store.compact import CompactReport, compact_store
from pipeline.store.lease import StoreBusy, StoreLease
from pipeline.store.store import FeatureStore, ShardWriter, StoreError
from pipeline.store.verify import Problem, verify_store

__all__ = [
    "CompactReport",
    "FeatureStore",
    "Problem",
    "ShardWriter",
    "StoreBusy",
    "StoreError",
    "StoreLease",
    "compact_store",
    "verify_store",
]
