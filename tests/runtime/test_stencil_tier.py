"""The stencil tier inside the llvm accelerator: the same results as the LLVM tier and the
interpreter, every block it can serve served by it, the rest by the LLVM tier."""

from __future__ import annotations

import random

import pytest

import dbtlab
from dbtlab.ir.state import EXIT_NAMES
from dbtlab.runtime.config import RunConfig
from dbtlab.runtime.oracle.bare import CODE_BASE, DATA_BASE, DATA_SIZE, BareMachine
from dbtlab.translator.decode import encode
from tests.conftest import GUESTS, guest_cases
from tests.ir.test_engines_random import rand_insn, rand_x

STENCIL = ("stencil",)
LLVM = ("llvm",)


@pytest.mark.parametrize("prog, libc, path", guest_cases(),
                         ids=lambda v: v if isinstance(v, str) and "/" not in v else None)
def test_every_guest_program_gives_the_llvm_tiers_results_on_stencils(prog, libc, path,
                                                                      tmp_path):
    args = [a.replace("{tmpfile}", str(tmp_path / "f")) for a in prog["test"]["args"]]
    env = prog.get("env") or {}
    s = dbtlab.run(path, args, accel="llvm", env=env, tiers=STENCIL)
    (tmp_path / "f").unlink(missing_ok=True)
    t = dbtlab.run(path, args, accel="llvm", env=env, tiers=LLVM)
    assert (s.stdout, s.status, s.signal, s.instret, s.message) == \
        (t.stdout, t.status, t.signal, t.instret, t.message)
    assert s.stdout == (GUESTS / prog["expected_stdout"]).read_bytes()
    st = s.stats
    # every block is a stencil block but those holding a CSR instruction (glibc reads frm
    # and fflags) and the budget-limited variants
    assert st["stencil_blocks"] >= 0.95 * st["blocks"], st
    assert t.stats["stencil_blocks"] == 0


def _run(code: list[int], tiers, regs: dict[int, int], data: bytes = b""):
    m = BareMachine(code, accel="llvm", config=RunConfig(tiers=tiers, region_threshold=0),
                    data=data)
    try:
        for r, v in regs.items():
            m.cpu.x[r] = v
        ex = m.run()
        return (EXIT_NAMES.get(ex.reason), ex.fault_addr, ex.executed, m.cpu.pc,
                list(m.cpu.x), list(m.cpu.f), m.cpu.fflags, m.mem.peek(DATA_BASE, DATA_SIZE)), \
            m.accel.stats
    finally:
        m.close()


@pytest.mark.parametrize("seed", range(3))
def test_random_straight_line_code_matches_the_llvm_tier(seed):
    """Random instruction sequences (every non-control encoding, registers pointing into
    and just outside the data window, so loads and stores fault too)."""
    r = random.Random(seed)
    for _ in range(40):
        code = [rand_insn(r) for _ in range(r.randrange(1, 12))] + [encode("ecall")]
        regs = {k: rand_x(r) for k in range(1, 32)}
        data = bytes(r.getrandbits(8) for _ in range(64))
        got, st = _run(code, STENCIL, regs, data)
        want, _ = _run(code, LLVM, regs, data)
        assert got == want, [hex(w) for w in code]


def test_csr_instructions_are_left_to_the_llvm_tier():
    code = [encode("addi", rd=5, rs1=0, imm=3),
            encode("csrrs", rd=6, rs1=0, csr=0x002),      # frrm
            encode("jal", rd=0, imm=8),
            encode("ecall"),
            encode("addi", rd=7, rs1=5, imm=1),
            encode("jal", rd=0, imm=-8)]
    got, st = _run(code, STENCIL, {})
    assert got[0] == "ecall" and got[4][7] == 4
    assert st.stencil_blocks == 2 and st.blocks == 3     # the csr block went to LLVM
    assert st.stencil_refused == {"no stencil for csrrs": 1}


def test_a_fault_inside_a_stencil_block_names_the_faulting_instruction():
    """No pc is stored before memory accesses: the host pc of the fault is mapped back to
    the guest instruction; the registers are those before it, the count exact."""
    code = [encode("addi", rd=5, rs1=0, imm=1),
            encode("addi", rd=6, rs1=0, imm=2),
            encode("ld", rd=7, rs1=10, imm=0),
            encode("addi", rd=8, rs1=0, imm=3),
            encode("ecall")]
    for base in (DATA_BASE + DATA_SIZE, 1 << 40):
        got, st = _run(code, STENCIL, {10: base})
        assert got[0] == "fault" and got[1] == base
        assert got[3] == CODE_BASE + 8                      # pc: the ld
        assert got[4][5:9] == [1, 2, 0, 0] and got[2] == 2
        want, _ = _run(code, LLVM, {10: base})
        assert got == want
        assert st.host_faults == 1 and st.stencil_blocks >= 1


def test_stats_and_cli_name_the_tiers():
    from tests.runtime.test_cli import dbtlab as cli
    r = cli("run", "--tiers", "stencil", "--stats", str(GUESTS / "bin/sha256"), "64", "1")
    assert r.returncode == 0
    err = r.stderr.decode()
    assert "stencil tier:" in err and "us/block" in err
    r = cli("run", "--tiers", "stencil", "--stats", str(GUESTS / "bin/glibc/nbody"), "100")
    assert r.returncode == 0
    llvm_line = next(ln for ln in r.stderr.decode().splitlines() if "llvm tier:" in ln)
    assert "no stencil for csrrs" in llvm_line           # glibc's libm reads fcsr
    r = cli("run", "--tiers", "stencil,nope", str(GUESTS / "bin/sha256"), "64", "1")
    assert r.returncode != 0
    assert r.stderr.decode().strip() == ("dbtlab: --tiers: unknown tier(s) nope; valid: "
                                         "stencil, llvm, region")
