"""``avzsl store info|verify|repair|compact|export|import``: inspect, check, repair, compact and convert stores.

``info``, ``verify``, ``repair`` and ``compact`` take a store or the ``--out`` folder of ``avzsl extract``
(then every store inside it). The store format and what each command guarantees: docs/store.md.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pipeline.manifest import ManifestError, VideoManifest
from pipeline.store import (
    FeatureStore,
    StoreBusy,
    StoreError,
    compact_store,
    find_stores,
    repair_store,
    verify_store,
)
from pipeline.store.layouts import LAYOUTS, export_stores, import_layout, modality_dir, store_label
from workflows.cli import UsageError

STORE_HELP = "a store, or an `avzsl extract --out` folder (every store inside)"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("store", help="inspect, verify, repair, export and import feature stores")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    info = actions.add_parser("info", help="header and counts by status of a store")
    info.add_argument("store", type=Path, help=STORE_HELP)
    info.add_argument("--json", action="store_true", help="print JSON instead of text")

    verify = actions.add_parser(
        "verify", help="find damaged, truncated, missing, orphaned and foreign shards and index parts"
    )
    verify.add_argument("store", type=Path, help=STORE_HELP)
    verify.add_argument(
        "--quick", action="store_true", help="skip re-hashing the feature data (headers, sizes, index only)"
    )

    repair = actions.add_parser(
        "repair",
        help="set damaged files aside, rebuild the index from the shards, mark lost videos as not done",
    )
    repair.add_argument("store", type=Path, help=STORE_HELP)
    repair.add_argument(
        "--quick", action="store_true", help="skip re-hashing the feature data (damaged data is then missed)"
    )

    compact = actions.add_parser("compact", help="merge index parts, delete shards no record uses")
    compact.add_argument("store", type=Path, help=STORE_HELP)

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
        stores = [FeatureStore.open(path) for path in find_stores(args.store)]
        if args.action == "info":
            return _info(stores, args.json)
        status = 0
        for store in stores:
            if args.action == "verify":
                status = max(status, _verify(store, args.quick))
            elif args.action == "repair":
                report = repair_store(store, quick=args.quick)
                for line in report.quarantined:
                    print(f"  set aside {line}")
                print(f"{store.path}: {report}")
                if report.lost:
                    print(f"  the next `avzsl extract` run redoes: {_some(report.lost)}")
            else:
                report = compact_store(store)
                print(f"{store.path}: merged {report.parts_merged} index parts, removed {report.shards_removed} "
                      f"unused shards ({report.bytes_freed / 1e6:.2f} MB)")  # fmt: skip
        return status
    except (StoreError, StoreBusy, ManifestError) as err:
        raise UsageError(str(err)) from None


def _info(stores: list[FeatureStore], as_json: bool) -> int:
    if as_json:
        body = [{"summary": s.summary(), "header": s.header} for s in stores]
        print(json.dumps(body[0] if len(body) == 1 else body, indent=2))
        return 0
    for store in stores:
        summary = store.summary()
        weights = "RANDOM WEIGHTS (not for results)" if summary["random_weights"] else "pretrained weights"
        print(f"{summary['path']}: {summary['extractor']} ({weights}), fingerprint {summary['fingerprint']}")
        print(
            f"  dim {summary['dim']} {summary['dtype']}, {summary['rows']} rows in {summary['shards']} shards"
        )
        print(
            f"  videos {summary['videos']}: " + ", ".join(f"{k} {v}" for k, v in summary["by_status"].items())
        )
        for outcome, count in summary["failed_by_outcome"].items():
            print(f"    failed {outcome}: {count}")
        for part in summary["damaged_index_parts"]:
            print(f"  DAMAGED index part (skipped; run `avzsl store repair {store.path}`): {part}")
        print(f"  {summary['bytes'] / 1e6:.2f} MB on disk; created {store.header.get('created')}")
    return 0


def _verify(store: FeatureStore, quick: bool) -> int:
    problems = verify_store(store, quick=quick)
    for problem in problems:
        print(problem)
    errors = sum(p.severity == "error" for p in problems)
    checked = "headers and index (--quick)" if quick else "checksums, headers and index"
    print(f"{store.path}: {errors} error(s), {len(problems) - errors} warning(s); checked {checked}")
    return 1 if errors else 0


def _export(args: argparse.Namespace) -> int:
    manifest = VideoManifest.read_parquet(args.manifest).table
    stores = [FeatureStore.open(path) for store_arg in args.stores for path in find_stores(store_arg)]
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


def _some(ids: list[str], shown: int = 5) -> str:
    return ", ".join(ids[:shown]) + (f" and {len(ids) - shown} more" if len(ids) > shown else "")
