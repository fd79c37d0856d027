#!/usr/bin/env python3
"""Rebuild the shipped RISC-V guest programs and their expected outputs.

One command, ``python guests/build.py``, does everything:

1. builds every ``guests/src/<name>.c`` with zig's clang for riscv64-linux-musl into
   ``guests/bin/<name>`` (debug info stripped, symbol table kept);
2. builds it again with Debian's ``riscv64-linux-gnu-gcc`` against glibc into
   ``guests/bin/glibc/<name>``;
3. checks every output ELF: 64-bit little-endian RISC-V (e_machine 243), ET_EXEC,
   statically linked (no PT_INTERP / PT_DYNAMIC), RVC flag and double-float ABI set,
   symbol table present (with ``main``), no ``.debug_*`` sections;
4. builds it natively for the host with ``gcc -O2`` into ``guests/build/`` (not committed;
   the benchmarks compare against it);
5. runs the native build at the manifest's test arguments and writes
   ``guests/expected/<name>.out`` from it, so correctness does not rest on any emulator,
   then runs both RISC-V binaries under ``qemu-riscv64`` (if installed) and fails unless
   stdout and exit status match exactly.

``--measure`` additionally counts guest instructions at test size (qemu ``-singlestep -d
nochain,exec``) and times the bench size under qemu and natively, and records the numbers
in ``guests/manifest.json`` under ``measured``.

All programs are built with ``-ffp-contract=off``: otherwise the compilers fuse ``a*b+c``
into fmadd.d on RISC-V (one rounding) but not on an x86-64 host without FMA (two
roundings), and FP outputs could differ.  matmul uses fmadd.d explicitly through fma(),
which is correctly rounded everywhere.

The script needs only the Python standard library (the tests check the ELFs again with
pyelftools, independently).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("guests.build")

GUESTS = Path(__file__).resolve().parent
SRC = GUESTS / "src"
MANIFEST = GUESTS / "manifest.json"
TMPFILE_TOKEN = "{tmpfile}"

COMMON_CFLAGS = ["-O2", "-ffp-contract=off"]
# Extra libraries per program and toolchain (musl via zig needs none: libm and the
# atomics helpers are part of its libc).
GLIBC_LIBS = {"atomics": ["-latomic"]}   # gcc 12 calls libatomic for 8/16-bit atomics
NATIVE_LIBS: dict[str, list[str]] = {}

EM_RISCV = 243
EF_RISCV_RVC = 0x1
EF_RISCV_FLOAT_ABI_MASK = 0x6
EF_RISCV_FLOAT_ABI_DOUBLE = 0x4
PT_DYNAMIC, PT_INTERP = 2, 3
ET_EXEC = 2

RUN_TIMEOUT = 120.0


class BuildError(RuntimeError):
    """A toolchain is missing, a compile failed, or an output is not what we ship."""


# --------------------------------------------------------------------------- toolchains

@dataclass
class Toolchains:
    """Commands found on this machine (None when absent)."""

    zig: list[str] | None
    glibc_gcc: str | None
    objcopy: str | None
    native_gcc: str | None
    qemu: str | None


def find_toolchains() -> Toolchains:
    """Locate the compilers; ziglang is used through the running interpreter."""
    zig = None
    try:
        import ziglang  # noqa: F401  (only to know it is installed)
        zig = [sys.executable, "-m", "ziglang"]
    except ImportError:
        pass
    objcopy = shutil.which("riscv64-linux-gnu-objcopy") or shutil.which("llvm-objcopy")
    return Toolchains(
        zig=zig,
        glibc_gcc=shutil.which("riscv64-linux-gnu-gcc"),
        objcopy=objcopy,
        native_gcc=shutil.which("gcc") or shutil.which("cc"),
        qemu=shutil.which("qemu-riscv64"),
    )


def run_tool(cmd: list[str], what: str) -> None:
    """Run a build command; on failure raise with its output."""
    log.debug("%s", " ".join(cmd))
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise BuildError(f"{what} failed ({proc.returncode}):\n$ {' '.join(cmd)}\n"
                         f"{proc.stdout}{proc.stderr}")


def strip_debug(tc: Toolchains, path: Path, keep_debug: bool) -> None:
    """Remove DWARF but keep .symtab (the analysis tools need function names)."""
    if keep_debug:
        return
    if tc.objcopy is None:
        raise BuildError("no objcopy for RISC-V ELF found: install binutils-riscv64-linux-gnu "
                         "(riscv64-linux-gnu-objcopy) or llvm (llvm-objcopy), or pass "
                         "--keep-debug. (zig objcopy --strip-debug is unimplemented for this "
                         "target and zig's -Wl,--strip-debug also drops the symbol table.)")
    tmp = path.with_suffix(".stripping")
    run_tool([tc.objcopy, "--strip-debug", str(path), str(tmp)], f"strip {path.name}")
    tmp.replace(path)


def build_musl(tc: Toolchains, name: str, out: Path, keep_debug: bool) -> None:
    """zig cc -target riscv64-linux-musl -O2 -static (RV64GC is zig's default CPU)."""
    if tc.zig is None:
        raise BuildError("ziglang is not importable by this Python: "
                         "`pip install ziglang==0.17.1` (the test extra has it)")
    out.parent.mkdir(parents=True, exist_ok=True)
    run_tool([*tc.zig, "cc", "-target", "riscv64-linux-musl", *COMMON_CFLAGS, "-static",
              "-o", str(out), str(SRC / f"{name}.c")], f"musl build of {name}")
    strip_debug(tc, out, keep_debug)


def build_glibc(tc: Toolchains, name: str, out: Path, keep_debug: bool) -> None:
    """Debian's riscv64-linux-gnu-gcc -O2 -static against glibc."""
    if tc.glibc_gcc is None:
        raise BuildError("riscv64-linux-gnu-gcc not found: `apt-get install "
                         "gcc-riscv64-linux-gnu` (or pass --no-glibc)")
    out.parent.mkdir(parents=True, exist_ok=True)
    run_tool([tc.glibc_gcc, *COMMON_CFLAGS, "-static", "-o", str(out), str(SRC / f"{name}.c"),
              "-lm", *GLIBC_LIBS.get(name, [])], f"glibc build of {name}")
    strip_debug(tc, out, keep_debug)


def build_native(tc: Toolchains, name: str, out: Path) -> None:
    """Host build with gcc -O2: the reference for expected outputs and benchmarks."""
    if tc.native_gcc is None:
        raise BuildError("no host gcc/cc found: `apt-get install gcc` (or pass --no-native)")
    out.parent.mkdir(parents=True, exist_ok=True)
    run_tool([tc.native_gcc, *COMMON_CFLAGS, "-o", str(out), str(SRC / f"{name}.c"),
              "-lm", *NATIVE_LIBS.get(name, [])], f"native build of {name}")


# --------------------------------------------------------------------------- ELF checks

def check_elf(path: Path, *, allow_debug: bool = False) -> dict:
    """Check that path is what the project ships (``allow_debug``: a --keep-debug build,
    which keeps its debug sections); return a few facts about it.

    Parses the ELF header, program headers and section headers with struct only, so the
    build needs no third-party module.
    """
    data = path.read_bytes()
    problems: list[str] = []
    if data[:4] != b"\x7fELF":
        raise BuildError(f"{path}: not an ELF file")
    if data[4] != 2 or data[5] != 1:
        raise BuildError(f"{path}: not a 64-bit little-endian ELF")
    (e_type, e_machine, _ver, e_entry, e_phoff, e_shoff, e_flags, _ehsize, e_phentsize,
     e_phnum, e_shentsize, e_shnum, e_shstrndx) = struct.unpack_from("<HHIQQQIHHHHHH", data, 16)
    if e_machine != EM_RISCV:
        problems.append(f"e_machine {e_machine}, want {EM_RISCV} (RISC-V)")
    if e_type != ET_EXEC:
        problems.append(f"e_type {e_type}, want ET_EXEC (static, not PIE)")
    if not e_flags & EF_RISCV_RVC:
        problems.append(f"e_flags {e_flags:#x}: EF_RISCV_RVC not set (want RV64GC)")
    if e_flags & EF_RISCV_FLOAT_ABI_MASK != EF_RISCV_FLOAT_ABI_DOUBLE:
        problems.append(f"e_flags {e_flags:#x}: float ABI is not double (lp64d)")
    ptypes = [struct.unpack_from("<I", data, e_phoff + i * e_phentsize)[0]
              for i in range(e_phnum)]
    if PT_INTERP in ptypes:
        problems.append("has PT_INTERP (dynamically linked)")
    if PT_DYNAMIC in ptypes:
        problems.append("has PT_DYNAMIC (dynamically linked)")

    sections = []
    for i in range(e_shnum):
        sh_name, sh_type, _f, _a, sh_offset, sh_size = struct.unpack_from(
            "<IIQQQQ", data, e_shoff + i * e_shentsize)
        sections.append((sh_name, sh_type, sh_offset, sh_size))
    _, _, str_off, str_size = sections[e_shstrndx]
    strtab = data[str_off:str_off + str_size]

    def sname(off: int) -> str:
        return strtab[off:strtab.index(b"\0", off)].decode()

    names = [sname(s[0]) for s in sections]
    debug = [n for n in names if n.startswith(".debug")]
    if debug and not allow_debug:
        problems.append(f"debug sections present: {', '.join(debug)}")
    if ".symtab" not in names:
        problems.append("no .symtab (symbol table must be kept)")
    else:
        symtab = sections[names.index(".symtab")]
        strsec = sections[names.index(".strtab")]
        symstr = data[strsec[2]:strsec[2] + strsec[3]]
        has_main = any(
            symstr[o:symstr.index(b"\0", o)] == b"main"
            for o in (struct.unpack_from("<I", data, symtab[2] + j)[0]
                      for j in range(0, symtab[3], 24)))
        if not has_main:
            problems.append("symbol table has no `main`")
    if problems:
        raise BuildError(f"{path}: " + "; ".join(problems))
    return {"size": len(data), "entry": e_entry, "flags": e_flags}


# --------------------------------------------------------------------------- running

def load_manifest() -> dict:
    """The manifest is hand-maintained; build.py only fills in `measured`."""
    return json.loads(MANIFEST.read_text())


def _no_core() -> None:
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


@dataclass
class RunResult:
    """What a guest run produced: stdout bytes and 'status N' or 'signal N'."""

    stdout: bytes
    stderr: bytes
    returncode: int
    seconds: float

    @property
    def outcome(self) -> tuple[str, int]:
        if self.returncode < 0:
            return ("signal", -self.returncode)
        return ("status", self.returncode)


def run_program(cmd_prefix: list[str], binary: Path, prog: dict, size: str = "test",
                extra_env: dict[str, str] | None = None) -> RunResult:
    """Run one program at test or bench args, in a clean environment, no core dumps."""
    with tempfile.TemporaryDirectory(prefix="dbtlab-guest-") as tmp:
        args = [a.replace(TMPFILE_TOKEN, str(Path(tmp) / "fileio.dat"))
                for a in prog[size]["args"]]
        env = dict(prog.get("env", {}))
        env.update(extra_env or {})
        t0 = time.perf_counter()
        proc = subprocess.run([*cmd_prefix, str(binary), *args], capture_output=True,
                              env=env, cwd=tmp, timeout=RUN_TIMEOUT, preexec_fn=_no_core)
        seconds = time.perf_counter() - t0
    return RunResult(proc.stdout, proc.stderr, proc.returncode, seconds)


def expected_outcome(prog: dict) -> tuple[str, int]:
    if prog.get("signal") is not None:
        return ("signal", prog["signal"])
    return ("status", prog["exit_status"])


def count_insns(tc: Toolchains, binary: Path, prog: dict) -> int:
    """Guest instructions executed at test size: one TB per instruction, each logged."""
    with tempfile.TemporaryDirectory(prefix="dbtlab-count-") as tmp:
        logf = Path(tmp) / "exec.log"
        run_program([tc.qemu, "-singlestep", "-d", "nochain,exec", "-D", str(logf)],
                    binary, prog)
        n = 0
        with open(logf, "rb") as f:
            for line in f:
                n += line.startswith(b"Trace ")
    return n


# --------------------------------------------------------------------------- main steps

def musl_path(out_root: Path, name: str) -> Path:
    return out_root / "bin" / name


def glibc_path(out_root: Path, name: str) -> Path:
    return out_root / "bin" / "glibc" / name


def native_path(out_root: Path, name: str) -> Path:
    return out_root / "build" / name


def check_manifest_matches_sources(manifest: dict) -> None:
    names = {p["name"] for p in manifest["programs"]}
    sources = {p.stem for p in SRC.glob("*.c")}
    if names != sources:
        raise BuildError(f"manifest and guests/src disagree: only in manifest "
                         f"{sorted(names - sources)}, only in src {sorted(sources - names)}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("names", nargs="*", help="programs to build (default: all in the manifest)")
    ap.add_argument("--out-dir", type=Path, default=GUESTS,
                    help="root for bin/, bin/glibc/, build/ (default: guests/); when set "
                         "elsewhere the expected outputs are not rewritten")
    ap.add_argument("--no-glibc", action="store_true", help="skip the glibc builds")
    ap.add_argument("--no-native", action="store_true",
                    help="skip native builds (and expected outputs)")
    ap.add_argument("--no-verify", action="store_true", help="do not run anything under qemu")
    ap.add_argument("--keep-debug", action="store_true", help="do not strip debug info")
    ap.add_argument("--measure", action="store_true",
                    help="count test-size instructions and time bench size; update manifest")
    ap.add_argument("-v", "--verbose", action="store_true")
    opts = ap.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if opts.verbose else logging.INFO,
                        format="%(message)s")

    try:
        return _main(opts)
    except BuildError as e:
        log.error("BUILD FAILED: %s", e)
        return 1


def _main(opts: argparse.Namespace) -> int:
    manifest = load_manifest()
    check_manifest_matches_sources(manifest)
    progs = {p["name"]: p for p in manifest["programs"]}
    names = opts.names or list(progs)
    unknown = [n for n in names if n not in progs]
    if unknown:
        raise BuildError(f"unknown program(s): {', '.join(unknown)}")
    tc = find_toolchains()
    out_root: Path = opts.out_dir.resolve()
    in_tree = out_root == GUESTS

    for name in names:
        prog = progs[name]
        build_musl(tc, name, musl_path(out_root, name), opts.keep_debug)
        facts = check_elf(musl_path(out_root, name), allow_debug=opts.keep_debug)
        line = f"{name:8s} musl {facts['size']:>8d} B"
        if "glibc" in prog["binaries"] and not opts.no_glibc:
            build_glibc(tc, name, glibc_path(out_root, name), opts.keep_debug)
            facts = check_elf(glibc_path(out_root, name), allow_debug=opts.keep_debug)
            line += f"  glibc {facts['size']:>8d} B"
        if not opts.no_native:
            build_native(tc, name, native_path(out_root, name))
            line += "  native ok"
        log.info("%s", line)

    if opts.no_native:
        return 0
    if tc.qemu is None and not opts.no_verify:
        log.warning("qemu-riscv64 not found: outputs NOT verified under emulation "
                    "(apt-get install qemu-user)")
    for name in names:
        prog = progs[name]
        ref = run_program([], native_path(out_root, name), prog)
        if ref.outcome != expected_outcome(prog):
            raise BuildError(f"{name}: native build ended with {ref.outcome}, manifest says "
                             f"{expected_outcome(prog)}\n{ref.stderr.decode(errors='replace')}")
        if in_tree:
            exp = GUESTS / prog["expected_stdout"]
            exp.parent.mkdir(parents=True, exist_ok=True)
            if not exp.exists() or exp.read_bytes() != ref.stdout:
                exp.write_bytes(ref.stdout)
                log.info("%-8s expected output written (%d bytes)", name, len(ref.stdout))
        if opts.no_verify or tc.qemu is None:
            continue
        variants = {"musl": musl_path(out_root, name)}
        if "glibc" in prog["binaries"] and not opts.no_glibc:
            variants["glibc"] = glibc_path(out_root, name)
        for libc, binary in variants.items():
            got = run_program([tc.qemu], binary, prog)
            if got.stdout != ref.stdout or got.outcome != ref.outcome:
                raise BuildError(
                    f"{name} ({libc}) under qemu-riscv64 differs from the native build: "
                    f"{got.outcome} vs {ref.outcome}\n--- native\n{ref.stdout.decode()}"
                    f"--- qemu\n{got.stdout.decode()}{got.stderr.decode(errors='replace')}")
        log.info("%-8s native == %s under qemu-riscv64 (%s %d)", name,
                 " == ".join(variants), *ref.outcome)

    if opts.measure:
        if tc.qemu is None:
            raise BuildError("--measure needs qemu-riscv64")
        measure(tc, progs, names, out_root)
        if in_tree:
            MANIFEST.write_text(json.dumps(manifest, indent=2) + "\n")
            log.info("manifest updated with measurements")
    return 0


def measure(tc: Toolchains, progs: dict, names: list[str], out_root: Path) -> None:
    """Fill prog['measured']: exact test-size insn counts, median-of-3 bench timings."""
    for name in names:
        prog = progs[name]
        variants = {"musl": musl_path(out_root, name)}
        if "glibc" in prog["binaries"]:
            variants["glibc"] = glibc_path(out_root, name)
        m: dict = {"test_insns": {}, "bench_qemu_seconds": {}}
        for libc, binary in variants.items():
            m["test_insns"][libc] = count_insns(tc, binary, prog)
            times = [run_program([tc.qemu], binary, prog, "bench").seconds for _ in range(3)]
            m["bench_qemu_seconds"][libc] = round(statistics.median(times), 3)
        times = [run_program([], native_path(out_root, name), prog, "bench").seconds
                 for _ in range(3)]
        m["bench_native_seconds"] = round(statistics.median(times), 3)
        m["machine"] = os.uname().machine
        prog["measured"] = m
        log.info("%-8s test insns %s  bench qemu %s s  native %.3f s", name,
                 m["test_insns"], m["bench_qemu_seconds"], m["bench_native_seconds"])


if __name__ == "__main__":
    sys.exit(main())
