#!/usr/bin/env python3
"""End-to-end benchmark: the shipped guest programs at benchmark size under dbtlab's
accelerators and its peers, measured in the same run.

    python benchmarks/run.py [--reps 3] [--programs sha256,qsort] [--engines ...]
                             [--steady] [--json results.json] [--plot ratios.png]

Engines:

* ``llvm``       dbtlab as users run it: the default tiers (stencils first, the LLVM tier
  for what they cannot serve, hot loops optimised as regions in a worker process), a cold
  translation cache (empty for every run);
* ``llvm-warm``  the same with a warm cache (filled by a discarded first run);
* ``stencil``    the stencil tier only (``--tiers stencil``), cold;
* ``llvm-t1``    the LLVM tier only (``--tiers llvm``: the first tier before stencils), cold;
* ``unicorn``, ``interp``  dbtlab's other accelerators;
* ``qemu``       Debian's qemu-riscv64, when installed;
* ``native``     the same C source built for the host with gcc -O2.

dbtlab runs as a user runs it (a new process from start to exit). Every run's stdout is
checked against the first engine's. ``--steady`` also runs every engine at half the size and
reports the steady-state time per unit of work (the difference between the two sizes), which
takes start-up and translation out, as guest MIPS (the guest instructions of the second half
of the work over its time; peers without an instruction count are quoted in the guest
instructions the same work takes). Reports medians, ratios to qemu, unicorn and native with
geometric means, and the llvm accelerator's translation statistics (blocks, guest
instructions, µs per block, exits to Python per second, compile time per tier, regions
formed). Machines are shared and
noisy: quote medians and ratios, not absolute times.
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
DBTLAB_ENGINES = {"llvm": ["--accel", "llvm"],
                  "llvm-warm": ["--accel", "llvm"],
                  "stencil": ["--accel", "llvm", "--tiers", "stencil"],
                  "llvm-t1": ["--accel", "llvm", "--tiers", "llvm"],
                  "unicorn": ["--accel", "unicorn"], "interp": ["--accel", "interp"]}


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


def command(engine: str, prog: dict, args: list[str], stats_file: str,
            cache_dir: str) -> list[str] | None:
    guest = str(GUESTS / prog["binaries"]["musl"])
    if engine in DBTLAB_ENGINES:
        return [sys.executable, "-m", "dbtlab.runtime.cli", "run", *DBTLAB_ENGINES[engine],
                "--cache-dir", cache_dir, "--clear-env",
                *sum((["--env", f"{k}={v}"] for k, v in (prog.get("env") or {}).items()), []),
                "--stats-json", stats_file, guest, *args]
    if engine == "qemu":
        q = shutil.which("qemu-riscv64")
        return [q, guest, *args] if q else None
    if engine == "native":
        b = native_binary(prog)
        return [str(b), *args] if b else None
    raise ValueError(f"unknown engine {engine}")


def scaled(args: list[str], factor: float) -> list[str]:
    out = list(args)
    for i, x in enumerate(out):
        if x.isdigit():
            out[i] = str(max(1, int(int(x) * factor)))
            break
    return out


def run_once(cmd: list[str], env: dict) -> tuple[float, bytes, int, str]:
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, env=env)
    err = r.stderr.decode(errors="replace").strip().splitlines()
    return time.perf_counter() - t0, r.stdout, r.returncode, err[-1] if err else ""


def geomean(xs: list[float]) -> float:
    return math.exp(sum(math.log(x) for x in xs) / len(xs)) if xs else float("nan")


def measure(engine: str, prog: dict, args: list[str], reps: int, env: dict, tmp: str
            ) -> dict | None:
    """Median wall time of ``reps`` runs (plus the outputs and dbtlab's statistics)."""
    stats_file = os.path.join(tmp, f"{engine}.json")
    cache = os.path.join(tmp, f"cache-{engine}")
    cmd = command(engine, prog, args, stats_file, cache)
    if cmd is None:
        return None
    if engine == "llvm-warm":
        run_once(cmd, env)                       # fills the cache
    times, outs, rcs, errs, stats = [], [], [], [], None
    for _ in range(reps):
        if engine != "llvm-warm":
            shutil.rmtree(cache, ignore_errors=True)     # cold: an empty cache every run
        t, out, rc, err = run_once(cmd, env)
        times.append(t)
        errs.append(err)
        outs.append(out)
        rcs.append(rc)
        if os.path.exists(stats_file):
            with open(stats_file) as f:
                stats = json.load(f)
    return {"times": times, "median": statistics.median(times), "outputs": outs,
            "returncodes": rcs, "stderr_tails": errs, "stats": stats}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--programs", default=",".join(DEFAULT_PROGRAMS))
    ap.add_argument("--engines",
                    default="llvm,llvm-warm,stencil,llvm-t1,qemu,unicorn,native")
    ap.add_argument("--steady", action="store_true",
                    help="also measure at half size: steady-state time per unit of work")
    ap.add_argument("--json", metavar="FILE", help="write all measurements as JSON")
    ap.add_argument("--plot", metavar="FILE", help="draw the ratios (PNG/SVG/PDF)")
    ap.add_argument("--scale", type=float, default=1.0,
                    help="multiply the first numeric argument (problem size) by this")
    a = ap.parse_args()
    progs = manifest()
    engines = a.engines.split(",")
    for e in engines:
        if e not in DBTLAB_ENGINES and e not in ("qemu", "native"):
            ap.error(f"unknown engine {e}")
    results = {"engines": engines, "reps": a.reps, "programs": {}, "steady": a.steady,
               "host": os.uname().machine, "time": time.strftime("%Y-%m-%d %H:%M:%S")}
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    # dbtlab runs as installed: with its bytecode cached (some sandboxes set this, which
    # makes every run recompile ~50 modules: ~0.1 s each time)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    for k in ("DBTLAB_REGIONS", "DBTLAB_REGION_WORKERS", "DBTLAB_DEBUG", "DBTLAB_OPT",
              "DBTLAB_ACCEL", "DBTLAB_TIERS"):
        env.pop(k, None)                 # the engines above say the configuration
    for name in a.programs.split(","):
        prog = progs[name]
        tmp = tempfile.mkdtemp(prefix="dbtlab-bench-")
        args = [x.replace("{tmpfile}", os.path.join(tmp, "f"))
                for x in scaled(prog["bench"]["args"], a.scale)]
        print(f"{name} {' '.join(args)}", flush=True)
        entry = {"args": args, "engines": {}}
        reference = None
        steady_insns = 0         # guest instructions in the second half of the work
        for eng in engines:
            m = measure(eng, prog, args, a.reps, env, tmp)
            if m is None:
                print(f"  {eng:10s} unavailable")
                continue
            want_rc = prog["exit_status"] or 0
            if reference is None and m["returncodes"][0] == want_rc:
                reference = m["outputs"][0]      # the first engine that ran to completion
            ok = all(o == reference for o in m["outputs"]) and \
                all(rc == want_rc for rc in m["returncodes"])
            row = {"times": m["times"], "median": m["median"], "output_ok": ok,
                   "stats": m["stats"]}
            extra = ""
            st = m["stats"] or {}
            if "blocks" in st:
                exits = st.get("exits", {})
                extra = (f"  {st['blocks']} blocks ({st.get('stencil_blocks', 0)} stencil), "
                         f"{st.get('median_us_per_block', 0):.0f} "
                         f"us/block, {sum(exits.values()) / m['median']:.0f} exits/s, "
                         f"{st.get('cache_hits', 0)} cached modules, "
                         f"{st.get('regions', 0)} regions; compiling "
                         f"{st.get('stencil_seconds', 0):.2f} s stencils, "
                         f"{st.get('emit_seconds', 0) + st.get('compile_seconds', 0):.2f} s "
                         f"llvm tier, {st.get('region_seconds', 0):.2f} s regions")
            if a.steady:
                half = measure(eng, prog, scaled(args, 0.5), a.reps, env, tmp)
                row["half_median"] = half["median"]
                row["steady"] = m["median"] - half["median"]
                extra += f"  steady {row['steady']:.3f} s"
                if (half["stats"] or {}).get("instret") and st.get("instret"):
                    insns = st["instret"] - half["stats"]["instret"]
                    steady_insns = steady_insns or insns
                    if row["steady"] > 0:
                        extra += f" ({insns / row['steady'] / 1e6:.0f} MIPS)"
                elif steady_insns and row["steady"] > 0:
                    extra += f" ({steady_insns / row['steady'] / 1e6:.0f} guest-equiv. MIPS)"
            entry["engines"][eng] = row
            print(f"  {eng:10s} {m['median']:7.3f} s{'' if ok else '  OUTPUT DIFFERS'}{extra}",
                  flush=True)
            for rc, err in zip(m["returncodes"], m["stderr_tails"]):
                if rc != want_rc:
                    print(f"    exit status {rc} (want {want_rc}): {err}")
                    break
        shutil.rmtree(tmp, ignore_errors=True)
        if steady_insns:
            entry["steady_insns"] = steady_insns
        e = entry["engines"]
        for mine in ("llvm", "llvm-warm", "stencil", "llvm-t1"):
            for peer in ("qemu", "unicorn", "native"):
                if mine in e and peer in e:
                    entry[f"{mine}/{peer}"] = e[mine]["median"] / e[peer]["median"]
                    if a.steady and e[peer].get("steady", 0) > 0:
                        entry[f"{mine}/{peer} steady"] = e[mine]["steady"] / e[peer]["steady"]
        results["programs"][name] = entry
    print("\nratios of median wall time (< 1: dbtlab is faster)")
    summary = {}
    keys = sorted({k for p in results["programs"].values() for k in p if "/" in k})
    for k in keys:
        rs = {n: p[k] for n, p in results["programs"].items() if k in p and p[k] > 0}
        if rs:
            summary[k] = geomean(list(rs.values()))
            print(f"  {k:24s} geomean {summary[k]:6.2f}   " +
                  "  ".join(f"{n} {v:.2f}" for n, v in rs.items()))
    for eng, what in (("stencil", "stencil tier (decode + copy and patch)"),
                      ("llvm-t1", "LLVM tier (decode + emission + parse + codegen)")):
        us = [p["engines"][eng]["stats"].get("median_us_per_block")
              for p in results["programs"].values()
              if eng in p["engines"] and p["engines"][eng]["stats"]]
        us = [u for u in us if u]
        if us:
            summary[f"median_us_per_block {eng}"] = statistics.median(us)
            print(f"  median translation, {what}: {statistics.median(us):.0f} us/block")
    results["summary"] = summary
    if a.json:
        with open(a.json, "w") as f:
            json.dump(results, f, indent=1)
        print(f"wrote {a.json}")
    if a.plot:
        from dbtlab.analysis import plots
        fig = plots.plot_benchmarks(results)
        fig.savefig(a.plot, dpi=120, bbox_inches="tight")
        print(f"wrote {a.plot}")
    bad = [n for n, p in results["programs"].items()
           if any(not v["output_ok"] for v in p["engines"].values())]
    if bad:
        print(f"OUTPUT MISMATCH in: {', '.join(bad)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
