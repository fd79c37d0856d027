"""The shipped guest programs: manifest, committed binaries, expected outputs, rebuild.

These checks are independent of guests/build.py where it matters: the ELF checks use
pyelftools (build.py parses with struct), and the expected outputs come from the host
build, so running the RISC-V binaries under qemu-riscv64 checks them against a reference
that no emulator produced.
"""
from __future__ import annotations

import importlib.util
import json
import resource
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile

REPO = Path(__file__).resolve().parents[2]
GUESTS = REPO / "guests"
MANIFEST = json.loads((GUESTS / "manifest.json").read_text())
PROGRAMS = {p["name"]: p for p in MANIFEST["programs"]}
TOKEN = MANIFEST["tmpfile_token"]
QEMU = shutil.which("qemu-riscv64")

EM_RISCV = 243
EF_RISCV_RVC = 0x1
EF_RISCV_FLOAT_ABI_MASK = 0x6
EF_RISCV_FLOAT_ABI_DOUBLE = 0x4

BINARIES = [(name, libc) for name, p in PROGRAMS.items() for libc in p["binaries"]]
# Programs the task requires a glibc build of (all of them are built, in fact).
GLIBC_REQUIRED = {"hello", "sha256", "qsort", "matmul", "nbody", "strings", "alloc", "fileio",
                  "exit3"}


def _id(case: tuple[str, str]) -> str:
    return f"{case[0]}-{case[1]}"


# ------------------------------------------------------------------ (a) manifest

def test_manifest_lists_every_source_and_nothing_else() -> None:
    sources = {p.stem for p in (GUESTS / "src").glob("*.c")}
    assert set(PROGRAMS) == sources
    assert len(PROGRAMS) == len(MANIFEST["programs"]), "duplicate names"


@pytest.mark.parametrize("name", sorted(PROGRAMS))
def test_manifest_entry_is_consistent(name: str) -> None:
    p = PROGRAMS[name]
    assert (GUESTS / p["source"]).is_file()
    assert (GUESTS / p["expected_stdout"]).is_file()
    assert "musl" in p["binaries"]
    if name in GLIBC_REQUIRED:
        assert "glibc" in p["binaries"]
    for path in p["binaries"].values():
        assert (GUESTS / path).is_file(), path
    # Exactly one way of ending.
    assert (p["exit_status"] is None) != (p["signal"] is None)
    if p["signal"] is not None:
        assert p["signal"] in (4, 11)
    for size in ("test", "bench"):
        assert all(isinstance(a, str) for a in p[size]["args"])
    uses_token = any(TOKEN in a for a in p["test"]["args"] + p["bench"]["args"])
    assert p["needs_tmpfile"] == uses_token
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in p["env"].items())
    measured = p.get("measured")
    if measured:
        # The interpreter runs at ~0.3-1 MIPS: test size must stay small.
        assert all(n < 2_000_000 for n in measured["test_insns"].values()), measured


def test_expected_outputs_are_what_the_task_specifies() -> None:
    hello = (GUESTS / PROGRAMS["hello"]["expected_stdout"]).read_text()
    assert f"DBTLAB_GREETING={PROGRAMS['hello']['env']['DBTLAB_GREETING']}" in hello
    assert "cbf43926" in (GUESTS / "expected/crc32.out").read_text()
    assert ("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
            in (GUESTS / "expected/sha256.out").read_text())
    for name in ("illegal", "segv", "exit3"):
        assert (GUESTS / PROGRAMS[name]["expected_stdout"]).read_text().startswith(name)


# ------------------------------------------------------------------ (b) ELF checks

def check_riscv_static_elf(path: Path) -> None:
    """What every shipped guest must be: static RV64GC, lp64d, symbols, no DWARF."""
    with open(path, "rb") as f:
        elf = ELFFile(f)
        assert elf.elfclass == 64 and elf.little_endian
        assert elf["e_machine"] == "EM_RISCV"
        assert elf["e_type"] == "ET_EXEC"
        flags = elf["e_flags"]
        assert flags & EF_RISCV_RVC, f"{path}: RVC flag missing"
        assert flags & EF_RISCV_FLOAT_ABI_MASK == EF_RISCV_FLOAT_ABI_DOUBLE, f"{path}: not lp64d"
        types = [seg["p_type"] for seg in elf.iter_segments()]
        assert "PT_INTERP" not in types and "PT_DYNAMIC" not in types, f"{path}: dynamic"
        assert "PT_LOAD" in types
        names = [s.name for s in elf.iter_sections()]
        assert not [n for n in names if n.startswith(".debug")], f"{path}: debug info kept"
        symtab = elf.get_section_by_name(".symtab")
        assert symtab is not None, f"{path}: symbol table stripped"
        funcs = {s.name for s in symtab.iter_symbols() if s["st_info"]["type"] == "STT_FUNC"}
        assert "main" in funcs
    # Raw e_machine number, independently of pyelftools' naming.
    assert int.from_bytes(path.read_bytes()[18:20], "little") == EM_RISCV


@pytest.mark.parametrize("case", BINARIES, ids=_id)
def test_committed_binary_is_static_rv64gc(case: tuple[str, str]) -> None:
    name, libc = case
    path = GUESTS / PROGRAMS[name]["binaries"][libc]
    check_riscv_static_elf(path)
    size = path.stat().st_size
    if libc == "musl":
        assert 10_000 < size < 200_000, size
    else:
        assert 300_000 < size < 1_500_000, size


# ------------------------------------------------------------------ (c) qemu runs

def _no_core() -> None:
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def run_guest(cmd: list[str], prog: dict, tmp_path: Path) -> subprocess.CompletedProcess:
    """Run at test args with exactly the manifest environment, {tmpfile} substituted."""
    args = [a.replace(TOKEN, str(tmp_path / "guest-file")) for a in prog["test"]["args"]]
    return subprocess.run([*cmd, *args], capture_output=True, env=dict(prog["env"]),
                          cwd=tmp_path, timeout=60, preexec_fn=_no_core)


def assert_outcome(proc: subprocess.CompletedProcess, prog: dict) -> None:
    if prog["signal"] is not None:
        assert proc.returncode == -prog["signal"], proc.stderr
    else:
        assert proc.returncode == prog["exit_status"], proc.stderr


@pytest.mark.skipif(QEMU is None, reason="qemu-riscv64 not installed (apt-get install qemu-user)")
@pytest.mark.parametrize("case", BINARIES, ids=_id)
def test_binary_under_qemu_matches_expected(case: tuple[str, str], tmp_path: Path) -> None:
    name, libc = case
    prog = PROGRAMS[name]
    proc = run_guest([QEMU, str(GUESTS / prog["binaries"][libc])], prog, tmp_path)
    assert proc.stdout == (GUESTS / prog["expected_stdout"]).read_bytes()
    assert_outcome(proc, prog)
    if prog["needs_tmpfile"]:
        assert not (tmp_path / "guest-file").exists(), "fileio must unlink its file"


# ------------------------------------------------------------------ (d) rebuild

def _load_build_module():
    spec = importlib.util.spec_from_file_location("dbtlab_guests_build", GUESTS / "build.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def test_build_script_rejects_non_riscv_elf(tmp_path: Path) -> None:
    build = _load_build_module()
    with pytest.raises(build.BuildError, match="e_machine"):
        build.check_elf(Path(sys.executable).resolve())


@pytest.mark.skipif(importlib.util.find_spec("ziglang") is None, reason="ziglang not installed")
def test_rebuilding_hello_gives_a_valid_elf(tmp_path: Path) -> None:
    build = _load_build_module()
    committed = (GUESTS / PROGRAMS["hello"]["binaries"]["musl"]).read_bytes()
    expected = (GUESTS / PROGRAMS["hello"]["expected_stdout"]).read_bytes()
    args = ["hello", "--out-dir", str(tmp_path), "--no-glibc", "--no-native"]
    if build.find_toolchains().objcopy is None:
        args.append("--keep-debug")
    assert build.main(args) == 0
    out = tmp_path / "bin" / "hello"
    if "--keep-debug" not in args:
        check_riscv_static_elf(out)
    # The committed binary was not touched.
    assert (GUESTS / PROGRAMS["hello"]["binaries"]["musl"]).read_bytes() == committed
    if QEMU is not None:
        proc = run_guest([QEMU, str(out)], PROGRAMS["hello"], tmp_path)
        assert proc.stdout == expected
        assert proc.returncode == 0


# ------------------------------------------------------------------ instruction coverage

OBJDUMP = shutil.which("riscv64-linux-gnu-objdump")


def _disassembly(path: Path) -> str:
    # (zig's ELF attributes omit zifencei, so objdump prints fence.i as .4byte there: the
    # smc test below looks for the encoding instead.)
    return subprocess.run([OBJDUMP, "-d", "-M", "no-aliases", str(path)], capture_output=True,
                          text=True, check=True).stdout


@pytest.mark.skipif(OBJDUMP is None, reason="riscv64-linux-gnu-objdump not installed")
@pytest.mark.parametrize("libc", ["musl", "glibc"])
def test_atomics_really_uses_amo_and_lr_sc(libc: str) -> None:
    text = _disassembly(GUESTS / PROGRAMS["atomics"]["binaries"][libc])
    for mnemonic in ("amoadd.w", "amoadd.d", "amoand.", "amoor.", "amoxor.", "amoswap.",
                     "lr.w", "sc.w", "lr.d", "sc.d"):
        assert f"\t{mnemonic}" in text, mnemonic


@pytest.mark.parametrize("libc", ["musl", "glibc"])
def test_smc_contains_fence_i(libc: str) -> None:
    # fence.i is the 32-bit word 0x0000100f; look for it in the executable bytes.
    with open(GUESTS / PROGRAMS["smc"]["binaries"][libc], "rb") as f:
        elf = ELFFile(f)
        code = b"".join(seg.data() for seg in elf.iter_segments()
                        if seg["p_type"] == "PT_LOAD" and seg["p_flags"] & 1)
    assert (0x100F).to_bytes(4, "little") in code
