"""Run every benchmark in turn (``make bench``); each writes its own section of BENCHMARKS.md."""

from __future__ import annotations

import importlib
import pkgutil
import sys
from pathlib import Path

SKIP = {"report", "run_all"}


def main() -> int:
    names = [m.name for m in pkgutil.iter_modules([str(Path(__file__).parent)]) if m.name not in SKIP]
    failed = []
    for name in sorted(names):
        print(f"== benchmarks.{name}", flush=True)
        module = importlib.import_module(f"benchmarks.{name}")
        try:
            module.main([])
        except Exception as err:  # one broken benchmark must not hide the others' numbers
            print(f"benchmarks.{name} failed: {err!r}", file=sys.stderr)
            failed.append(name)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
