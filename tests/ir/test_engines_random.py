"""Random straight-line instruction sequences give bit-identical results on every
accelerator: registers, FP state, memory, exit reason, fault address, instruction count.

The interpreter is the reference; this is a fixed-seed version of the differential fuzzer
that runs in the default suite (the fuzzer itself compares against unicorn too)."""

from __future__ import annotations

import random
import struct

import pytest

from dbtlab.runtime.oracle.bare import DATA_BASE, DATA_SIZE, BareMachine
from dbtlab.translator.decode import TABLE, decode, encode
from tests.conftest import ACCELS

CONTROL = {"jal", "jalr", "beq", "bne", "blt", "bge", "bltu", "bgeu", "ecall", "ebreak",
           "fence.i"}
ENCODINGS = [e for e in TABLE if e.base not in CONTROL]

F64 = [0, 1 << 63, 0x7FF0000000000000, 0xFFF0000000000000, 0x7FF8000000000000,
       0x7FF4000000000000, 0x0000000000000001, 0x000FFFFFFFFFFFFF, 0x3FF0000000000000,
       0xBFF0000000000000, 0x7FEFFFFFFFFFFFFF, 0x43E0000000000000, 0xC3E0000000000000,
       0x41DFFFFFFFC00000, 0x41EFFFFFFFE00000]
F32 = [0, 0x80000000, 0x7F800000, 0xFF800000, 0x7FC00000, 0x7FA00000, 0x00000001,
       0x007FFFFF, 0x3F800000, 0x7F7FFFFF, 0x4F000000, 0xCF000000, 0x3F000000]
X = [0, 1, (1 << 64) - 1, 1 << 63, (1 << 63) - 1, 1 << 31, (1 << 31) - 1, (1 << 32) - 1,
     0xFFFFFFFF80000000]


def rand_f(r: random.Random) -> int:
    k = r.random()
    if k < 0.3:
        return r.choice(F64)
    if k < 0.6:
        return 0xFFFFFFFF00000000 | r.choice(F32 + [r.getrandbits(32)])
    if k < 0.8:
        v = r.choice([1.5, -2.25, 1e300, 1e-300, 3.0, 0.1, -0.5, 2.5, 123456.789, 1e-310])
        return struct.unpack("<Q", struct.pack("<d", v))[0]
    return r.getrandbits(64)


def rand_x(r: random.Random) -> int:
    k = r.random()
    if k < 0.3:
        return r.choice(X)
    if k < 0.6:
        return DATA_BASE + r.randrange(-16, DATA_SIZE + 16)   # some just outside
    return r.getrandbits(64)


def rand_insn(r: random.Random) -> int:
    while True:
        e = r.choice(ENCODINGS)
        w = e.match | (r.getrandbits(8 * e.length) & ~e.mask)
        if not decode(w).is_illegal:
            return w


def run_case(accel: str, code: bytes, xs, fs, fcsr):
    m = BareMachine(code, accel=accel)
    try:
        for i in range(1, 32):
            m.cpu.x[i] = xs[i]
        for i in range(32):
            m.cpu.f[i] = fs[i]
        m.cpu.fcsr = fcsr
        ex = m.run(1000)
        return {"exit": ex.name, "executed": ex.executed, "pc": m.cpu.pc,
                "x": list(m.cpu.x), "f": list(m.cpu.f), "fflags": m.cpu.fflags,
                "frm": m.cpu.frm, "res": (m.cpu.res_valid, m.cpu.res_addr),
                "fault": (ex.fault_kind, ex.fault_addr) if ex.name == "fault" else None,
                "mem": m.mem.peek(DATA_BASE, DATA_SIZE)}
    finally:
        m.close()


def make_case(seed: int):
    r = random.Random(seed)
    words = [rand_insn(r) for _ in range(r.randint(1, 10))]
    code = b"".join(w.to_bytes(2 if w & 3 != 3 else 4, "little") for w in words)
    code += encode("ecall").to_bytes(4, "little")
    fcsr = r.choice([0, 0x20, 0x40, 0x60, 0x80, 0xE0]) | r.randrange(32)
    return code, [rand_x(r) for _ in range(32)], [rand_f(r) for _ in range(32)], fcsr


@pytest.mark.parametrize("accel", [a for a in ACCELS if a != "interp"])
@pytest.mark.parametrize("chunk", range(4))
def test_random_sequences_match_interpreter(accel, chunk):
    for seed in range(chunk * 100, chunk * 100 + 100):
        code, xs, fs, fcsr = make_case(seed)
        want = run_case("interp", code, xs, fs, fcsr)
        got = run_case(accel, code, xs, fs, fcsr)
        if got != want:
            diff = {k: (want[k], got[k]) for k in want if want[k] != got[k] and k != "mem"}
            names = [decode(int.from_bytes(code[i:i + 4], "little")).mnemonic
                     for i in range(0, len(code), 2)][:1]
            pytest.fail(f"seed {seed}: {accel} differs from interp "
                        f"({'memory, ' if want['mem'] != got['mem'] else ''}{sorted(diff)}): "
                        f"{code.hex()} first={names}")
