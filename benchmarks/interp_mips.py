#!/usr/bin/env python3
"""Speed of the reference interpreter in guest MIPS (millions of guest instructions per
second), on the shipped guest programs at their test sizes.

    python benchmarks/interp_mips.py [--reps 3] [--programs sha256,qsort]

The interpreter is the reference, not the fast path: there is no target, but a
regression shows here first. Time is measured inside the process around Machine.run
(start-up and loading excluded); medians of --reps runs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> int:
    from dbtlab.runtime.config import RunConfig
    from dbtlab.runtime.machine import Machine

    with open(ROOT / "guests" / "manifest.json") as f:
        progs = {p["name"]: p for p in json.load(f)["programs"]}
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--programs", default="sha256,qsort,matmul,nbody,crc32,strings,atomics")
    a = ap.parse_args()
    rates = []
    print(f"{'program':10s} {'insns':>10s} {'seconds':>8s} {'MIPS':>6s}")
    for name in a.programs.split(","):
        p = progs[name]
        path = str(ROOT / "guests" / p["binaries"]["musl"])
        tmp = tempfile.mkdtemp()
        args = [x.replace("{tmpfile}", os.path.join(tmp, "f")) for x in p["test"]["args"]]
        times = []
        for _ in range(a.reps):
            with open(os.devnull, "w") as null:
                m = Machine(path, [path, *args], env=[f"{k}={v}" for k, v in
                                                      (p.get("env") or {}).items()],
                            config=RunConfig(accel="interp"), stdout=null.fileno())
                r = m.run()
                m.close()
            times.append(r.wall)
        t = statistics.median(times)
        rates.append(r.instret / t / 1e6)
        print(f"{name:10s} {r.instret:10d} {t:8.3f} {rates[-1]:6.2f}")
    print(f"median {statistics.median(rates):.2f} MIPS")
    return 0


if __name__ == "__main__":
    sys.exit(main())
