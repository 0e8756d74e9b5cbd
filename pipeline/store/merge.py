"""Automatic merging of index parts: however many tasks a job has, its index stays a few dozen files.

Every task commits one small part (level 0; a part's footer alone is a few KB, and a read costs about a
millisecond per part). When ``fan_in`` parts of one level exist they are rewritten as one part of the next
level, named ``L<level>-<id>.parquet``: a level-1 part holds about ``fan_in`` tasks, a level-2 part
``fan_in``² tasks, and so on, so a million videos in tasks of 16 leave under 200 parts, and each record is
rewritten about log_fan_in(tasks) times. A merge keeps every record exactly as it was, superseded ones
and the ``part`` column included (``avzsl store compact`` drops what is superseded), so the index reads
the same before and after and ``avzsl store repair`` still rebuilds it from the shard headers.

Only the holder of the store lease merges (workers only add parts, under new names), and only parts that
are intact and of this store: damaged and foreign parts stay where they are for repair. A merge writes its
part atomically, with the name and row count of each source in its description, reads it back and
compares it with the sources, and only then removes them. A merge cut short leaves either its sources
untouched (plus a temp file readers ignore and repair removes) or the merged part beside some of its
sources: the same records twice, which read the same. :func:`remove_merged_sources` removes such a
source once it has checked that the merged part holds exactly its records. See docs/store.md.
"""

from __future__ import annotations

import logging
import re
import uuid
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from pipeline.store.index import (
    IndexPartError,
    concat,
    list_parts,
    of_store,
    plain,
    read_description,
    read_part,
    write_part,
)

log = logging.getLogger(__name__)

FAN_IN = 64  # parts of one level merged into one of the next
_LEVEL = re.compile(r"L(\d+)-")


@dataclass(frozen=True)
class Merge:
    sources: tuple[str, ...]  # the part names it replaced, in the order of its records
    merged: str
    rows: int


def level_of(name: str) -> int:
    """0 for a part committed by a task (or by repair); n for a part written by a merge to level n."""
    match = _LEVEL.match(name)
    return int(match[1]) if match else 0


def merged_name(level: int) -> str:
    return f"L{level}-{uuid.uuid4().hex[:12]}.parquet"


def merge_levels(index_dir: Path, fingerprint: str, fan_in: int | None = None) -> list[Merge]:
    """Merge each level holding ``fan_in`` (default :data:`FAN_IN`) parts or more into one part of the
    next level, lowest first."""
    fan_in = FAN_IN if fan_in is None else fan_in
    if fan_in < 2:
        raise ValueError(f"fan_in must be at least 2, not {fan_in}")
    merges = []
    level = 0
    while True:
        by_level: dict[int, list[Path]] = {}
        for part in list_parts(index_dir):
            by_level.setdefault(level_of(part.name), []).append(part)
        full = [n for n, parts in by_level.items() if n >= level and len(parts) >= fan_in]
        if not full:
            return merges
        level = min(full)
        merge = merge_parts(index_dir, fingerprint, by_level[level], level + 1)
        if merge is not None:
            merges.append(merge)
        level += 1  # a level whose parts could not all be merged (damaged ones) is not retried now


def merge_parts(index_dir: Path, fingerprint: str, parts: list[Path], level: int) -> Merge | None:
    """Rewrite the intact parts of this store among ``parts`` as one part of ``level``; None if < 2."""
    sources, tables = [], []
    for path in parts:
        try:
            table = read_part(path)
        except (FileNotFoundError, IndexPartError):
            continue  # gone, or damaged: repair's business, not a merge's
        if not of_store(table, fingerprint):
            continue  # foreign: repair sets it aside
        sources.append(path)
        tables.append(table)
    if len(sources) < 2:
        return None
    records = concat(tables)
    name = merged_name(level)
    described = [{"name": p.name, "rows": t.num_rows} for p, t in zip(sources, tables, strict=True)]
    write_part(index_dir / name, records, fingerprint, sources=described)
    problem = _differs(index_dir / name, records)
    if problem is not None:
        (index_dir / name).unlink(missing_ok=True)
        log.error("%s: merging %d index parts failed (%s); they are kept", index_dir, len(sources), problem)
        return None
    remove_sources(sources)
    return Merge(tuple(p.name for p in sources), name, records.num_rows)


def remove_sources(paths: list[Path]) -> None:
    """Remove parts whose records a checked merged part holds."""
    for path in paths:
        path.unlink(missing_ok=True)


def remove_merged_sources(index_dir: Path) -> list[str]:
    """Remove every part that a readable merged part holds exactly (what a merge cut short left behind).

    Reads only footers unless a merged part names a source that is still there.
    """
    present = {p.name: p for p in list_parts(index_dir)}
    removed = []
    for name, path in sorted(present.items()):
        if level_of(name) == 0:
            continue
        try:
            sources = read_description(path).get("sources") or []
        except IndexPartError:
            continue
        left = [s for s in sources if s.get("name") in present and s.get("name") != name]
        if not left:
            continue
        try:
            merged = read_part(path)
        except (FileNotFoundError, IndexPartError):
            continue  # the sources still hold the records: keep them
        offsets = {}
        offset = 0
        for source in sources:
            offsets[source["name"]] = offset
            offset += int(source["rows"])
        if offset != merged.num_rows:
            continue
        for source in left:
            expected = merged.slice(offsets[source["name"]], int(source["rows"]))
            if _differs(present[source["name"]], expected) is None:
                remove_sources([present[source["name"]]])
                removed.append(source["name"])
    return removed


def _differs(path: Path, expected: pa.Table) -> str | None:
    """Why the part at ``path`` does not hold exactly ``expected`` (None: it does)."""
    try:
        back = read_part(path)
    except (FileNotFoundError, IndexPartError) as err:
        return str(err) or type(err).__name__
    return None if plain(back).equals(plain(expected)) else "its records differ from the parts it merges"
