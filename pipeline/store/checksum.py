"""Checksums of feature data and index content: what lets a store tell good bytes from damaged ones.

One function for arrays (the rows of one video, or a whole tensor of a shard) and one for an index part's
decoded content. Both are the first 64 bits of SHA-256 (1.2 GB/s with SHA-NI; 64 bits make an undetected
random corruption a 1 in 2^64 event while keeping the index small: 16 hex characters per video).
The algorithm's name is recorded in every header, so a later format can change it. See docs/store.md.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

ALGORITHM = "sha256-64"


def array_digest(*arrays: np.ndarray) -> str:
    """Digest of the bytes of ``arrays`` in order (C order; the dtype is the writer's, fixed per store)."""
    h = hashlib.sha256()
    for array in arrays:
        h.update(np.ascontiguousarray(array).reshape(-1).view(np.uint8))
    return h.hexdigest()[:16]


def json_digest(value: object) -> str:
    """Digest of a JSON-able value in canonical form (sorted keys, no spaces)."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def table_digest(table: pa.Table) -> str:
    """Digest of a table's values, independent of how parquet or arrow chunked or encoded them.

    Per column: its name, null mask, and values (strings as lengths + UTF-8 bytes, nulls as empty,
    numbers as their fixed-width bytes with nulls as 0; dictionary-encoded columns as their values).
    Vectorised: a million rows take a fraction of a second.
    """
    h = hashlib.sha256()
    for name in table.column_names:
        column = table.column(name).combine_chunks()
        if pa.types.is_dictionary(column.type):
            column = column.dictionary_decode()
        h.update(name.encode() + b"\0")
        h.update(np.asarray(column.is_null(), dtype=np.bool_).view(np.uint8))
        if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
            filled = pc.fill_null(column, "")
            h.update(np.asarray(pc.utf8_length(filled), dtype=np.int64).view(np.uint8))
            h.update(_utf8_bytes(filled))
        else:
            values = pc.fill_null(column, 0) if column.null_count else column
            h.update(np.ascontiguousarray(values.to_numpy(zero_copy_only=False)).view(np.uint8))
    return h.hexdigest()[:16]


def _utf8_bytes(strings: pa.Array) -> memoryview:
    """The concatenated UTF-8 bytes of a null-free string array (its data buffer between its offsets)."""
    large = strings.cast(pa.large_string())
    _, offsets_buffer, data = large.buffers()
    if not len(large) or data is None:
        return memoryview(b"")
    offsets = np.frombuffer(offsets_buffer, dtype=np.int64)[large.offset : large.offset + len(large) + 1]
    return memoryview(data)[offsets[0] : offsets[-1]]
