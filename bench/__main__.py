"""``make bench``: run every ``bench/bench_*.py`` (each defines ``run() -> dict``) and print one JSON object.

``python -m bench`` runs all; ``python -m bench text grounding`` runs the named ones only.
"""
from __future__ import annotations

import importlib
import json
import pkgutil
import sys
import time
from pathlib import Path


def main(names: list[str]) -> int:
    here = Path(__file__).parent
    available = sorted(m.name[len("bench_"):] for m in pkgutil.iter_modules([str(here)]) if m.name.startswith("bench_"))
    chosen = names or available
    unknown = sorted(set(chosen) - set(available))
    if unknown:
        print(f"unknown benchmark(s) {unknown}; available: {available}", file=sys.stderr)
        return 2
    results = {}
    for name in chosen:
        print(f"[bench] {name} ...", file=sys.stderr, flush=True)
        started = time.perf_counter()
        module = importlib.import_module(f"bench.bench_{name}")
        results[name] = module.run()
        results[name]["bench_wall_s"] = round(time.perf_counter() - started, 2)
    print(json.dumps(results, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
