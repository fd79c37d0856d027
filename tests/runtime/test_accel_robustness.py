"""The accelerators under conditions ordinary runs rarely reach: region compiles finishing
while the vCPU thread looks at its job tables (on a loaded machine), a guest pc that is
odd, and an instruction count about to wrap at 2**64."""

from __future__ import annotations

import os
import signal
import struct
import subprocess
import sys
import threading

import pytest

import dbtlab
from dbtlab.runtime.config import RunConfig
from dbtlab.runtime.machine import Machine
from dbtlab.runtime.oracle.bare import CODE_BASE, BareMachine
from dbtlab.translator.decode import decode, encode
from tests.conftest import ACCELS, GUESTS, guest_cases

HELLO = str(GUESTS / "bin/hello")
HELLO_OUT = b"hello from dbtlab guest\nargc=1\nDBTLAB_GREETING=(unset)\n"
M64 = (1 << 64) - 1

#: every engine, plus llvm with every loop a region compiled in the vCPU's thread
ENGINES = [*ACCELS, "llvm-regions"]


def _config(engine: str, **kw) -> RunConfig:
    if engine == "llvm-regions":
        return RunConfig(accel="llvm", region_threshold=1, region_workers=0, **kw)
    return RunConfig(accel=engine, **kw)


def _guarded(run, stop, seconds: float = 300.0):
    """``run()``, with ``stop()`` called from another thread if it has not returned after
    ``seconds`` (a generous bound: an engine that stops making progress fails the test
    instead of hanging the suite)."""
    timer = threading.Timer(seconds, stop)
    timer.start()
    try:
        return run()
    finally:
        timer.cancel()


def _run_machine(engine: str, program: str = HELLO, *, instret: int = 0,
                 stop_at: int | None = None, **cfg):
    """(RunResult, stdout, final architectural state) of a program started with
    ``machine.instret = instret``."""
    r, w = os.pipe()
    m = Machine(program, [program], config=_config(engine, **cfg), stdout=w)
    try:
        m.instret = instret
        res = _guarded(lambda: m.run(stop_at=stop_at), m.request_stop)
        os.close(w)
        w = None
        out = b""
        while chunk := os.read(r, 1 << 16):
            out += chunk
        return res, out, m.cpu.arch()
    finally:
        if w is not None:
            os.close(w)
        os.close(r)
        m.close()


# ---- region compiles and the vCPU thread -----------------------------------------------

def test_a_region_reply_while_the_vcpu_scans_its_jobs_is_safe():
    """A worker's reply arrives (in its reader thread) exactly while the vCPU thread walks
    the pending jobs to see whether a loop head is already covered: the reply must not
    change what the vCPU thread is iterating (it waits until the vCPU serves it)."""
    m = Machine(HELLO, [HELLO], config=RunConfig(accel="llvm", region_threshold=1,
                                                 region_workers=1))
    a = m.accel
    try:
        class RepliesWhileIterated:
            """A pending job's blocks: iterating them lets job 2's reply in, from another
            thread, and waits until it has been delivered."""

            def __iter__(self):
                t = threading.Thread(target=a._compiled, args=(2, None, None))
                t.start()
                t.join()
                return iter(())

        a._job_table[1] = (None, RepliesWhileIterated())
        a._job_table[2] = (None, [])
        assert a._covered(0x1000) is False
        assert set(a._job_table) == {1, 2}    # served later, on the vCPU thread
    finally:
        a._job_table.clear()
        a._ready.clear()
        m.close()


def test_finished_regions_do_not_end_the_run():
    """A region compiled by a worker is linked in while the guest runs: the run goes on
    (it returns to the machine only for the guest's syscalls)."""
    r = dbtlab.run(HELLO, accel="llvm", region_threshold=1, region_workers=1, cache=False)
    assert r.stdout == HELLO_OUT and r.status == 0
    assert r.stats["regions"] + r.stats["regions_dropped"] > 0
    assert r.stats["runs"] == r.stats["exits"]["ecall"]


@pytest.mark.parametrize("engine", ["interp", "llvm"])
def test_an_exit_request_just_before_a_run_is_not_lost(engine):
    """The main loop asks the vCPU to stop right after the machine looked for requests and
    before the accelerator started: that run stops before its first instruction (the
    request used to be forgotten by the interpreter, which then ran to the next syscall)."""
    code = [encode("addi", rd=10, rs1=10, imm=1), encode("ecall")]
    m = BareMachine(code, accel=engine)
    try:
        m.accel.request_exit()
        ex = m.run()
        assert (ex.name, ex.executed, m.cpu.pc, m.cpu.x[10]) == ("budget", 0, CODE_BASE, 0)
        ex = m.run()
        assert (ex.name, ex.executed, m.cpu.x[10]) == ("ecall", 1, 1)
    finally:
        m.close()


class _Load:
    """Artificial load for the duration of a with-block: a Python thread spinning on the
    GIL, a process spinning on a core, and thread switches 100x as frequent as usual, so
    that the workers' reader threads interleave with the vCPU thread at many points."""

    def __enter__(self):
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()
        self._proc = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        self._interval = sys.getswitchinterval()
        sys.setswitchinterval(self._interval / 100)
        return self

    def _spin(self) -> None:
        n = 0
        while not self._stop.is_set():
            n += 1

    def __exit__(self, *exc) -> None:
        sys.setswitchinterval(self._interval)
        self._stop.set()
        self._thread.join()
        self._proc.kill()
        self._proc.wait()


def _cold_region_runs(programs: list[str], rounds: int) -> None:
    """Cold runs (no persistent cache: every region goes to a worker) of shipped programs
    at their test arguments, regions at threshold 1, under load: every run's output,
    status and instruction count are exactly right."""
    cases = {p["name"]: (p, path) for p, _, path in guest_cases(("musl",))}
    instret = {}                  # the first tier's count (it depends on argv[0]'s length)
    for name in programs:
        prog, path = cases[name]
        instret[name] = dbtlab.run(path, prog["test"]["args"], accel="llvm",
                                   env=prog["env"], region_threshold=0).instret
    with _Load():
        for i in range(rounds):
            name = programs[i % len(programs)]
            prog, path = cases[name]
            expected = (GUESTS / prog["expected_stdout"]).read_bytes()
            r = dbtlab.run(path, prog["test"]["args"], accel="llvm", env=prog["env"],
                           region_threshold=1, region_workers=1, cache=False)
            assert (r.stdout, r.status, r.signal) == (expected, prog["exit_status"], None), \
                f"round {i}: {name}"
            assert r.instret == instret[name], f"round {i}: {name}"
            assert r.stats["runs"] == r.stats["exits"]["ecall"], f"round {i}: {name}"


def test_cold_runs_with_regions_under_load():
    _cold_region_runs(["hello", "matmul"], 4)


@pytest.mark.slow
def test_many_cold_runs_with_regions_under_load():
    _cold_region_runs(["hello", "matmul", "sha256", "qsort", "crc32", "setjmp"], 48)
