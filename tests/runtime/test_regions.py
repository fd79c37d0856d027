"""Second-tier regions give exactly the first tier's results: at threshold 1 (every loop
becomes a region as early as possible), compiled in-process and in worker processes, with
precise faults (rolled back and replayed), self-modifying code and exact instruction
limits."""

from __future__ import annotations

import pytest

import dbtlab
from dbtlab.runtime.oracle.bare import CODE_BASE, BareMachine
from dbtlab.runtime.config import RunConfig
from dbtlab.runtime.linux.memory import PROT_EXEC, PROT_READ, PROT_WRITE
from dbtlab.translator.decode import encode
from tests.conftest import REGION_TIERS, GUESTS, guest_cases

PROGRAMS = ["sha256", "qsort", "matmul", "nbody", "crc32", "alloc", "atomics", "smc",
            "setjmp", "segv", "strings"]


def _case(name):
    return next(p for p, libc, _ in guest_cases(("musl",)) if p["name"] == name)


@pytest.mark.parametrize("name,workers", [(p, 0) for p in PROGRAMS] +
                         [(p, 1) for p in ("sha256", "smc", "segv")])
def test_regions_at_threshold_one_match_the_first_tier(name, workers, tmp_path):
    prog = _case(name)
    path = str(GUESTS / prog["binaries"]["musl"])
    args = [a.replace("{tmpfile}", str(tmp_path / "f")) for a in prog["test"]["args"]]
    env = prog.get("env") or {}
    base = dbtlab.run(path, args, accel="llvm", env=env, tiers=REGION_TIERS, region_threshold=0)
    r = dbtlab.run(path, args, accel="llvm", env=env, tiers=REGION_TIERS, region_threshold=1,
                   region_workers=workers)
    assert (r.stdout, r.status, r.signal, r.instret) == \
        (base.stdout, base.status, base.signal, base.instret)
    if workers == 0:
        assert r.stats["regions"] > 0


def test_fault_inside_a_region_is_rolled_back_and_precise():
    """A loop stores through a pointer that walks off the end of the data window: the
    store that faults is inside a region; memory and registers must be exactly as if the
    loop had run instruction by instruction up to that store."""
    from dbtlab.runtime.oracle.bare import DATA_BASE, DATA_SIZE
    code = [encode("addi", rd=5, rs1=0, imm=0),              # t0 = counter
            encode("sd", rs1=10, rs2=5, imm=0),               # loop: *a0 = t0
            encode("addi", rd=5, rs1=5, imm=1),
            encode("addi", rd=10, rs1=10, imm=8),
            encode("jal", rd=0, imm=-12),
            encode("ecall")]
    results = {}
    for th in (0, 1):
        m = BareMachine(code, accel="llvm", config=RunConfig(
            tiers=REGION_TIERS, region_threshold=th, region_workers=0))
        try:
            m.cpu.x[10] = DATA_BASE
            ex = m.run()
            results[th] = (ex.name, ex.fault_addr, ex.executed, m.cpu.pc, list(m.cpu.x),
                           m.mem.peek(DATA_BASE, DATA_SIZE))
            if th:
                assert m.accel.stats.region_rollbacks >= 1
        finally:
            m.close()
    assert results[1] == results[0]
    assert results[0][:2] == ("fault", DATA_BASE + DATA_SIZE)


@pytest.mark.parametrize("n", [1000, 12345, 200001])
def test_instruction_limit_is_exact_inside_regions(n):
    path = str(GUESTS / "bin/sha256")
    states = []
    for th in (0, 1):
        from dbtlab.runtime.machine import Machine
        m = Machine(path, [path, "2048", "2"], config=RunConfig(
            accel="llvm", max_insns=n, tiers=REGION_TIERS, region_threshold=th, region_workers=0),
            stdout=open("/dev/null", "w").fileno())
        try:
            r = m.run()
            assert r.stopped and m.instret == n
            states.append(m.cpu.arch())
        finally:
            m.close()
    assert states[0] == states[1]


def test_code_rewritten_under_a_region_drops_it():
    body = CODE_BASE + 8
    code = [encode("addi", rd=10, rs1=0, imm=0), encode("addi", rd=11, rs1=0, imm=50),
            encode("addi", rd=10, rs1=10, imm=1), encode("addi", rd=11, rs1=11, imm=-1),
            encode("bne", rs1=11, rs2=0, imm=-8), encode("ecall")]
    m = BareMachine(code, accel="llvm", code_prot=PROT_READ | PROT_WRITE | PROT_EXEC,
                    config=RunConfig(tiers=REGION_TIERS, region_threshold=1, region_workers=0))
    try:
        assert m.run().name == "ecall" and m.cpu.x[10] == 50
        assert m.accel.stats.regions >= 1
        m.mem.write(body, encode("addi", rd=10, rs1=10, imm=3).to_bytes(4, "little"))
        m.cpu.pc = CODE_BASE
        assert m.run().name == "ecall" and m.cpu.x[10] == 150
    finally:
        m.close()


def test_second_run_loads_regions_and_blocks_from_the_persistent_cache(tmp_path):
    """Regions are cached like blocks; and forming them never shifts the slot numbers or
    module names baked into later first-tier modules, so every block module hits too."""
    path = str(GUESTS / "bin/crc32")
    runs = [dbtlab.run(path, ["4096", "40"], accel="llvm", tiers=REGION_TIERS, region_threshold=50,
                       region_workers=0, cache_dir=str(tmp_path)) for _ in range(2)]
    cold, warm = (r.stats for r in runs)
    assert runs[0].stdout == runs[1].stdout and runs[0].instret == runs[1].instret
    assert cold["regions"] > 0 and cold["region_cache_hits"] == 0
    assert warm["regions"] == cold["regions"]
    assert warm["region_cache_hits"] == warm["regions"]
    assert warm["cache_hits"] == warm["modules"] == cold["modules"]


def test_faulting_load_in_a_storeless_region_replays_from_its_entry():
    """A region without stores still records its entry as the checkpoint pc: entered from
    a first-tier block whose fault marker left another pc in the state, a rollback must
    replay from the region's entry (found at threshold 1: x10 came out 1, not 3)."""
    from dbtlab.runtime.oracle.bare import DATA_BASE, DATA_SIZE
    end = DATA_BASE + DATA_SIZE
    code = [encode("addi", rd=10, rs1=10, imm=1),             # loop: x10 += 1
            encode("ld", rd=7, rs1=8, imm=0),                 # faults at the window's end
            encode("addi", rd=8, rs1=8, imm=0x7F8),
            encode("addi", rd=8, rs1=8, imm=8),
            encode("bne", rs1=8, rs2=0, imm=-16),
            encode("ecall")]
    out = {}
    for th in (0, 1):
        m = BareMachine(code, accel="llvm", config=RunConfig(
            tiers=REGION_TIERS, region_threshold=th, region_workers=0))
        try:
            m.cpu.x[8] = end - 0x1000
            ex = m.run()
            out[th] = (ex.name, ex.fault_addr, ex.executed, m.cpu.pc, list(m.cpu.x))
            if th:
                assert m.accel.stats.region_rollbacks >= 1
        finally:
            m.close()
    assert out[1] == out[0]
    assert out[0][:3] == ("fault", end, 11) and out[0][4][10] == 3
