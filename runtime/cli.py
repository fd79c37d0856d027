"""The ``dbtlab`` command line.

    dbtlab run [--accel llvm|interp|unicorn] [--strace] [-d FLAGS] PROGRAM [ARGS...]
    dbtlab disas PROGRAM [--function NAME]
    dbtlab --version

``run`` passes stdin/stdout/stderr through and exits with the guest's status; a guest
killed by a signal gets a one-line explanation on stderr, then dbtlab dies by the same
signal (the shell sees 128+N, as with qemu-riscv64).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys

import dbtlab
from dbtlab.runtime.config import ACCELS, DEBUG_FLAGS, RunConfig, parse_debug, parse_tiers
from dbtlab.runtime.errors import DbtError

EXIT_STOPPED = 0     # exit status when --max-insns stopped the guest


def _die_by_signal(sig: int) -> None:
    """Terminate this process with ``sig`` and no core dump, so the caller sees 128+sig."""
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        import resource
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    except (ImportError, ValueError, OSError):
        pass
    signal.signal(sig, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {sig})
    os.kill(os.getpid(), sig)
    os._exit(128 + sig)        # not reached unless the signal was ignored


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="dbtlab",
        description="Dynamic binary translation of RISC-V RV64GC Linux programs: run them "
                    "through an LLVM JIT, the reference interpreter or unicorn, and study "
                    "how their translated blocks behave.")
    p.add_argument("--version", action="version", version=f"dbtlab {dbtlab.__version__}")
    p.add_argument("-v", "--verbose", action="count", default=0,
                   help="log more (-v info, -vv debug)")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    r = sub.add_parser("run", help="run a static RISC-V Linux program",
                       description="Run a statically linked RV64GC Linux program. Output, "
                                   "input and exit status are the guest's.")
    add_run_options(r)
    add_snapshot_run_options(r)
    add_monitor_run_options(r)
    r.add_argument("program", metavar="PROGRAM", nargs="?",
                   help="static RISC-V ELF executable (none with --loadvm)")
    r.add_argument("args", nargs=argparse.REMAINDER, metavar="ARGS",
                   help="arguments passed to the guest")

    t = sub.add_parser("difftest", help="run a program on several engines in lockstep",
                       description="Run a program under several accelerators in lockstep "
                                   "and compare pc, registers, fcsr and the memory written "
                                   "after every step. Exit status 1 on the first divergence.")
    t.add_argument("--accels", default="llvm,unicorn",
                   help="comma-separated accelerators; the first is the reference "
                        "(default llvm,unicorn)")
    t.add_argument("--granularity", choices=("block", "insn"), default="block",
                   help="compare after every block (default) or every instruction")
    t.add_argument("--max-steps", type=int, metavar="N", help="stop after N steps")
    t.add_argument("--no-known-deviations", action="store_true",
                   help="do not excuse unicorn's known deviations from the spec")
    t.add_argument("--env", action="append", default=None, metavar="K=V",
                   help="guest environment variable (repeatable; default: empty)")
    t.add_argument("program", metavar="PROGRAM")
    t.add_argument("args", nargs=argparse.REMAINDER, metavar="ARGS")

    add_snapshot_parser(sub)
    add_analysis_parsers(sub)
    add_fuzz_parser(sub)

    c = sub.add_parser("cache", help="the persistent translation cache")
    c.add_argument("action", choices=("stats", "clear"))
    c.add_argument("--cache-dir", metavar="DIR", help="cache directory (default: "
                   "$DBTLAB_CACHE_DIR or ~/.cache/dbtlab)")

    d = sub.add_parser("disas", help="disassemble a program (objdump -d style)")
    d.add_argument("program", metavar="PROGRAM")
    d.add_argument("--function", metavar="NAME", help="only this function (symbol)")
    return p


def add_run_options(r: argparse.ArgumentParser) -> None:
    r.add_argument("--accel", choices=ACCELS, default="llvm",
                   help="how to execute guest code (default: llvm)")
    r.add_argument("--strace", action="store_true", help="print syscalls like qemu -strace")
    r.add_argument("-d", dest="debug", metavar="FLAGS", default="",
                   help="debug output, comma-separated: " + ", ".join(
                       f"{k} ({v})" for k, v in DEBUG_FLAGS.items()))
    r.add_argument("-D", dest="debug_file", metavar="FILE",
                   help="write -d output to FILE instead of stderr")
    r.add_argument("--max-insns", type=int, metavar="N",
                   help="stop after exactly N guest instructions")
    r.add_argument("--opt", type=int, default=0, choices=range(4), metavar="LEVEL",
                   help="LLVM optimisation level for translated blocks (0-3, default 0)")
    r.add_argument("--env", action="append", default=None, metavar="K=V",
                   help="guest environment variable (repeatable); default: the host's")
    r.add_argument("--clear-env", action="store_true",
                   help="start the guest with an empty environment (plus any --env)")
    r.add_argument("--virtual-time", action="store_true",
                   help="deterministic clocks derived from the instruction count")
    r.add_argument("--stats", action="store_true",
                   help="print execution and translation statistics on exit")
    r.add_argument("--cache-dir", metavar="DIR",
                   help="persistent translation cache directory (default: $DBTLAB_CACHE_DIR "
                        "or ~/.cache/dbtlab)")
    r.add_argument("--no-cache", action="store_true",
                   help="do not read or write the persistent translation cache")
    r.add_argument("--tiers", metavar="LIST", default=None,
                   help="translation tiers of --accel llvm, from stencil,llvm,region "
                        "(default all three, or $DBTLAB_TIERS); the LLVM tier still serves "
                        "blocks stencils cannot")
    r.add_argument("--regions", type=int, metavar="N", default=None,
                   help="form optimised regions from loop heads executed N times (0: off; "
                        "default 2000, or $DBTLAB_REGIONS)")
    r.add_argument("--region-workers", type=int, metavar="J", default=None,
                   help="worker processes compiling regions (0: compile in-process; "
                        "default 1, or $DBTLAB_REGION_WORKERS)")
    r.add_argument("--profile", metavar="FILE",
                   help="record a profile (block counts, transitions, translation events) "
                        "to FILE (.json or .json.gz); needs --accel llvm")
    r.add_argument("--stats-json", metavar="FILE",
                   help="write the statistics (and the run's outcome) as JSON to FILE")


def config_from_args(a: argparse.Namespace) -> RunConfig:
    try:
        debug = parse_debug(a.debug)
    except ValueError as e:
        raise DbtError(str(e)) from None
    if a.max_insns is not None and a.max_insns < 0:
        raise DbtError("--max-insns must be >= 0")
    if getattr(a, "profile", None) and a.accel != "llvm":
        raise DbtError("--profile needs --accel llvm (profiles count translated blocks)")
    cfg = RunConfig(accel=a.accel, strace=a.strace, max_insns=a.max_insns, debug=debug,
                    debug_file=a.debug_file, opt_level=a.opt,
                    time_mode="virtual" if a.virtual_time else "host",
                    profile=bool(getattr(a, "profile", None)),
                    cache=not a.no_cache, cache_dir=a.cache_dir)
    if getattr(a, "tiers", None) is not None:
        try:
            cfg.tiers = parse_tiers(a.tiers)
        except ValueError as e:
            raise DbtError(f"--tiers: {e}") from None
    if a.regions is not None:
        if a.regions < 0:
            raise DbtError("--regions must be >= 0")
        cfg.region_threshold = a.regions
    if a.region_workers is not None:
        if a.region_workers < 0:
            raise DbtError("--region-workers must be >= 0")
        cfg.region_workers = a.region_workers
    return cfg


def guest_env(a: argparse.Namespace) -> list[str]:
    env = [] if a.clear_env else [f"{k}={v}" for k, v in os.environ.items()]
    for kv in a.env or ():
        if "=" not in kv:
            raise DbtError(f"--env {kv!r}: expected K=V")
        env.append(kv)
    return env


def cmd_run(a: argparse.Namespace) -> int:
    from dbtlab.runtime.machine import Machine
    if monitor_run_requested(a):
        return cmd_run_monitored(a)
    if a.paused:
        raise DbtError("--paused needs --qmp (a monitor to say cont) or --incoming")
    if snapshot_run_requested(a):
        return cmd_run_snapshots(a)
    if a.program is None:
        raise DbtError("run: PROGRAM is required (or --loadvm TAG with --snapshot-store)")
    cfg = config_from_args(a)
    m = Machine(a.program, [a.program] + a.args, env=guest_env(a), config=cfg)
    res = None
    try:
        res = m.run()
    finally:
        if a.stats:
            print_stats(m)
        if a.stats_json:
            write_stats_json(a.stats_json, m, res)
        if a.profile:
            from dbtlab.runtime.profile import write_profile
            write_profile(m.profile(res), a.profile)
        m.close()
    return _exit_status(res)


def _exit_status(res) -> int:
    """What ``dbtlab run`` exits with: the guest's status, or its signal's death."""
    if res.stopped:
        print(f"dbtlab: {res.message}", file=sys.stderr)
        return EXIT_STOPPED
    if res.signal is not None:
        print(f"dbtlab: {res.message}", file=sys.stderr)
        _die_by_signal(res.signal)
    return res.status


def print_stats(m) -> None:
    s = m.stats()
    out = sys.stderr
    print(f"dbtlab: accel {s['accel']}: {s['instret']} instructions", file=out)
    ex = s.get("exits", {})
    if ex:
        print("  exits to Python: " + ", ".join(f"{k} {v}" for k, v in
                                              sorted(ex.items(), key=lambda kv: -kv[1])),
              file=out)
    if "blocks" in s:
        print(f"  translated {s['blocks']} blocks ({s['guest_insns']} guest insns); "
              f"{s['links']} links, {s['invalidated']} invalidated, {s['flushes']} flushes",
              file=out)
        if s.get("stencil_blocks"):
            print(f"  stencil tier: {s['stencil_blocks']} blocks in "
                  f"{1e3 * s['stencil_seconds']:.1f} ms, median "
                  f"{s.get('median_us_per_stencil_block', 0):.0f} us/block", file=out)
        llvm_blocks = s["blocks"] - s.get("stencil_blocks", 0)
        if llvm_blocks or not s.get("stencil_blocks"):
            why = ""
            refused = s.get("stencil_refused") or {}
            if refused:                  # what the stencil tier handed over, and why
                why = " (" + ", ".join(f"{n}: {r}" for r, n in sorted(
                    refused.items(), key=lambda kv: -kv[1])) + ")"
            print(f"  llvm tier: {llvm_blocks} blocks{why} in {s['modules']} modules: "
                  f"{1e3 * s['emit_seconds']:.1f} ms emitting, "
                  f"{1e3 * s['compile_seconds']:.1f} ms compiling; median "
                  f"{s.get('median_us_per_llvm_block', 0):.0f} us/block", file=out)
        if s.get("cache_hits"):
            print(f"  persistent cache: {s['cache_hits']} of {s['modules']} modules loaded "
                  f"without compiling", file=out)
        if s.get("regions") or s.get("regions_dropped"):
            print(f"  second tier: {s['regions']} regions ({s['region_blocks']} blocks, "
                  f"{s['region_insns']} guest insns) in {1e3 * s['region_seconds']:.0f} ms "
                  f"of compiling ({s.get('region_cache_hits', 0)} from the persistent "
                  f"cache), {s['regions_dropped']} dropped", file=out)


def write_stats_json(path: str, m, res) -> None:
    import json
    d = m.stats()
    if res is not None:
        d.update(status=res.status, signal=res.signal, wall=res.wall, stopped=res.stopped)
    with open(path, "w") as f:
        json.dump(d, f, indent=1, default=str)


def cmd_difftest(a: argparse.Namespace) -> int:
    from dbtlab.runtime.oracle.difftest import difftest
    engines = [e.strip() for e in a.accels.split(",") if e.strip()]
    bad = [e for e in engines if e not in ACCELS]
    if bad or len(set(engines)) < 2:
        raise DbtError(f"--accels needs two or more of {', '.join(ACCELS)} (got {a.accels})")
    env = []
    for kv in a.env or ():
        if "=" not in kv:
            raise DbtError(f"--env {kv!r}: expected K=V")
        env.append(kv)
    r = difftest(a.program, a.args, engines, granularity=a.granularity, env=env,
                 max_steps=a.max_steps, known_deviations=not a.no_known_deviations)
    print(r.summary())
    return 0 if r.ok else 1


def cmd_cache(a: argparse.Namespace) -> int:
    from dbtlab.ir.objcache import ObjectCache
    cache = ObjectCache(a.cache_dir or os.environ.get("DBTLAB_CACHE_DIR"))
    if a.action == "clear":
        n = cache.clear()
        print(f"removed {n} entries from {cache.dir}")
        return 0
    s = cache.summary()
    print(f"{s['directory']}: {s['entries']} entries, {s['bytes'] / 1e6:.1f} MB "
          f"(limit {s['max_bytes'] / 1e6:.0f} MB)")
    return 0


def cmd_disas(a: argparse.Namespace) -> int:
    from dbtlab.runtime.disas import disassemble_program
    for line in disassemble_program(a.program, a.function):
        print(line)
    return 0


def main(argv: list[str] | None = None) -> int:
    p = build_parser()
    a = p.parse_args(argv)
    logging.basicConfig(level=[logging.WARNING, logging.INFO, logging.DEBUG][min(a.verbose, 2)],
                        format="dbtlab: %(levelname)s: %(message)s")
    if a.command is None:
        p.print_help()
        return 2
    try:
        if a.command == "run":
            return cmd_run(a)
        if a.command == "disas":
            return cmd_disas(a)
        if a.command == "difftest":
            return cmd_difftest(a)
        if a.command == "cache":
            return cmd_cache(a)
        if a.command == "snapshot":
            return cmd_snapshot(a)
        if a.command == "graph":
            return cmd_graph(a)
        if a.command == "report":
            return cmd_report(a)
        if a.command == "fuzz":
            return cmd_fuzz(a)
    except DbtError as e:
        print(f"dbtlab: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 141
    p.error(f"unknown command {a.command}")
    return 2


# ---- snapshots (issue 6) -----------------------------------------------------------------
# dbtlab run --snapshot-store FILE [--savevm-at N[:TAG]]... [--savevm-every N] PROGRAM ...
# dbtlab run --snapshot-store FILE --loadvm TAG [--accel A] [--savevm-at ...]
# dbtlab snapshot list|delete|export|import|diff ...
def add_snapshot_run_options(r: argparse.ArgumentParser) -> None:
    g = r.add_argument_group("snapshots")
    g.add_argument("--snapshot-store", metavar="FILE",
                   help="the snapshot store (SQLite file) for --savevm-at/--savevm-every/"
                        "--loadvm")
    g.add_argument("--savevm-at", action="append", metavar="N[:TAG]",
                   help="save a snapshot after exactly N guest instructions (repeatable; "
                        "default tag PROGRAM-N)")
    g.add_argument("--savevm-every", type=int, metavar="N",
                   help="save a snapshot after every N guest instructions")
    g.add_argument("--loadvm", metavar="TAG",
                   help="resume snapshot TAG instead of starting a program (PROGRAM then "
                        "comes from the snapshot; output continues from there)")


def snapshot_run_requested(a: argparse.Namespace) -> bool:
    return bool(getattr(a, "snapshot_store", None) or getattr(a, "savevm_at", None)
                or getattr(a, "savevm_every", None) is not None or getattr(a, "loadvm", None))


def cmd_run_snapshots(a: argparse.Namespace) -> int:
    from dbtlab import snapshot as S
    from dbtlab.runtime.vm import vmstate as V
    from dbtlab.runtime.machine import Machine
    if not a.snapshot_store:
        raise DbtError("--savevm-at, --savevm-every and --loadvm need --snapshot-store FILE")
    points = [S.parse_save_point(p) for p in a.savevm_at or ()]
    if a.savevm_every is not None and a.savevm_every <= 0:
        raise DbtError("--savevm-every must be > 0")
    if a.loadvm:
        if a.args:
            raise DbtError("--loadvm: the program and its arguments come from the snapshot; "
                           "give no ARGS")
        for opt, given in (("--env", a.env), ("--clear-env", a.clear_env),
                           ("--virtual-time", a.virtual_time)):
            if given:
                raise DbtError(f"{opt} cannot be used with --loadvm: the environment and the "
                               "clocks are part of the snapshot")
    elif a.program is None:
        raise DbtError("run: PROGRAM is required (or --loadvm TAG)")
    cfg = config_from_args(a)
    saving = bool(points or a.savevm_every)
    # a store with nothing to save or load is not opened (nor created)
    store = S.open_store(a.snapshot_store, create=saving) if saving or a.loadvm else None
    try:
        if a.loadvm:
            m = V.instantiate(store.load(a.loadvm), config=cfg, program=a.program)
        else:
            m = Machine(a.program, [a.program] + a.args, env=guest_env(a), config=cfg)
        res = None
        try:
            res, _saved = S.run_saving(m, store, points, a.savevm_every)
        finally:
            if a.stats:
                print_stats(m)
            if a.stats_json:
                write_stats_json(a.stats_json, m, res)
            if getattr(a, "profile", None) and res is not None:
                from dbtlab.runtime.profile import write_profile
                write_profile(m.profile(res), a.profile)
            m.close()
    finally:
        if store is not None:
            store.close()
    return _exit_status(res)


def add_snapshot_parser(sub) -> None:
    s = sub.add_parser("snapshot", help="list, delete, export and import stored snapshots",
                       description="Manage a snapshot store (made by dbtlab run "
                                   "--snapshot-store FILE --savevm-at N).")
    ss = s.add_subparsers(dest="snapshot_command", metavar="ACTION")
    x = ss.add_parser("list", help="list the snapshots in a store")
    x.add_argument("store", metavar="FILE")
    x = ss.add_parser("delete", help="delete a snapshot (and pages no other one uses)")
    x.add_argument("store", metavar="FILE")
    x.add_argument("tag", metavar="TAG")
    x = ss.add_parser("export", help="write a snapshot as a plain stream file")
    x.add_argument("store", metavar="FILE")
    x.add_argument("tag", metavar="TAG")
    x.add_argument("-o", dest="output", metavar="STREAM", required=True,
                   help="the stream file to write")
    x = ss.add_parser("import", help="add a plain stream file to a store")
    x.add_argument("store", metavar="FILE")
    x.add_argument("stream", metavar="STREAM")
    x.add_argument("--tag", metavar="TAG", help="its tag (default: the file name, without "
                                                "extension)")
    x = ss.add_parser("diff", help="compare two snapshots' machine states (exit 1 if they "
                                   "differ)")
    x.add_argument("store", metavar="FILE")
    x.add_argument("tag_a", metavar="TAG1")
    x.add_argument("tag_b", metavar="TAG2")


def cmd_snapshot(a: argparse.Namespace) -> int:
    from dbtlab.runtime.vm.snapshots import SnapshotStore
    from dbtlab.runtime.vm.vmstate import printable as shown
    act = getattr(a, "snapshot_command", None)
    if act is None:
        raise DbtError("snapshot: choose list, delete, export, import or diff")
    with SnapshotStore(a.store, create=(act == "import")) as st:
        if act == "list":
            infos = st.list()
            if infos:
                w = max(3, max(len(shown(i.tag)) for i in infos))
                print(f"{'TAG':<{w}}  {'INSNS':>12}  {'SIZE':>10}  {'PAGES':>6}  {'NEW':>6}  "
                      f"{'ACCEL':<7}  {'CREATED':<19}  PROGRAM")
                for i in infos:
                    print(f"{shown(i.tag):<{w}}  {i.instret:>12}  {i.size:>10}  "
                          f"{i.pages:>6}  {i.new_pages:>6}  {shown(i.accel):<7}  "
                          f"{i.created_text:<19}  {shown(i.program_path)}")
            s = st.stats()
            print(f"{s['snapshots']} snapshot(s); {s['pages']} distinct pages, "
                  f"{s['page_bytes']} bytes compressed; file {s['file_bytes']} bytes")
        elif act == "delete":
            freed = st.delete(a.tag)
            print(f"deleted {a.tag} ({freed} pages freed)")
        elif act == "export":
            n = st.export(a.tag, a.output)
            print(f"exported {a.tag} to {shown(a.output)} ({n} bytes)")
        elif act == "import":
            info = st.import_stream(a.stream, a.tag)
            print(f"imported {info}")
        elif act == "diff":
            from dbtlab.runtime.vm.vmstate import diff
            lines = diff(st.load(a.tag_a), st.load(a.tag_b))
            for ln in lines:
                print(shown(ln))
            if lines:
                return 1
            print(f"{a.tag_a} and {a.tag_b}: identical machine state")
    return 0


# ---- the main loop: QMP monitor and live migration (issue 7) ---------------------------------
# dbtlab run --qmp unix:PATH|tcp:HOST:PORT [--paused] [--snapshot-store FILE] PROGRAM ...
# dbtlab run --incoming tcp:HOST:PORT [--accel A] [--qmp ...] [--paused]
def add_monitor_run_options(r: argparse.ArgumentParser) -> None:
    g = r.add_argument_group("monitor and migration")
    g.add_argument("--qmp", action="append", metavar="ADDR",
                   help="serve the QMP monitor on unix:PATH or tcp:HOST:PORT (repeatable); "
                        "the guest then runs in a vCPU thread under a main loop")
    g.add_argument("--incoming", metavar="URI",
                   help="instead of starting PROGRAM, receive a live migration on "
                        "tcp:HOST:PORT or unix:PATH (port 0: any free port, reported on "
                        "stderr)")
    g.add_argument("--paused", action="store_true",
                   help="with --qmp: start with the guest stopped (QMP cont starts it); "
                        "with --incoming: stay stopped after the migration")


def monitor_run_requested(a: argparse.Namespace) -> bool:
    return bool(getattr(a, "qmp", None) or getattr(a, "incoming", None))


def cmd_run_monitored(a: argparse.Namespace) -> int:
    from dbtlab.runtime.monitor import mainloop, serve
    from dbtlab.runtime.machine import Machine
    if a.savevm_at or a.savevm_every is not None:
        raise DbtError("--savevm-at/--savevm-every cannot be combined with --qmp or "
                       "--incoming: use the monitor's savevm")
    if a.incoming:
        if a.program is not None or a.args:
            raise DbtError("--incoming: the program comes with the migration stream; give "
                           "no PROGRAM")
        for opt, given in (("--loadvm", a.loadvm), ("--env", a.env),
                           ("--clear-env", a.clear_env), ("--virtual-time", a.virtual_time)):
            if given:
                raise DbtError(f"{opt} cannot be used with --incoming: the program, its "
                               "environment and its clocks come with the migration stream")
    elif a.loadvm:
        if not a.snapshot_store:
            raise DbtError("--loadvm needs --snapshot-store FILE")
        if a.args:
            raise DbtError("--loadvm: the program and its arguments come from the snapshot; "
                           "give no ARGS")
    elif a.program is None:
        raise DbtError("run: PROGRAM is required (or --incoming URI, or --loadvm TAG)")
    cfg = config_from_args(a)

    def make_machine():
        if a.loadvm:
            from dbtlab import snapshot as S
            return S.loadvm(a.snapshot_store, a.loadvm, config=cfg, program=a.program)
        return Machine(a.program, [a.program] + a.args, env=guest_env(a), config=cfg)

    opts = mainloop.Options(qmp=list(a.qmp or ()), incoming=a.incoming, paused=a.paused,
                            snapshot_store=a.snapshot_store,
                            announce=lambda msg: print(f"dbtlab: {msg}", file=sys.stderr,
                                                       flush=True))
    outcome, m = serve.run(cfg, opts, make_machine)
    if m is not None:
        try:
            if a.stats:
                print_stats(m)
            if a.stats_json:
                write_stats_json(a.stats_json, m, outcome.result)
            if a.profile:
                from dbtlab.runtime.profile import write_profile
                write_profile(m.profile(outcome.result), a.profile)
        finally:
            m.close()
    if outcome.message:
        print(f"dbtlab: {outcome.message}", file=sys.stderr)
    if outcome.signal is not None:
        _die_by_signal(outcome.signal)
    return outcome.exit_code


# ---- analysis of profiles (issue 5) ----------------------------------------------------------
# dbtlab graph PROFILE -o FILE.{png,svg,pdf,graphml,dot} [--top N]
# dbtlab report PROFILE [-o DIR] [--top N] [--format png|svg|pdf] [--benchmarks JSON]
GRAPH_IMAGES = ("png", "svg", "pdf")
GRAPH_EXPORTS = ("graphml", "dot", "gv")


def add_analysis_parsers(sub) -> None:
    g = sub.add_parser("graph", help="draw or export the block graph of a profile",
                       description="Draw the hottest blocks of a profile (made by dbtlab run "
                                   "--profile) and the transitions between them (.png, .svg, "
                                   ".pdf), or export the block graph (.graphml, .dot).")
    g.add_argument("profile", metavar="PROFILE", help="profile file (.json or .json.gz)")
    g.add_argument("-o", dest="output", metavar="FILE", required=True,
                   help="output file; its extension chooses the format: "
                        + ", ".join(GRAPH_IMAGES + GRAPH_EXPORTS))
    g.add_argument("--top", type=int, metavar="N",
                   help="only the N hottest blocks (default: 25 in a drawing, every "
                        "translated block in an export)")
    g.add_argument("--min-count", type=int, default=0, metavar="N",
                   help="exports: drop blocks executed fewer than N times")
    r = sub.add_parser("report", help="summarise a profile, with figures",
                       description="Print a text summary of a profile (run, translation, "
                                   "hottest blocks, functions, loops, trace candidates, "
                                   "exits) and, with -o, write its figures into a directory.")
    r.add_argument("profile", metavar="PROFILE", help="profile file (.json or .json.gz)")
    r.add_argument("-o", dest="outdir", metavar="DIR", help="write the figures into DIR")
    r.add_argument("--top", type=int, default=10, metavar="N",
                   help="rows per table (default 10); the hot subgraph figure shows 25 blocks")
    r.add_argument("--format", choices=GRAPH_IMAGES, default="png",
                   help="figure format (default png)")
    r.add_argument("--benchmarks", metavar="JSON",
                   help="also chart a benchmarks/run.py --json result across accelerators")


def cmd_graph(a: argparse.Namespace) -> int:
    from dbtlab.analysis import ProfileError, block_graph, export, hot_subgraph, load_file
    ext = a.output.lower().rsplit(".", 1)[-1] if "." in a.output else ""
    if ext not in GRAPH_IMAGES + GRAPH_EXPORTS:
        raise DbtError(f"graph: cannot tell the format of {a.output!r} from its extension "
                       f"(use {', '.join('.' + e for e in GRAPH_IMAGES + GRAPH_EXPORTS)})")
    if a.top is not None and a.top < 1:
        raise DbtError("--top must be >= 1")
    try:
        p = load_file(a.profile)
        g = block_graph(p, min_count=a.min_count)
        if ext in GRAPH_IMAGES:
            from dbtlab.analysis import plots
            plots.save(plots.plot_hot_subgraph(g, a.top or 25), a.output)
            what = f"the {min(a.top or 25, g.number_of_nodes())} hottest blocks"
        else:
            if a.top is not None:
                g = hot_subgraph(g, a.top)
            export(g, a.output)
            what = f"{g.number_of_nodes()} blocks, {g.number_of_edges()} edges"
    except ProfileError as e:
        raise DbtError(str(e)) from None
    except BrokenPipeError:
        raise
    except OSError as e:
        raise DbtError(f"cannot write {a.output}: {e.strerror or e}") from None
    print(f"wrote {a.output} ({what})")
    return 0


def cmd_report(a: argparse.Namespace) -> int:
    from dbtlab.analysis import ProfileError, load_file, summary, write_figures
    try:
        p = load_file(a.profile)
        print(summary(p, top=a.top), end="")
        if a.outdir:
            paths = write_figures(p, a.outdir, fmt=a.format, benchmarks=a.benchmarks)
            print(f"\nfigures: {', '.join(paths)}")
    except ProfileError as e:
        raise DbtError(str(e)) from None
    except BrokenPipeError:
        raise
    except OSError as e:
        raise DbtError(f"cannot write the figures into {a.outdir}: {e.strerror or e}") \
            from None
    return 0


# ---- differential fuzzing (issue 4) ------------------------------------------------------
# dbtlab fuzz --seed S --cases N [--accels A,B,...] [--jobs J] [--no-known-deviations]
#             [--weights CLASS=W,...] [--out DIR] | --replay FILE
def add_fuzz_parser(sub) -> None:
    from dbtlab.runtime.oracle.fuzz.weights import DEFAULT_WEIGHTS
    f = sub.add_parser("fuzz", help="differential fuzzing of the accelerators",
                       description="Generate random RV64GC instruction streams, run each on "
                                   "every engine from the same state and compare the final "
                                   "states; narrow, minimise and write a reproducer for "
                                   "every divergence. Exit status 1 if a divergence that "
                                   "is not a known oracle deviation was found.")
    f.add_argument("--seed", type=int, default=0, help="campaign seed (default 0)")
    f.add_argument("--cases", type=int, default=1000, help="number of cases (default 1000)")
    f.add_argument("--accels", default=None,
                   help="comma-separated accelerators (default llvm,unicorn; with --replay "
                        "the file's); the first that is not unicorn is the reference")
    f.add_argument("--jobs", type=int, default=1, metavar="J",
                   help="worker processes (default 1)")
    f.add_argument("--no-known-deviations", action="store_true",
                   help="do not excuse unicorn's known deviations from the spec")
    f.add_argument("--weights", metavar="CLASS=W,...",
                   help="instruction class weights over the defaults: " + ", ".join(
                       f"{k}={v:g}" for k, v in DEFAULT_WEIGHTS.items()))
    f.add_argument("--out", default="fuzz-out", metavar="DIR",
                   help="where reproducers are written (default ./fuzz-out)")
    f.add_argument("--no-minimise", action="store_true",
                   help="write divergences as found, without delta debugging")
    f.add_argument("--llvm-regions", type=int, default=0, metavar="N",
                   help="let llvm form second-tier regions from blocks executed N times "
                        "(default 0: first tier only)")
    f.add_argument("--tiers", metavar="LIST", default=None,
                   help="llvm's first tiers: stencil and/or llvm (default as for run)")
    f.add_argument("--replay", metavar="FILE",
                   help="rerun a reproducer file (on its engines, or --accels if given)")


def cmd_fuzz(a: argparse.Namespace) -> int:
    from dbtlab.runtime.oracle.fuzz import FuzzConfig, parse_weights, replay, run_campaign
    accels = tuple(e.strip() for e in (a.accels or "llvm,unicorn").split(",") if e.strip())
    if a.replay:
        try:
            r = replay(a.replay, list(accels) if a.accels else None,
                       False if a.no_known_deviations else None)
        except (OSError, ValueError, KeyError) as e:
            raise DbtError(f"--replay {a.replay}: {e}") from None
        print(r.report())
        return 0 if r.ok else 1
    try:
        weights = parse_weights(a.weights)
    except ValueError as e:
        raise DbtError(str(e)) from None
    tiers = None
    if a.tiers is not None:
        try:
            tiers = parse_tiers(a.tiers)
        except ValueError as e:
            raise DbtError(f"--tiers: {e}") from None
    cfg = FuzzConfig(seed=a.seed, cases=a.cases, accels=accels, jobs=a.jobs,
                     known_deviations=not a.no_known_deviations, weights=weights,
                     out=a.out, minimise=not a.no_minimise, progress=True,
                     llvm_regions=a.llvm_regions, tiers=tiers)
    r = run_campaign(cfg)
    print(r.summary())
    return 0 if r.ok else 1


if __name__ == "__main__":
    sys.exit(main())
