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
from dbtlab.runtime.config import ACCELS, DEBUG_FLAGS, RunConfig, parse_debug
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
    r.add_argument("program", metavar="PROGRAM", help="static RISC-V ELF executable")
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
    return RunConfig(accel=a.accel, strace=a.strace, max_insns=a.max_insns, debug=debug,
                     debug_file=a.debug_file, opt_level=a.opt,
                     time_mode="virtual" if a.virtual_time else "host",
                     profile=bool(getattr(a, "profile", None)))


def guest_env(a: argparse.Namespace) -> list[str]:
    env = [] if a.clear_env else [f"{k}={v}" for k, v in os.environ.items()]
    for kv in a.env or ():
        if "=" not in kv:
            raise DbtError(f"--env {kv!r}: expected K=V")
        env.append(kv)
    return env


def cmd_run(a: argparse.Namespace) -> int:
    from dbtlab.runtime.machine import Machine
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
        print(f"  translated {s['blocks']} blocks ({s['guest_insns']} guest insns) in "
              f"{s['modules']} modules: {1e3 * s['emit_seconds']:.1f} ms emitting, "
              f"{1e3 * s['compile_seconds']:.1f} ms compiling; median "
              f"{s.get('median_us_per_block', 0):.0f} us/block; {s['links']} links, "
              f"{s['invalidated']} invalidated, {s['flushes']} flushes", file=out)


def write_stats_json(path: str, m, res) -> None:
    import json
    d = m.stats()
    if res is not None:
        d.update(status=res.status, signal=res.signal, wall=res.wall, stopped=res.stopped)
    with open(path, "w") as f:
        json.dump(d, f, indent=1, default=str)


def cmd_difftest(a: argparse.Namespace) -> int:
    from dbtlab.runtime.difftest import difftest
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
    except DbtError as e:
        print(f"dbtlab: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 141
    p.error(f"unknown command {a.command}")
    return 2


if __name__ == "__main__":
    sys.exit(main())
