"""``avzsl store info|verify|compact|export|import``: inspect, check, compact and convert feature stores."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pipeline.manifest import ManifestError, VideoManifest
from pipeline.store import FeatureStore, StoreBusy, StoreError, compact_store, verify_store
from pipeline.store.layouts import LAYOUTS, export_stores, import_layout, modality_dir, store_label
from pipeline.store.store import HEADER_FILE
from workflows.cli import UsageError
from workflows.extract.client import STORES_FILE


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("store", help="inspect, verify, export and import feature stores")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    info = actions.add_parser("info", help="header and counts by status of a store")
    info.add_argument("store", type=Path)
    info.add_argument("--json", action="store_true", help="print JSON instead of text")

    verify = actions.add_parser("verify", help="find truncated, missing, orphaned and foreign shards")
    verify.add_argument("store", type=Path)

    compact = actions.add_parser("compact", help="merge index parts, delete shards no record uses")
    compact.add_argument("store", type=Path)

    export = actions.add_parser(
        "export", help="write AV-GZSL h5/pkl layouts (audio and video together) and video_features npy files"
    )
    export.add_argument(
        "stores",
        nargs="+",
        type=Path,
        metavar="STORE",
        help="feature stores or `avzsl extract` output folders; h5/pkl need one audio and one visual store",
    )
    export.add_argument(
        "--manifest", type=Path, required=True, help="manifest parquet with labels and splits"
    )
    export.add_argument("--out", type=Path, required=True, help="output folder")
    export.add_argument(
        "--layout",
        action="append",
        choices=LAYOUTS,
        help="layouts to write (default: all; npy takes any stores)",
    )

    imp = actions.add_parser("import", help="read published AV-GZSL h5/pkl or npy features into a store")
    imp.add_argument("store", type=Path, help="the store to create (or extend, same source)")
    imp.add_argument("--from", dest="src", type=Path, required=True, help="e.g. .../cls_features/audio")
    imp.add_argument("--layout", choices=LAYOUTS, required=True)
    imp.add_argument(
        "--modality",
        choices=("audio", "video"),
        help="default: the --from folder's name (h5/pkl), the export record or the key (npy)",
    )
    imp.add_argument("--key", help="npy feature key (<video_id>_<key>.npy); inferred when unique")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        if args.action == "import":
            store = import_layout(args.src, args.store, args.layout, modality=args.modality, key=args.key)
            summary = store.summary()
            tag = " [RANDOM WEIGHTS: not real features]" if store.random_weights else ""
            print(
                f"imported {summary['videos']} {modality_dir(store)} videos into {store.path}{tag} "
                f"(manifest: {store.path}/manifest.parquet)"
            )
            return 0
        if args.action == "export":
            return _export(args)
        store = FeatureStore.open(args.store)
        if args.action == "info":
            return _info(store, args.json)
        if args.action == "verify":
            return _verify(store)
        report = compact_store(store)
        print(f"{store.path}: merged {report.parts_merged} index parts, removed {report.shards_removed} "
              f"unused shards ({report.bytes_freed / 1e6:.2f} MB)")  # fmt: skip
        return 0
    except (StoreError, StoreBusy, ManifestError) as err:
        raise UsageError(str(err)) from None


def _info(store: FeatureStore, as_json: bool) -> int:
    summary = store.summary()
    if as_json:
        print(json.dumps({"summary": summary, "header": store.header}, indent=2))
        return 0
    weights = "RANDOM WEIGHTS (not for results)" if summary["random_weights"] else "pretrained weights"
    print(f"{summary['path']}: {summary['extractor']} ({weights}), fingerprint {summary['fingerprint']}")
    print(f"  dim {summary['dim']} {summary['dtype']}, {summary['rows']} rows in {summary['shards']} shards")
    print(f"  videos {summary['videos']}: " + ", ".join(f"{k} {v}" for k, v in summary["by_status"].items()))
    for outcome, count in summary["failed_by_outcome"].items():
        print(f"    failed {outcome}: {count}")
    print(f"  {summary['bytes'] / 1e6:.2f} MB on disk; created {store.header.get('created')}")
    return 0


def _verify(store: FeatureStore) -> int:
    problems = verify_store(store)
    for problem in problems:
        print(problem)
    errors = sum(p.severity == "error" for p in problems)
    print(f"{store.path}: {errors} error(s), {len(problems) - errors} warning(s)")
    return 1 if errors else 0


def _export(args: argparse.Namespace) -> int:
    manifest = VideoManifest.read_parquet(args.manifest).table
    stores = [store for path in args.stores for store in _stores_at(path)]
    report = export_stores(stores, manifest, args.out, tuple(args.layout or LAYOUTS))
    print(f"wrote {report.files} files for {report.videos} videos under {report.out_dir}")
    if report.dropped:
        print(
            f"left out {len(report.dropped)} manifest videos that lack features in a store (failed or absent):"
        )
        for label, ids in report.missing.items():
            print(f"  {len(ids)} without {label} features, e.g. {', '.join(ids[:5])}")
    for store in stores:
        if store.random_weights:
            print(f"  {store_label(store)}: RANDOM WEIGHTS, not real features (recorded in the export)")
    return 0


def _stores_at(path: Path) -> list[FeatureStore]:
    """A store, or every store an `avzsl extract` output folder lists."""
    listing = path / STORES_FILE
    if not (path / HEADER_FILE).is_file() and listing.is_file():
        try:
            names = json.loads(listing.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise UsageError(f"{listing}: unreadable ({err}); pass the stores themselves") from None
        return [FeatureStore.open(path / name) for name in names.values()]
    return [FeatureStore.open(path)]
