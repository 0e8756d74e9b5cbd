"""VideoManifest: the list of videos a job works on (video_id, path, label, split, extra columns), as parquet.

Every stage downstream keys its outputs by ``video_id``, so ids are unique, stable across machines and
never a bare file stem: a path relative to the dataset root without its extension, or the benchmark's
own id (docs/benchmark.md). Problems found while building (missing files, excluded classes, files outside
class folders, files that are not media) are kept in ``problems`` and travel with the parquet file, so
nothing is dropped silently: every file under a folder is either in the manifest or a problem that says
why not (:data:`SKIPPED_KINDS`). Audio-only files are media too (audio extractors use them).

Split names follow the AV-GZSL partition of videos (docs/benchmark.md): the five sets below are disjoint,
and the loader splits of docs/benchmark.md are unions of them (:data:`LOADER_SPLITS`).
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.errors import UserError

REQUIRED_COLUMNS = ("video_id", "path", "label", "split")
VIDEO_EXTENSIONS = frozenset(
    {".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v", ".mpg", ".mpeg", ".flv", ".wmv", ".ts", ".3gp", ".ogv"}
)
AUDIO_EXTENSIONS = frozenset({".wav", ".mp3", ".m4a", ".aac", ".flac", ".ogg", ".opus"})
MEDIA_EXTENSIONS = VIDEO_EXTENSIONS | AUDIO_EXTENSIONS
# A media file's name: not hidden, and its suffix (from its last dot, as PurePath.suffix) a media extension.
_MEDIA_NAME = r"(^|/)[^./][^/]*\.(" + "|".join(e[1:] for e in sorted(MEDIA_EXTENSIONS)) + ")$"
SKIPPED_KINDS = ("not_media", "outside_class_folder")  # files found under a folder but left out
SPLITS = ("s1_train", "s1_val_seen", "s1_val_unseen", "s2_test_seen", "s2_test_unseen")
SPLIT_FOLDERS = {s: f"stage_{s[1]}_{s[3:]}" for s in SPLITS}  # s1_train -> stage_1_train (split file stem)
LOADER_SPLITS = {
    "train": ("s1_train",),
    "val": ("s1_val_seen", "s1_val_unseen"),
    "train_val": ("s1_train", "s1_val_seen", "s1_val_unseen"),
    "test": ("s2_test_seen", "s2_test_unseen"),
}
AVGZSL_DATASETS = ("UCF", "ActivityNet", "VGGSound")
AVGZSL_FEATURES = ("main", "cls")
_METADATA_KEY = b"avzsl_manifest"
_FORMAT_VERSION = 1


class ManifestError(UserError, ValueError):
    """A manifest that cannot be built or read; the message names the file or ids and the fix."""


@dataclass(frozen=True)
class ManifestProblem:
    """Something a user must know about a manifest: ``kind`` is a short tag, ``message`` the details."""

    kind: str  # missing_file | no_path | ambiguous_file | outside_class_folder | not_media | excluded_class
    #          | split_mismatch
    video_id: str
    message: str
    severity: str = "error"  # "warning": a file left out on purpose; "info": facts of the protocol


class VideoEntry(NamedTuple):
    video_id: str
    path: str
    label: str | None
    split: str | None


class VideoManifest:
    """A validated table of videos; ``table`` is a pandas DataFrame with at least :data:`REQUIRED_COLUMNS`."""

    def __init__(
        self,
        table: pd.DataFrame,
        problems: Sequence[ManifestProblem] = (),
        info: dict | None = None,
        source: str = "<manifest>",
    ):
        missing = [c for c in REQUIRED_COLUMNS if c not in table.columns]
        if missing:
            raise ManifestError(
                f"{source}: missing column(s) {missing}; a manifest needs {list(REQUIRED_COLUMNS)}"
            )
        table = table.reset_index(drop=True).copy()
        for column in REQUIRED_COLUMNS:
            table[column] = table[column].astype("string")
        _check_ids(table, source)
        self.table = table[[*REQUIRED_COLUMNS, *(c for c in table.columns if c not in REQUIRED_COLUMNS)]]
        self.problems = list(problems)
        self.info = dict(info or {})

    def __len__(self) -> int:
        return len(self.table)

    def __repr__(self) -> str:
        return f"VideoManifest({len(self)} videos, {self.table['label'].nunique()} labels, {len(self.problems)} problems)"

    def entries(self) -> list[VideoEntry]:
        """Rows as tuples, with missing labels/splits as None."""
        cols = [self.table[c].astype(object).where(self.table[c].notna(), None) for c in REQUIRED_COLUMNS]
        return [VideoEntry(*row) for row in zip(*cols, strict=True)]

    @property
    def video_ids(self) -> list[str]:
        return self.table["video_id"].tolist()

    def video_id_array(self) -> pa.Array:
        """The video ids as one arrow string array (joins with a store's index without a Python string
        per video)."""
        ids = pa.array(self.table["video_id"], type=pa.string())
        return ids.combine_chunks() if isinstance(ids, pa.ChunkedArray) else ids

    def path_array(self) -> pa.Array:
        """Each video's file path as one arrow string array (null where the manifest has none)."""
        paths = pa.array(self.table["path"], type=pa.string())
        return paths.combine_chunks() if isinstance(paths, pa.ChunkedArray) else paths

    def select(self, splits: str | Iterable[str]) -> VideoManifest:
        """The videos of one split or several (e.g. ``LOADER_SPLITS['val']``)."""
        wanted = [splits] if isinstance(splits, str) else list(splits)
        mask = self.table["split"].isin(wanted).fillna(False).astype(bool)
        ids = set(self.table.loc[mask, "video_id"])
        problems = [p for p in self.problems if p.video_id in ids or not p.video_id]
        return VideoManifest(self.table[mask], problems, self.info)

    def check_files(self) -> list[ManifestProblem]:
        """A problem for every row whose file is absent now (or that has no path at all)."""
        problems = []
        for video_id, path in zip(self.table["video_id"], self.table["path"], strict=True):
            if pd.isna(path) or not path:
                problems.append(
                    ManifestProblem("no_path", video_id, f"{video_id}: no file path in the manifest")
                )
            elif not Path(path).is_file():
                problems.append(
                    ManifestProblem("missing_file", video_id, f"{video_id}: file not found: {path}")
                )
        return problems

    def summary(self) -> pd.DataFrame:
        """Classes and videos per split (the shape of the docs/benchmark.md table)."""
        split = self.table["split"].fillna("<none>")
        grouped = self.table.assign(split=split).groupby("split", sort=False)
        out = grouped.agg(classes=("label", "nunique"), videos=("video_id", "size")).reset_index()
        order = {s: i for i, s in enumerate(SPLITS)}
        return out.sort_values("split", key=lambda s: s.map(lambda v: order.get(v, len(order)))).reset_index(
            drop=True
        )

    # ---- parquet -------------------------------------------------------------------------------------
    def to_parquet(self, path: str | Path) -> Path:
        """Write atomically; paths inside the file's folder are stored relative to it (relocatable)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        base = Path(os.path.abspath(path.parent))
        table = self.table.copy()
        relative = relative_paths(self.path_array(), base)
        table["path"] = pd.array(relative, dtype=pd.StringDtype("pyarrow"))
        meta = {
            "version": _FORMAT_VERSION,
            "paths_relative_to_file": True,
            "info": self.info,
            "problems": [asdict(p) for p in self.problems],
        }
        arrow = pa.Table.from_pandas(table, preserve_index=False)
        arrow = arrow.replace_schema_metadata(
            {**(arrow.schema.metadata or {}), _METADATA_KEY: json.dumps(meta)}
        )
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
        try:
            pq.write_table(arrow, tmp)
            tmp.replace(path)
        finally:
            tmp.unlink(missing_ok=True)
        return path

    @classmethod
    def read_parquet(cls, path: str | Path) -> VideoManifest:
        path = Path(path)
        if not path.is_file():
            raise ManifestError(f"{path}: manifest not found; build one with `avzsl manifest build`")
        try:
            arrow = pq.read_table(path)
        except (pa.ArrowInvalid, OSError) as err:
            raise ManifestError(f"{path}: not a readable parquet manifest ({err})") from None
        raw = (arrow.schema.metadata or {}).get(_METADATA_KEY)
        meta = json.loads(raw) if raw else {}
        if meta.get("paths_relative_to_file") and "path" in arrow.column_names:
            base = Path(os.path.abspath(path.parent))
            paths = absolute_paths(arrow.column("path").combine_chunks().cast(pa.string()), base)
            arrow = arrow.set_column(arrow.column_names.index("path"), "path", paths)
        table = arrow.to_pandas(types_mapper={pa.string(): pd.StringDtype("pyarrow")}.get)
        problems = [ManifestProblem(**p) for p in meta.get("problems", [])]
        return cls(table, problems, meta.get("info"), source=str(path))

    # ---- builders ------------------------------------------------------------------------------------
    @classmethod
    def from_folder(cls, root: str | Path, split: str | None = None) -> VideoManifest:
        """One sub-folder per class (``root/<label>/**/<media>``); video_id = ``<label>/<name>`` w/o extension.

        Every other file is reported in ``problems``: outside a class folder, or not a media file.
        """
        root = _existing_dir(root)
        media, problems = _scan(root)
        prefix = _prefix(root)
        video_ids = pc.replace_substring_regex(media, r"\.[^./]+$", "")  # a media file's name has a suffix
        inside = pc.match_substring(media, "/").to_numpy(zero_copy_only=False)
        outside = pa.array(~inside)
        for relative, video_id in zip(
            media.filter(outside).to_pylist(), video_ids.filter(outside).to_pylist(), strict=True
        ):
            message = f"{prefix}{relative}: not inside a class sub-folder of {root}; move it into root/<class>/ to include it"
            problems.append(ManifestProblem("outside_class_folder", video_id, message))
        media, video_ids = media.filter(pa.array(inside)), video_ids.filter(pa.array(inside))
        if not len(media):
            raise ManifestError(
                f"{root}: no media files found in class sub-folders (extensions {sorted(MEDIA_EXTENSIONS)})"
            )
        table = pa.table(
            {
                "video_id": video_ids,
                "path": pc.binary_join_element_wise(prefix, media, ""),
                "label": pc.list_element(pc.split_pattern(media, "/", max_splits=1), 0),
                "split": pa.nulls(len(media), pa.string()) if split is None else pa.repeat(split, len(media)),
            }
        )
        frame = table.to_pandas(types_mapper={pa.string(): pd.StringDtype("pyarrow")}.get)
        return cls(frame, problems, {"builder": "folder"}, source=str(root))

    @classmethod
    def from_csv(cls, path: str | Path, root: str | Path | None = None) -> VideoManifest:
        """Columns ``path``, ``label`` and optionally ``split``/``video_id`` plus any extras.

        Relative paths resolve against ``root`` (default: the CSV's folder); video_id defaults to the
        path relative to that root without extension. Missing files are kept and listed in ``problems``.
        """
        path = Path(path)
        if not path.is_file():
            raise ManifestError(f"{path}: CSV file not found")
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
        for column in ("path", "label"):
            if column not in table.columns:
                raise ManifestError(
                    f"{path}: missing column {column!r} (found {list(table.columns)}); "
                    "a video CSV needs columns path,label and optionally split,video_id"
                )
        base = Path(root) if root is not None else path.parent
        files = [Path(p) if Path(p).is_absolute() else base / p for p in table["path"]]
        if "video_id" not in table.columns:
            table["video_id"] = [_id_for(f, base) for f in files]
        table["path"] = [str(f) for f in files]
        if "split" not in table.columns:
            table["split"] = None
        table = table.replace({"label": {"": None}, "split": {"": None}})
        manifest = cls(table, info={"builder": "csv"}, source=str(path))
        manifest.problems = manifest.check_files()
        return manifest

    @classmethod
    def from_paths(cls, paths: Iterable[str | Path], root: str | Path | None = None) -> VideoManifest:
        """Unlabelled videos for extraction-only jobs; ids are paths relative to ``root`` (default: common folder)."""
        files = [Path(p) for p in paths]
        if not files:
            raise ManifestError("no video paths given")
        base = (
            Path(root) if root is not None else Path(os.path.commonpath([f.absolute().parent for f in files]))
        )
        rows = [{"video_id": _id_for(f, base), "path": str(f), "label": None, "split": None} for f in files]
        manifest = cls(pd.DataFrame(rows), info={"builder": "paths"}, source="paths")
        manifest.problems = manifest.check_files()
        return manifest

    @classmethod
    def from_avgzsl(
        cls,
        root: str | Path,
        dataset: str = "UCF",
        features: str = "main",
        video_root: str | Path | None = None,
    ) -> VideoManifest:
        """The videos of a real AV-GZSL benchmark split (docs/benchmark.md), one row per video.

        ``root`` may be the benchmark root (holding UCF/ActivityNet/VGGSound), a dataset folder, its
        class-split folder, or the split folder itself. Rows of each split are kept only if their class
        is in that split's .txt list (this drops the cls test-unseen classes, reported in ``problems``).
        With ``video_root``, files are found by video id (any video extension, any depth).
        """
        if dataset not in AVGZSL_DATASETS:
            raise ManifestError(f"unknown AV-GZSL dataset {dataset!r}; choose one of {list(AVGZSL_DATASETS)}")
        if features not in AVGZSL_FEATURES:
            raise ManifestError(
                f"unknown feature setting {features!r}; choose one of {list(AVGZSL_FEATURES)}"
            )
        split_dir = _find_split_dir(Path(root), dataset, features)
        parts, problems = [], []
        for split, stem in SPLIT_FOLDERS.items():
            table, dropped = _read_split(split_dir, stem)
            problems.extend(dropped)
            parts.append(table.assign(split=split))
        table = pd.concat(parts, ignore_index=True)
        problems.extend(_check_stage2_train(split_dir, table))
        table = _benchmark_columns(table, dataset)
        if video_root is not None:
            found, ambiguous = _index_videos(_existing_dir(video_root))
            problems.extend(ambiguous)
            table["path"] = table["video_id"].map(lambda v: str(found[v]) if v in found else None)
            problems.extend(
                ManifestProblem("missing_file", v, f"{v}: no video file named {v}.<ext> under {video_root}")
                for v in table.loc[table["path"].isna(), "video_id"]
            )
        else:
            table["path"] = None
        info = {"builder": "avgzsl", "dataset": dataset, "features": features}
        return cls(table, problems, info, source=str(split_dir))


# ---- GZSL splits for datasets without one ------------------------------------------------------------
def assign_gzsl_splits(
    labels: Sequence[str],
    roles: dict[str, str],
    *,
    val_seen_fraction: float = 0.1,
    test_seen_fraction: float = 0.15,
    val_unseen_test_fraction: float = 0.15,
    seed: int = 0,
) -> list[str]:
    """Split videos into the five AV-GZSL sets from each class's role, mirroring docs/benchmark.md.

    ``roles`` maps class -> "seen" (stage-1 training class), "val_unseen" (unseen in stage 1, trained on
    in stage 2) or "test_unseen". Seen classes' videos go to s1_train / s1_val_seen / s2_test_seen;
    val-unseen classes' to s1_val_unseen / s2_test_seen (so stage-2 test-seen covers every stage-2
    training class); test-unseen classes' all to s2_test_unseen. Deterministic for a seed.
    """
    rng = np.random.default_rng(seed)
    out: list[str] = [""] * len(labels)
    by_class: dict[str, list[int]] = {}
    for index, label in enumerate(labels):
        by_class.setdefault(label, []).append(index)
    for label in sorted(by_class):
        role = roles.get(label)
        idx = [by_class[label][i] for i in rng.permutation(len(by_class[label]))]
        if role == "seen":
            n_test = _share(len(idx), test_seen_fraction)
            n_val = _share(len(idx) - n_test, val_seen_fraction)
            names = ["s2_test_seen"] * n_test + ["s1_val_seen"] * n_val
            names += ["s1_train"] * (len(idx) - n_test - n_val)
        elif role == "val_unseen":
            n_test = _share(len(idx), val_unseen_test_fraction)
            names = ["s2_test_seen"] * n_test + ["s1_val_unseen"] * (len(idx) - n_test)
        elif role == "test_unseen":
            names = ["s2_test_unseen"] * len(idx)
        else:
            raise ManifestError(f"class {label!r}: role {role!r} is not one of seen, val_unseen, test_unseen")
        for i, name in zip(idx, names, strict=True):
            out[i] = name
    return out


def _share(n: int, fraction: float) -> int:
    """At least one video in a held-out set when the class has two or more, never all of them."""
    if n < 2 or fraction <= 0:
        return 0
    return min(n - 1, max(1, round(n * fraction)))


# ---- helpers -----------------------------------------------------------------------------------------
def _check_ids(table: pd.DataFrame, source: str) -> None:
    ids = table["video_id"]
    as_arrow = pa.array(ids, type=pa.string())
    empty = pc.any(pc.equal(as_arrow, "")).as_py()
    if as_arrow.null_count == 0 and not empty and pc.count_distinct(as_arrow).as_py() == len(ids):
        return  # every id present, non-empty and unique (an arrow hash count: a million ids in 0.1 s)
    if ids.isna().any() or (ids == "").any():
        rows = [int(i) for i in np.flatnonzero((ids.isna() | (ids == "")).to_numpy())][:5]
        raise ManifestError(f"{source}: empty video_id in row(s) {rows}; every video needs a unique id")
    dup = ids[ids.duplicated(keep=False)]
    if len(dup):
        groups = table.loc[dup.index].groupby("video_id")["path"].apply(lambda s: [str(p) for p in s])
        shown = "; ".join(f"{vid}: {paths}" for vid, paths in list(groups.items())[:10])
        raise ManifestError(
            f"{source}: {dup.nunique()} duplicate video_id(s) ({shown}); ids must be unique: "
            "rename the files or give an explicit video_id column"
        )


def _id_for(file: Path, base: Path) -> str:
    try:
        rel = file.absolute().relative_to(base.absolute())
    except ValueError:
        raise ManifestError(f"{file}: not under {base}; pass a root that contains every video") from None
    return rel.with_suffix("").as_posix()


def _existing_dir(root: str | Path) -> Path:
    root = Path(root)
    if not root.is_dir():
        raise ManifestError(f"{root}: folder not found")
    return root


def scan_folder(root: Path) -> tuple[list[Path], list[ManifestProblem]]:
    """The media files under ``root`` (audio-only included), and a ``not_media`` problem for every other file."""
    media, skipped = _scan(root)
    prefix = _prefix(root)
    return [Path(prefix + relative) for relative in media.to_pylist()], skipped


def _scan(root: Path) -> tuple[pa.Array, list[ManifestProblem]]:
    """The paths under ``root`` ("/"-separated) of its media files in path order, and a problem for each
    other file: what ``sorted(root.rglob("*"))`` + ``is_file()`` find (symlinked files included, symlinked
    folders not entered), with one ``os.scandir`` per folder and no Path per file, so a million files
    take a couple of seconds."""
    files: list[str] = []

    def walk(folder: str, under: str) -> None:
        try:
            with os.scandir(folder) as scan:
                entries = sorted(scan, key=lambda entry: entry.name)
        except PermissionError:
            return
        for entry in entries:  # children in name order: a depth-first walk gives the order of path parts
            if entry.is_file():
                files.append(under + entry.name)
            elif entry.is_dir() and not entry.is_symlink():
                walk(entry.path, f"{under}{entry.name}/")

    walk(str(root), "")
    found = pa.array(files, pa.string())
    files.clear()
    media = pc.match_substring_regex(found, _MEDIA_NAME, ignore_case=True).to_numpy(zero_copy_only=False)
    prefix = _prefix(root)
    skipped = []
    for relative in found.filter(pa.array(~media)).to_pylist():
        name = relative.rpartition("/")[2]
        why = "a hidden file" if name.startswith(".") else f"extension {_suffix(name) or '(none)'!r}"
        message = f"{prefix}{relative}: skipped, not a media file ({why}; media: {', '.join(sorted(MEDIA_EXTENSIONS))})"
        skipped.append(ManifestProblem("not_media", relative, message, "warning"))
    return found.filter(pa.array(media)), skipped


def _prefix(root: Path) -> str:
    """What joins ``root`` to a path under it as pathlib does (nothing for ".")."""
    top = str(root)
    return "" if top == "." else top if top.endswith("/") else top + "/"


def _suffix(name: str) -> str:
    """The file name's extension as ``PurePath.suffix`` gives it ('' for ``.bashrc`` or ``name.``)."""
    dot = name.rfind(".")
    return name[dot:] if 0 < dot < len(name) - 1 else ""


def _video_files(root: Path) -> list[Path]:
    return sorted(
        p
        for p in root.rglob("*")
        if p.suffix.lower() in VIDEO_EXTENSIONS and p.is_file() and not p.name.startswith(".")
    )


def _relative_to(path: str, base: Path) -> str:
    """Relative to ``base`` when inside it, otherwise absolute (symlinks are kept, not followed)."""
    absolute = Path(os.path.abspath(path))
    try:
        return absolute.relative_to(base).as_posix()
    except ValueError:
        return str(absolute)


def _absolute_from(path: str, base: Path) -> str:
    return path if not path or Path(path).is_absolute() else str(base / path)


# A path pathlib would rewrite when joining or normalising it: an empty, "." or ".." component.
_UNCLEAN_PATH = r"//|/$|(^|/)\.\.?(/|$)"


def relative_paths(paths: pa.Array, base: Path) -> pa.Array:
    """:func:`_relative_to` of every path (``base`` absolute): done on the text where that is what pathlib
    gives (clean paths), by :func:`_relative_to` for the others, so a million paths take a fraction of a
    second."""
    absolute = pc.starts_with(paths, "/")
    clean = pc.and_(pc.invert(pc.match_substring_regex(paths, _UNCLEAN_PATH)), pc.not_equal(paths, ""))
    clean = pc.and_(clean, pc.invert(pc.starts_with(paths, "//")))
    full = pc.if_else(absolute, paths, pc.binary_join_element_wise(_prefix(Path(os.getcwd())), paths, ""))
    clean = pc.and_(clean, pc.not_equal(full, str(base)))  # the folder itself: pathlib says "."
    inside = pc.starts_with(full, _prefix(base))
    text = pc.if_else(inside, pc.replace_substring(full, _prefix(base), "", max_replacements=1), full)
    return _fix_rows(paths, text, clean, lambda path: _relative_to(path, base))


def absolute_paths(paths: pa.Array, base: Path) -> pa.Array:
    """:func:`_absolute_from` of every path (``base`` absolute), on the text where that is what pathlib
    gives (clean relative paths), by :func:`_absolute_from` for the others."""
    relative = pc.and_(pc.invert(pc.starts_with(paths, "/")), pc.not_equal(paths, ""))
    text = pc.if_else(relative, pc.binary_join_element_wise(_prefix(base), paths, ""), paths)
    plain = pc.or_(pc.invert(relative), pc.invert(pc.match_substring_regex(paths, _UNCLEAN_PATH)))
    return _fix_rows(paths, text, plain, lambda path: _absolute_from(path, base))


def _fix_rows(paths: pa.Array, text: pa.Array, plain: pa.Array, reference) -> pa.Array:
    """``text`` where ``plain`` holds (or the path is null), ``reference(path)`` elsewhere."""
    odd = np.flatnonzero(~pc.fill_null(plain, True).to_numpy(zero_copy_only=False))
    if not len(odd):
        return text
    values = text.to_pylist()
    for i, path in zip(odd.tolist(), paths.take(pa.array(odd)).to_pylist(), strict=True):
        values[i] = reference(path)
    return pa.array(values, pa.string())


def _find_split_dir(root: Path, dataset: str, features: str) -> Path:
    split = f"{features}_split"
    candidates = [root / dataset / "class-split" / split, root / "class-split" / split, root / split, root]
    for candidate in candidates:
        if (candidate / "stage_1_train.csv").is_file():
            return candidate
    tried = ", ".join(str(c) for c in candidates)
    raise ManifestError(
        f"no AV-GZSL split files for {dataset}/{features} (looked for stage_1_train.csv in: {tried}); "
        "pass the avgzsl_benchmark_datasets root or a class-split folder"
    )


def _read_split(split_dir: Path, stem: str) -> tuple[pd.DataFrame, list[ManifestProblem]]:
    csv, txt = split_dir / f"{stem}.csv", split_dir / f"{stem}.txt"
    for f in (csv, txt):
        if not f.is_file():
            raise ManifestError(
                f"{f}: split file missing; the AV-GZSL split folder needs .csv and .txt per split"
            )
    table = pd.read_csv(csv, dtype=str, keep_default_na=False)
    for column in ("label", "label_code"):
        if column not in table.columns:
            raise ManifestError(f"{csv}: missing column {column!r} (found {list(table.columns)})")
    classes = {line.strip().casefold() for line in txt.read_text().splitlines() if line.strip()}
    keep = table["label"].str.casefold().isin(classes)
    problems = []
    for label, count in table.loc[~keep, "label"].value_counts(sort=False).items():
        problems.append(
            ManifestProblem(
                "excluded_class",
                "",
                f"{csv.name}: class {label!r} ({count} videos) is not in {txt.name}; left out as the protocol requires",
                severity="info",
            )
        )
    return table[keep], problems


def _check_stage2_train(split_dir: Path, table: pd.DataFrame) -> list[ManifestProblem]:
    """stage_2_train must be the union of the three stage-1 sets (docs/benchmark.md); report any difference."""
    csv = split_dir / "stage_2_train.csv"
    if not csv.is_file():
        return []
    # python sets: pandas' isin on arrow-backed strings is orders of magnitude slower here
    stage2 = set(
        pd.read_csv(csv, dtype=str, keep_default_na=False, usecols=["filename"])["filename"].to_numpy(object)
    )
    stage1 = set(table.loc[table["split"].isin(LOADER_SPLITS["train_val"]), "filename"].to_numpy(object))
    extra, missing = len(stage2 - stage1), len(stage1 - stage2)
    if extra == 0 and missing == 0:
        return []
    message = (
        f"{csv}: differs from stage-1 train+val ({extra} extra, {missing} missing); "
        "the loader uses the stage-1 files"
    )
    return [ManifestProblem("split_mismatch", "", message)]


def _benchmark_columns(table: pd.DataFrame, dataset: str) -> pd.DataFrame:
    """Benchmark ids and extras: UCF v_<Class>_gXX_cYY, ActivityNet <yt>_<k>, VGGSound <yt>_<start:06d>."""
    out = pd.DataFrame({"video_id": table["filename"], "label": table["label"], "split": table["split"]})
    out["class_id"] = table["label_code"].astype(int).to_numpy()
    out["dataset"] = dataset
    if dataset == "ActivityNet":
        out["youtube_id"] = table["filename"].str.rsplit("_", n=1).str[0]
    elif dataset == "VGGSound":
        out["youtube_id"] = table["youtube_id"]
        out["start_seconds"] = table["start_seconds"].astype(int).to_numpy()
        out["category"] = table["category"]
        expected = out["youtube_id"] + "_" + table["start_seconds"].str.zfill(6)
        bad = out.loc[expected != out["video_id"], "video_id"].tolist()
        if bad:
            raise ManifestError(f"VGGSound rows whose filename is not <youtube_id>_<start:06d>: {bad[:5]}")
    return out


def _index_videos(video_root: Path) -> tuple[dict[str, Path], list[ManifestProblem]]:
    """Map file stem -> path for every video under ``video_root`` (benchmark ids are file stems)."""
    found: dict[str, Path] = {}
    problems = []
    for file in _video_files(video_root):
        if file.stem in found:
            message = f"{file.stem}: several files ({found[file.stem]}, {file}); using the first"
            problems.append(ManifestProblem("ambiguous_file", file.stem, message))
            continue
        found[file.stem] = file
    return found, problems
