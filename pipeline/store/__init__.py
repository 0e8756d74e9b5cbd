"""Sharded feature stores: lock-free parallel writes, an index that drives resume, memory-mapped reads.

Public API: :class:`FeatureStore` (``create``, ``open``, ``header``, ``index``, ``index_table``, ``video_ids``,
``features``, ``timestamps``, ``pooled``, ``writer``, ``merge_index``), :func:`find_stores`,
:class:`ShardWriter`, :class:`StoreLease`, :func:`verify_store`, :func:`repair_store`, :func:`compact_store`,
and the AV-GZSL layout converters in :mod:`pipeline.store.layouts`. The format and its guarantees:
docs/store.md.
"""

from pipeline.store.compact import CompactReport, compact_store
from pipeline.store.lease import StoreBusy, StoreLease
from pipeline.store.repair import LOST, RepairReport, repair_store
from pipeline.store.store import FeatureStore, ShardWriter, StoreError, find_stores
from pipeline.store.verify import Problem, verify_store

__all__ = [
    "LOST",
    "CompactReport",
    "FeatureStore",
    "Problem",
    "RepairReport",
    "ShardWriter",
    "StoreBusy",
    "StoreError",
    "StoreLease",
    "compact_store",
    "find_stores",
    "repair_store",
    "verify_store",
]
