#!/usr/bin/env python3
"""End-to-end benchmark: the shipped guest programs at benchmark size under dbtlab's
accelerators and its peers, measured in the same run.

    python benchmarks/run.py [--reps 3] [--programs sha256,qsort] [--engines llvm,qemu,...]
                             [--json results.json]

Engines: ``llvm`` and ``unicorn`` (dbtlab, whole process from start to exit, as a user
runs it), ``qemu`` (Debian's qemu-riscv64, when installed), ``native`` (the same C source
built for the host with gcc -O2). Every run's stdout is checked against the first engine's
(a benchmark that computes something else is not a benchmark). Reports medians, ratios
(llvm/qemu, llvm/unicorn, llvm/native) with their geometric means, and the llvm
accelerator's translation statistics. Machines are shared and noisy: quote medians and
ratios, not absolute times.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GUESTS = ROOT / "guests"
NATIVE_DIR = ROOT / "benchmarks" / "native"
DEFAULT_PROGRAMS = ["sha256", "qsort", "matmul", "nbody", "crc32", "strings", "alloc",
                    "atomics", "setjmp", "fileio"]


def manifest() -> dict:
    with open(GUESTS / "manifest.json") as f:
        return {p["name"]: p for p in json.load(f)["programs"]}


def native_binary(prog: dict) -> Path | None:
    """The host build of the guest's C source (built here with gcc if needed)."""
    out = NATIVE_DIR / prog["name"]
    src = GUESTS / prog["source"]
    if out.exists() and out.stat().st_mtime >= src.stat().st_mtime:
        return out
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        return None
    NATIVE_DIR.mkdir(parents=True, exist_ok=True)
    r = subprocess.run([cc, "-O2", "-ffp-contract=off", "-o", str(out), str(src), "-lm"],
                       capture_output=True, text=True)
    if r.returncode != 0:
        print(f"  (native build of {prog['name']} failed: {r.stderr.strip()[:200]})")
        return None
    return out


def command(engine: str, prog: dict, args: list[str], stats_file: str) -> list[str] | None:
    guest = str(GUESTS / prog["binaries"]["musl"])
    if engine in ("llvm", "unicorn", "interp"):
        return [sys.executable, "-m", "dbtlab.runtime.cli", "run", "--accel", engine,
                "--clear-env", *sum((["--env", f"{k}={v}"] for k, v in
                                     (prog.get("env") or {}).items()), []),
                "--stats-json", stats_file, guest, *args]
    if engine == "qemu":
        q = shutil.which("qemu-riscv64")
        return [q, guest, *args] if q else None
    if engine == "native":
        b = native_binary(prog)
        return [str(b), *args] if b else None
    raise ValueError(engine)


def run_once(cmd: list[str], env: dict) -> tuple[float, bytes, int]:
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, env=env)
    return time.perf_counter() - t0, r.stdout, r.returncode


def geomean(xs: list[float]) -> float:
    return math.exp(sum(math.log(x) for x in xs) / len(xs)) if xs else float("nan")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--programs", default=",".join(DEFAULT_PROGRAMS))
    ap.add_argument("--engines", default="llvm,qemu,unicorn,native")
    ap.add_argument("--json", metavar="FILE", help="write all measurements as JSON")
    ap.add_argument("--scale", type=float, default=1.0,
                    help="multiply the first numeric argument (problem size) by this")
    a = ap.parse_args()
    progs = manifest()
    engines = a.engines.split(",")
    results = {"engines": engines, "reps": a.reps, "programs": {},
               "host": os.uname().machine, "time": time.strftime("%Y-%m-%d %H:%M:%S")}
    env = {k: v for k, v in os.environ.items()}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    for name in a.programs.split(","):
        prog = progs[name]
        args = list(prog["bench"]["args"])
        if a.scale != 1.0:
            for i, x in enumerate(args):
                if x.isdigit():
                    args[i] = str(max(1, int(int(x) * a.scale)))
                    break
        tmp = tempfile.mkdtemp(prefix="dbtlab-bench-")
        args = [x.replace("{tmpfile}", os.path.join(tmp, "f")) for x in args]
        print(f"{name} {' '.join(args)}", flush=True)
        entry = {"args": args, "engines": {}}
        reference = None
        for eng in engines:
            stats_file = os.path.join(tmp, f"{eng}.json")
            cmd = command(eng, prog, args, stats_file)
            if cmd is None:
                print(f"  {eng:8s} unavailable")
                continue
            times, ok, stats = [], True, None
            for _ in range(a.reps):
                t, out, rc = run_once(cmd, env)
                times.append(t)
                if reference is None:
                    reference = out
                if out != reference or rc != (prog["exit_status"] or 0):
                    ok = False
                if os.path.exists(stats_file):
                    with open(stats_file) as f:
                        stats = json.load(f)
            med = statistics.median(times)
            entry["engines"][eng] = {"times": times, "median": med, "output_ok": ok,
                                     "stats": stats}
            extra = ""
            if stats and "blocks" in stats:
                exits = stats.get("exits", {})
                extra = (f"  {stats['blocks']} blocks, median "
                         f"{stats.get('median_us_per_block', 0):.0f} us/block, "
                         f"{sum(exits.values()) / med:.0f} exits/s "
                         f"({', '.join(f'{k} {v}' for k, v in sorted(exits.items()))})")
            print(f"  {eng:8s} {med:7.3f} s{'' if ok else '  OUTPUT DIFFERS'}{extra}",
                  flush=True)
        shutil.rmtree(tmp, ignore_errors=True)
        e = entry["engines"]
        if "llvm" in e:
            for peer in ("qemu", "unicorn", "native"):
                if peer in e:
                    entry[f"llvm/{peer}"] = e["llvm"]["median"] / e[peer]["median"]
        results["programs"][name] = entry
    print("\nratios (median wall time; < 1 means llvm is faster)")
    summary = {}
    for peer in ("qemu", "unicorn", "native"):
        rs = {n: p[f"llvm/{peer}"] for n, p in results["programs"].items()
              if f"llvm/{peer}" in p}
        if rs:
            summary[f"llvm/{peer}"] = geomean(list(rs.values()))
            print(f"  llvm/{peer:8s} geomean {summary[f'llvm/{peer}']:.2f}   " +
                  "  ".join(f"{n} {v:.2f}" for n, v in rs.items()))
    us = [p["engines"]["llvm"]["stats"].get("median_us_per_block")
          for p in results["programs"].values()
          if "llvm" in p["engines"] and p["engines"]["llvm"]["stats"]]
    us = [u for u in us if u]
    if us:
        summary["median_us_per_block"] = statistics.median(us)
        print(f"  median first-tier translation: {summary['median_us_per_block']:.0f} us/block")
    results["summary"] = summary
    if a.json:
        with open(a.json, "w") as f:
            json.dump(results, f, indent=1)
        print(f"wrote {a.json}")
    bad = [n for n, p in results["programs"].items()
           if any(not v["output_ok"] for v in p["engines"].values())]
    if bad:
        print(f"OUTPUT MISMATCH in: {', '.join(bad)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
