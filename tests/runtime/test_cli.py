"""The command line, as a user meets it: output passes through, exit statuses and signal
deaths look like qemu-riscv64's, bad input gets one clear line and no traceback."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from tests.conftest import GUESTS, ROOT

FIXTURES = ROOT / "tests" / "fixtures"


def dbtlab(*args, env=None, stdin=None, timeout=120):
    e = dict(os.environ)
    e.update(env or {})
    return subprocess.run([sys.executable, "-m", "dbtlab.runtime.cli", *args], env=e,
                          input=stdin, capture_output=True, timeout=timeout)


def test_version():
    r = dbtlab("--version")
    assert r.returncode == 0
    assert r.stdout.decode().startswith("dbtlab 0.")


@pytest.mark.parametrize("accel", ["llvm", "interp"])
def test_run_passes_output_and_environment(accel):
    r = dbtlab("run", "--accel", accel, "--clear-env", "--env", "DBTLAB_GREETING=hi there",
               str(GUESTS / "bin/hello"), "one", "-x")
    assert r.returncode == 0, r.stderr
    out = r.stdout.decode()
    assert 'argv[1]="one"' in out and 'argv[2]="-x"' in out
    assert "DBTLAB_GREETING=hi there" in out
    assert r.stderr == b""


def test_exit_status_is_the_guests():
    r = dbtlab("run", str(GUESTS / "bin/exit3"))
    assert r.returncode == 3


@pytest.mark.parametrize("prog,sig,what", [
    ("segv", signal.SIGSEGV, "load from address 0x10"),
    ("illegal", signal.SIGILL, "illegal instruction"),
])
@pytest.mark.parametrize("accel", ["llvm", "interp"])
def test_guest_signal_death(prog, sig, what, accel):
    r = dbtlab("run", "--accel", accel, str(GUESTS / "bin" / prog))
    assert r.returncode == -sig          # dbtlab died by the guest's signal, like qemu
    err = r.stderr.decode().strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith(f"dbtlab: guest killed by {signal.Signals(sig).name}: {what} "
                             "at pc 0x")
    assert "<main" in err[0]               # symbol of the faulting instruction
    assert "Traceback" not in r.stderr.decode()


@pytest.mark.parametrize("path,message", [
    ("/nonexistent/prog", "/nonexistent/prog: no such file"),
    (str(FIXTURES / "x86_64_static"), "not a RISC-V program (x86-64 ELF)"),
    (str(FIXTURES / "rv32_static"), "32-bit"),
    (str(FIXTURES / "rv64_dynamic"), "dynamically linked"),
    (__file__, "not an ELF file"),
])
def test_bad_programs_get_one_line(path, message):
    r = dbtlab("run", path)
    assert r.returncode == 1
    err = r.stderr.decode()
    assert err.count("\n") == 1 and err.startswith("dbtlab: ")
    assert message in err
    assert "Traceback" not in err


def test_unknown_debug_flag():
    r = dbtlab("run", "-d", "in_asm,bogus", str(GUESTS / "bin/exit3"))
    assert r.returncode == 1
    assert r.stderr.decode().startswith("dbtlab: unknown -d flag(s) bogus; valid: in_asm")


def test_max_insns_stops_exactly():
    r = dbtlab("run", "--max-insns", "1000", str(GUESTS / "bin/hello"))
    assert r.returncode == 0
    assert r.stderr.decode().startswith("dbtlab: stopped after 1000 instructions at pc 0x")


def test_debug_in_asm_shows_translated_blocks():
    r = dbtlab("run", "-d", "in_asm", str(GUESTS / "bin/exit3"))
    assert r.returncode == 3
    err = r.stderr.decode()
    assert "IN: 0x" in err and "<_start" in err


def test_strace_prints_syscalls_like_qemu():
    r = dbtlab("run", "--strace", str(GUESTS / "bin/exit3"))
    err = r.stderr.decode()
    assert " exit_group(3)" in err
    assert "set_tid_address(" in err


def test_stats_report_exits_and_translation():
    r = dbtlab("run", "--stats", str(GUESTS / "bin/exit3"))
    err = r.stderr.decode()
    assert "exits to Python:" in err and "ecall" in err
    assert "translated" in err and "us/block" in err


def test_disas_function_matches_objdump_layout():
    r = dbtlab("disas", str(GUESTS / "bin/hello"), "--function", "main")
    assert r.returncode == 0
    lines = r.stdout.decode().splitlines()
    assert lines[1].endswith(" <main>:")
    assert all(line.startswith(" ") and ":\t" in line for line in lines[2:] if line)


def test_disas_unknown_function():
    r = dbtlab("disas", str(GUESTS / "bin/hello"), "--function", "nope")
    assert r.returncode == 1
    assert "no function named 'nope'" in r.stderr.decode()


def test_no_command_prints_help():
    r = dbtlab()
    assert r.returncode == 2
    assert b"COMMAND" in r.stdout
