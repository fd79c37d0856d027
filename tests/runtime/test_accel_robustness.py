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
from dbtlab.ir.state import FAULT_FETCH_MISALIGNED
from dbtlab.runtime.config import RunConfig
from dbtlab.runtime.machine import Machine
from dbtlab.runtime.oracle.bare import CODE_BASE, BareMachine
from dbtlab.translator.decode import decode, encode
from tests.conftest import ACCELS, GUESTS, REGION_TIERS, guest_cases

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
    (it returns to the machine only for the guest's syscalls). The guest's work grows until
    a region arrives before it ends (stencil blocks make short guests finish first)."""
    sha = str(GUESTS / "bin/sha256")
    for size in (2048, 65536, 1 << 20, 1 << 23):
        r = dbtlab.run(sha, [str(size), "4"], accel="llvm", tiers=REGION_TIERS,
                       region_threshold=1, region_workers=1, cache=False)
        assert r.status == 0 and r.stdout.startswith(b"sha256(\"abc\") = ba7816bf")
        assert r.stats["runs"] == r.stats["exits"]["ecall"]
        if r.stats["regions"] + r.stats["regions_dropped"] > 0:
            break
    assert r.stats["regions"] + r.stats["regions_dropped"] > 0, "no region in 4 sizes"


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


def test_a_dead_region_worker_answers_its_jobs_and_is_replaced():
    """A worker process that dies (killed, out of memory) answers the jobs it had with an
    error, so that the vCPU thread drops them instead of waiting forever (their loops
    would never get a region), and the next job starts a new worker."""
    import queue
    from dbtlab.ir.region_worker import WorkerPool
    ir = "define i64 @f(i64 %x) {\n  %y = add i64 %x, 1\n  ret i64 %y\n}\n"
    replies: queue.Queue = queue.Queue()
    pool = WorkerPool(1, lambda job, obj, err: replies.put((job, obj is not None, err)))
    try:
        pool.submit(1, ir, 2, 2)
        pool.workers[0].proc.kill()            # long before it can have compiled job 1
        assert replies.get(timeout=300) == (1, False, "worker exited")
        pool.submit(2, ir, 2, 2)
        assert replies.get(timeout=300) == (2, True, None)
        assert len(pool.workers) == 1 and pool.workers[0].alive
    finally:
        pool.close()
    assert replies.empty()                    # closing answers nothing


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


# ---- a misaligned pc -------------------------------------------------------------------

def _with_entry(tmp_path, entry: int) -> str:
    """A copy of hello whose ELF header's e_entry is ``entry``."""
    data = bytearray((GUESTS / "bin/hello").read_bytes())
    struct.pack_into("<Q", data, 24, entry)
    path = tmp_path / f"hello-entry-{entry:x}"
    path.write_bytes(bytes(data))
    return str(path)


def _hello_entry() -> int:
    return struct.unpack_from("<Q", (GUESTS / "bin/hello").read_bytes(), 24)[0]


@pytest.mark.parametrize("engine", ENGINES)
def test_an_odd_entry_point_is_a_misaligned_fetch(engine, tmp_path):
    """e_entry = 1 used to kill the host under llvm (the empty jump-cache marker is 1);
    any odd pc is the instruction-address-misaligned trap, which Linux delivers as
    SIGBUS (BUS_ADRALN) at the pc; an even one is fetched (C: 2-byte alignment)."""
    start = _hello_entry()
    for entry, expected in [
            (1, "guest killed by SIGBUS: misaligned instruction fetch from address 0x1 "
                "at pc 0x1"),
            (start + 1, f"guest killed by SIGBUS: misaligned instruction fetch from address "
                        f"{start + 1:#x} at pc {start + 1:#x} <_start+0x1>"),
            (start + 2, f"guest killed by SIGILL: illegal instruction at pc {start + 2:#x} "
                        f"<_start+0x2>: 8193ffff .4byte 0x8193ffff")]:
        path = _with_entry(tmp_path, entry)
        r = dbtlab.run(path, config=_config(engine))
        sig = signal.SIGILL if entry == start + 2 else signal.SIGBUS
        assert (r.signal, r.message, r.instret, r.stdout) == (sig, expected, 0, b"")


def test_the_cli_reports_an_odd_entry_point_and_dies_by_sigbus(tmp_path):
    path = _with_entry(tmp_path, 1)
    p = subprocess.run([sys.executable, "-c", "import sys; from dbtlab.runtime.cli import "
                        "main; sys.exit(main())", "run", "--accel", "llvm", path],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode in (-signal.SIGBUS, 128 + signal.SIGBUS)
    assert p.stderr == ("dbtlab: guest killed by SIGBUS: misaligned instruction fetch from "
                        "address 0x1 at pc 0x1\n")


@pytest.mark.parametrize("engine", ENGINES)
def test_an_odd_pc_set_from_python_is_a_misaligned_fetch(engine):
    """The pc of a stopped machine made odd (as a snapshot or a debugger could): the next
    run faults at once, retiring nothing, also where the code there is translated."""
    for pc in (1, 3):
        out = os.open(os.devnull, os.O_WRONLY)
        m = Machine(HELLO, [HELLO], config=_config(engine), stdout=out)
        try:
            assert m.run(stop_at=2000).stopped
            hot = m.cpu.pc
            for bad in (pc, hot + 1):
                m.cpu.pc = bad
                r = m.run()
                assert (r.signal, r.instret, m.cpu.pc) == (signal.SIGBUS, 2000, bad)
                assert r.message.startswith(
                    f"guest killed by SIGBUS: misaligned instruction fetch from address "
                    f"{bad:#x} at pc {bad:#x}")
                assert ":" not in r.message.split(f"at pc {bad:#x}")[1]   # no insn shown
        finally:
            m.close()
            os.close(out)


@pytest.mark.parametrize("engine", ENGINES)
def test_a_bare_odd_pc_exits_with_the_misaligned_fetch_fault(engine):
    code = [encode("addi", rd=10, rs1=0, imm=1), encode("ecall")]
    for pc in (1, CODE_BASE + 1, CODE_BASE + 3):
        m = BareMachine(code, accel=_config(engine).accel, config=_config(engine))
        try:
            assert m.run().name == "ecall"          # translated (llvm) and cached
            m.cpu.pc = pc
            ex = m.run()
            assert (ex.name, ex.fault_kind, ex.fault_addr, ex.executed, m.cpu.pc) == \
                ("fault", FAULT_FETCH_MISALIGNED, pc, 0, pc)
        finally:
            m.close()


@pytest.mark.parametrize("engine", ENGINES)
def test_jalr_clears_bit_zero_of_its_target(engine):
    """jalr to an odd address goes to the address with bit 0 cleared (the spec), from the
    first tier and from a region (a loop of 20 iterations at threshold 1)."""
    code = [encode("addi", rd=6, rs1=0, imm=20),          # 0:  t1 = iterations
            encode("auipc", rd=5, imm=0),                 # 4:  t0 = CODE_BASE + 4
            encode("addi", rd=5, rs1=5, imm=13),          # 8:  t0 = CODE_BASE + 17 (odd)
            encode("jalr", rd=1, rs1=5, imm=0),           # 12: -> CODE_BASE + 16
            encode("addi", rd=10, rs1=10, imm=1),         # 16: a0 += 1
            encode("jalr", rd=0, rs1=1, imm=9),           # 20: ra + 9 = CODE_BASE + 25 -> 24
            encode("addi", rd=11, rs1=11, imm=1),         # 24: a1 += 1
            encode("addi", rd=6, rs1=6, imm=-1),          # 28
            encode("bne", rs1=6, rs2=0, imm=-28),         # 32: -> CODE_BASE + 4
            encode("ecall")]                              # 36
    m = BareMachine(code, accel=_config(engine).accel, config=_config(engine))
    try:
        ex = m.run()
        assert (ex.name, m.cpu.pc, ex.executed) == ("ecall", CODE_BASE + 36, 1 + 20 * 8)
        assert (m.cpu.x[10], m.cpu.x[11], m.cpu.x[1]) == (20, 20, CODE_BASE + 16)
    finally:
        m.close()


def test_branch_and_jump_offsets_are_always_even():
    """Why only a pc set from outside can be odd: no encoding of jal, a branch or their
    compressed forms has an odd offset (bit 0 is implicit), and jalr clears bit 0."""
    import random
    rng = random.Random(1)
    seen = set()
    for _ in range(20000):
        w = rng.getrandbits(32)
        for word in ((w & ~0x7F) | 0x6F, (w & ~0x7F) | 0x63, w & 0xFFFF):
            insn = decode(word)
            if insn.name in ("jal", "beq", "bne", "blt", "bge", "bltu", "bgeu"):
                seen.add(insn.mnemonic)
                assert insn.imm & 1 == 0, hex(word)
    assert {"jal", "beq", "bgeu", "c.j", "c.beqz", "c.bnez"} <= seen


# ---- instruction counts near 2**64 -------------------------------------------------------

@pytest.mark.parametrize("engine", ENGINES)
def test_hello_runs_from_an_instret_about_to_wrap(engine):
    """instret is the guest's 64-bit counter on every engine: it wraps modulo 2**64, and
    the run is the same as from 0 (the llvm engine used to stop making progress)."""
    n = _run_machine(engine)[0].instret
    for start in (2**64 - 1000, 2**64 - 1, 2**64 - n, 2**63):
        res, out, _ = _run_machine(engine, instret=start)
        assert (out, res.status, res.stopped) == (HELLO_OUT, 0, False), hex(start)
        assert res.instret == (start + n) & M64, hex(start)


def test_the_engines_agree_on_a_stop_across_the_wrap():
    """A limit past 2**64 stops exactly that many instructions later, in the same state."""
    states = set()
    for engine in ENGINES:
        res, out, arch = _run_machine(engine, instret=2**64 - 2000, stop_at=2**64 + 1500)
        assert (res.stopped, res.instret) == (True, 1500), engine
        states.add((out, repr(arch)))
    assert len(states) == 1


def test_max_insns_below_the_current_count_stops_at_once():
    res, out, _ = _run_machine("llvm", instret=2**64 - 10, max_insns=5)
    assert (res.stopped, res.instret, out) == (True, 2**64 - 10, b"")


@pytest.mark.parametrize("engine", ["interp", "llvm", "llvm-regions"])
def test_rdinstret_wraps_as_the_counter_does(engine):
    """A loop reads instret 40 times while the count passes 2**64: each read is the number
    of instructions retired before it, modulo 2**64, in the first tier and in regions.
    (unicorn reads the host's time-stamp counter: a known deviation.)"""
    code = [encode("addi", rd=5, rs1=0, imm=40),
            encode("csrrs", rd=10, rs1=0, csr=0xC02),     # loop: a0 = instret
            encode("add", rd=11, rs1=11, rs2=10),         # a1 += a0
            encode("addi", rd=5, rs1=5, imm=-1),
            encode("bne", rs1=5, rs2=0, imm=-12),
            encode("ecall")]
    start = 2**64 - 60
    m = BareMachine(code, accel=_config(engine).accel, config=_config(engine))
    try:
        m.instret = start
        ex = _guarded(m.run, m.accel.request_exit)
        assert (ex.name, ex.executed) == ("ecall", 1 + 40 * 4)
        reads = [(start + 1 + 4 * k) & M64 for k in range(40)]
        assert (m.cpu.x[10], m.cpu.x[11]) == (reads[-1], sum(reads) & M64)
    finally:
        m.close()


def test_a_bounded_run_from_an_instret_about_to_wrap_is_exact():
    """A budget from a count 5 short of 2**64: the accelerator retires exactly that."""
    code = [encode("addi", rd=10, rs1=10, imm=1), encode("jal", rd=0, imm=-4)]
    for engine in ENGINES:
        m = BareMachine(code, accel=_config(engine).accel, config=_config(engine))
        try:
            m.instret = 2**64 - 5
            ex = _guarded(lambda: m.run(1001), m.accel.request_exit)
            assert (ex.name, ex.executed, m.cpu.x[10], m.cpu.pc) == \
                ("budget", 1001, 501, CODE_BASE + 4), engine
        finally:
            m.close()
