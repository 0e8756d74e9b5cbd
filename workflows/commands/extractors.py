"""``avzsl extractors list [--json]``: what each registered extractor does, before any weights are loaded."""

from __future__ import annotations

import argparse
import json

from extractors.registry import list_specs
from extractors.spec import MODES, ExtractorSpec


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("extractors", help="list the feature extractors and their specs")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    show = actions.add_parser("list", help="print every extractor's spec (both modes unless --mode)")
    show.add_argument("--mode", choices=MODES, help="only this preprocessing mode")
    show.add_argument("--json", action="store_true", help="machine-readable output (one JSON list)")
    show.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    specs = list_specs(args.mode)
    if args.json:
        print(json.dumps([spec.to_dict() for spec in specs], indent=2))
        return 0
    for spec in specs:
        print(format_spec(spec))
    return 0


def format_spec(spec: ExtractorSpec) -> str:
    unit = "fps" if spec.modality == "visual" else "Hz"
    options = ", ".join(f"{k}={v}" for k, v in spec.options) or "-"
    lines = [
        f"{spec.name} [{spec.mode}] {spec.modality}: {spec.sample_rate:g} {unit}, window {spec.window:g} / hop "
        f"{spec.hop:g} {spec.window_unit}, input {tuple(spec.input_size)}, output {spec.output_dim} {spec.output_dtype}",
        f"  preprocessing: {spec.preprocessing}",
        f"  options: {options}",
        f"  weights: {', '.join(spec.weights_files)} ({len(spec.state_dict_shapes)} tensors) from {spec.weights_source}",
        f"  source: {spec.provenance}",
    ]
    lines += [f"  note: {note}" for note in spec.notes]
    return "\n".join(lines)
