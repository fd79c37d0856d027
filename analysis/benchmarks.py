"""Results of ``benchmarks/run.py --json FILE``: load them and flatten them into rows.

Layout (see benchmarks/run.py): ``{"engines": [...], "programs": {name: {"args",
"engines": {engine: {"times", "median", "output_ok", "stats"}}, "llvm/qemu": ratio, ...}},
"summary": {"llvm/qemu": geomean, ...}}``.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any

from dbtlab.analysis.profile import ProfileError

PEERS = ("qemu", "unicorn", "native", "interp")


def load_benchmarks(source: Any) -> dict:
    """The benchmark results from a JSON file path or an already loaded dict."""
    if isinstance(source, dict):
        doc = source
        name = "<benchmarks>"
    else:
        name = os.fspath(source)
        try:
            with open(name) as f:
                doc = json.load(f)
        except OSError as e:
            raise ProfileError(f"cannot read {name}: {e.strerror or e}") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ProfileError(f"{name}: not a valid JSON file ({e})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("programs"), dict):
        raise ProfileError(f"{name}: not a benchmarks/run.py result (no 'programs')")
    return doc


def engines_of(results: dict) -> list[str]:
    """Engines in the order the run listed them, then any others that appear."""
    seen = list(results.get("engines") or [])
    for p in results["programs"].values():
        for e in p.get("engines", {}):
            if e not in seen:
                seen.append(e)
    return [e for e in seen if any(e in p.get("engines", {})
                                   for p in results["programs"].values())]


def medians(results: dict) -> dict[str, dict[str, float]]:
    """program -> engine -> median wall seconds."""
    return {name: {e: v["median"] for e, v in p.get("engines", {}).items()
                   if v.get("median") is not None}
            for name, p in results["programs"].items()}


def ratios(results: dict, base: str = "llvm") -> dict[str, dict[str, float]]:
    """peer -> program -> base/peer median ratio (< 1: ``base`` is faster)."""
    out: dict[str, dict[str, float]] = {}
    for name, m in medians(results).items():
        if base not in m:
            continue
        for peer, t in m.items():
            if peer != base and t > 0:
                out.setdefault(peer, {})[name] = m[base] / t
    return out


def geomean(xs) -> float:
    xs = [x for x in xs if x > 0]
    return math.exp(sum(math.log(x) for x in xs) / len(xs)) if xs else float("nan")
