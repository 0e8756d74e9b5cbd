"""Batch feature extraction as Dask tasks: config, plan, worker and client (see each module).

Public API: :class:`ExtractConfig` / :class:`ExtractOptions`, :func:`run_extract`, :func:`format_summary`.
"""

from workflows.extract.client import STORES_FILE, ExtractSummary, format_summary, run_extract
from workflows.extract.config import DecodeDevice, DecodeIsolation, ExtractConfig, ExtractOptions

__all__ = [
    "STORES_FILE",
    "DecodeDevice",
    "DecodeIsolation",
    "ExtractConfig",
    "ExtractOptions",
    "ExtractSummary",
    "format_summary",
    "run_extract",
]
