"""Interesting values the generator seeds into registers and memory.

FP special values of both formats (quiet and signalling NaNs, ±0, ±∞, subnormals, the
largest and smallest normals, values next to the integer conversion boundaries), singles
properly and improperly NaN-boxed, and boundary integers. Each pool is a tuple of raw bit
patterns, so picking one is a single ``random.choice``.
"""

from __future__ import annotations

import random
import struct

BOX = 0xFFFFFFFF00000000
M64 = (1 << 64) - 1


def _d(v: float) -> int:
    return struct.unpack("<Q", struct.pack("<d", v))[0]


def _s(v: float) -> int:
    return struct.unpack("<I", struct.pack("<f", v))[0]


#: double-precision specials (raw bits)
F64_SPECIAL: tuple[int, ...] = (
    0x0000000000000000, 0x8000000000000000,                     # ±0
    0x7FF0000000000000, 0xFFF0000000000000,                     # ±inf
    0x7FF8000000000000, 0xFFF8000000000000,                     # canonical qNaN, -qNaN
    0x7FF8000000000ABC, 0x7FFFFFFFFFFFFFFF,                     # qNaNs with payload
    0x7FF4000000000000, 0x7FF0000000000001, 0xFFF0000000000DEF,  # sNaNs
    0x0000000000000001, 0x800FFFFFFFFFFFFF, 0x0008000000000000,  # subnormals
    0x0010000000000000, 0x8010000000000000,                     # ±smallest normal
    0x7FEFFFFFFFFFFFFF, 0xFFEFFFFFFFFFFFFF,                     # ±largest normal
    _d(1.0), _d(-1.0), _d(0.5), _d(-0.5), _d(1.5), _d(2.5), _d(-2.5), _d(3.0), _d(0.1),
    _d(2.0 ** 31), _d(-(2.0 ** 31)), _d(2.0 ** 31 - 1), _d(-(2.0 ** 31) - 1), _d(2.0 ** 32),
    _d(2.0 ** 32 - 1), _d(2.0 ** 63), _d(-(2.0 ** 63)), _d(2.0 ** 64), _d(2.0 ** 63 - 1024),
    _d(-1.0e-310), _d(1e308), _d(4294967295.5), _d(-0.75), _d(0.4999999999999999),
)

#: single-precision specials (32-bit raw bits, not boxed)
F32_SPECIAL: tuple[int, ...] = (
    0x00000000, 0x80000000, 0x7F800000, 0xFF800000,             # ±0, ±inf
    0x7FC00000, 0xFFC00000, 0x7FC00ABC, 0x7FFFFFFF,             # qNaNs
    0x7FA00000, 0x7F800001, 0xFF800DEF,                         # sNaNs
    0x00000001, 0x807FFFFF, 0x00400000,                         # subnormals
    0x00800000, 0x80800000, 0x7F7FFFFF, 0xFF7FFFFF,             # smallest/largest normal
    _s(1.0), _s(-1.0), _s(0.5), _s(-0.5), _s(1.5), _s(2.5), _s(-2.5), _s(3.0), _s(0.1),
    _s(2.0 ** 31), _s(-(2.0 ** 31)), _s(2.0 ** 32), _s(2.0 ** 63), _s(-(2.0 ** 63)),
    _s(2.0 ** 64), _s(16777217.0), _s(-0.75), _s(2147483520.0),
)

#: boundary integers (64-bit two's complement)
INT_SPECIAL: tuple[int, ...] = (
    0, 1, 2, 3, 7, 31, 32, 63, 64, M64, M64 - 1, 1 << 63, (1 << 63) - 1, (1 << 63) + 1,
    1 << 31, (1 << 31) - 1, 0xFFFFFFFF80000000, 0xFFFFFFFF7FFFFFFF, (1 << 32) - 1, 1 << 32,
    (1 << 32) + 1, 0x00000000FFFFFFFE, 0xFFFFFFFFFFFF8000, 0x7FF, 0x800, 0xFFFFFFFFFFFFF800,
    0x8000000000000001, 0x0123456789ABCDEF, 0xFEDCBA9876543210, 0xAAAAAAAAAAAAAAAA,
)


def random_f(r: random.Random) -> int:
    """A 64-bit f register pattern: doubles, boxed singles, improperly boxed singles."""
    k = r.random()
    if k < 0.34:
        return r.choice(F64_SPECIAL)
    if k < 0.68:
        return BOX | r.choice(F32_SPECIAL)
    if k < 0.78:       # improperly NaN-boxed singles: upper bits not all ones
        low = r.choice(F32_SPECIAL)
        return r.choice((0, 0xFFFFFFFE00000000, 0x7FFFFFFF00000000,
                         r.getrandbits(32) << 32)) | low
    if k < 0.9:
        return _d(r.uniform(-1e6, 1e6) * 2.0 ** r.randint(-60, 60))
    if k < 0.95:
        return BOX | _s(r.uniform(-1e3, 1e3) * 2.0 ** r.randint(-30, 30))
    return r.getrandbits(64)


def random_x(r: random.Random) -> int:
    """A 64-bit integer register value: boundaries, small values, FP patterns, noise."""
    k = r.random()
    if k < 0.4:
        return r.choice(INT_SPECIAL)
    if k < 0.55:
        return r.randint(-64, 64) & M64
    if k < 0.7:
        return random_f(r)
    if k < 0.8:
        v = r.getrandbits(32)
        return v | (BOX if v >> 31 and r.random() < 0.7 else 0)
    return r.getrandbits(64)


def seed_memory(r: random.Random, size: int, density: float = 0.15) -> bytearray:
    """The scratch window's initial contents: noise with FP specials and boundary
    integers at aligned slots (so FP loads meet them)."""
    mem = bytearray(r.getrandbits(8 * size).to_bytes(size, "little"))
    for _ in range(int(size / 8 * density)):
        off = r.randrange(0, size, 4)
        k = r.random()
        if k < 0.35 and off + 8 <= size:
            mem[off:off + 8] = r.choice(F64_SPECIAL).to_bytes(8, "little")
        elif k < 0.75:
            mem[off:off + 4] = r.choice(F32_SPECIAL).to_bytes(4, "little")
        elif off + 8 <= size:
            mem[off:off + 8] = r.choice(INT_SPECIAL).to_bytes(8, "little")
    return mem


class Pools:
    """Precomputed draws (from a fixed seed, so every process has the same ones): picking
    a register value or a memory image is then an index, not a dozen random calls."""

    BITS = 12

    def __init__(self, size: int) -> None:
        r = random.Random(0x5EED)
        n = 1 << self.BITS
        self.f = [random_f(r) for _ in range(n)]
        self.x = [random_x(r) for _ in range(n)]
        self.mem = [bytes(seed_memory(r, size)) for _ in range(16)]
        self.specials = [v.to_bytes(8, "little") for v in F64_SPECIAL + INT_SPECIAL] + \
                        [v.to_bytes(4, "little") for v in F32_SPECIAL]

    def regs(self, r: random.Random, pool: list[int], fresh, count: int = 32) -> list[int]:
        """``count`` values: mostly from the pool, one in 32 drawn fresh."""
        bits = self.BITS + 5
        mask = (1 << bits) - 1
        big = r.getrandbits(bits * count)
        out = []
        for _ in range(count):
            k = big & mask
            big >>= bits
            out.append(fresh(r) if k & 31 == 0 else pool[k >> 5])
        return out

    def memory(self, r: random.Random, size: int) -> bytearray:
        """A memory image: a rotated pool image with a few fresh special values."""
        base = self.mem[r.getrandbits(4)]
        rot = r.randrange(0, size, 8)
        mem = bytearray(base[rot:] + base[:rot])
        sp = self.specials
        n, slots = len(sp), (size - 8) // 4
        for _ in range(12):
            v = sp[int(r.random() * n)]
            off = 4 * int(r.random() * slots)
            mem[off:off + len(v)] = v
        return mem


#: the special-value table every case places at the address in sp: fp_arith items load
#: their operands from it (so inf × 0 + qNaN, an sNaN into fmin, ... are likely), as
#: 8-byte slots: doubles, then singles NaN-boxed in memory, then improperly boxed singles
TABLE_F64: tuple[int, ...] = (0x0, 1 << 63, 0x7FF0000000000000, 0xFFF0000000000000,
                              0x7FF8000000000000, 0x7FF4000000000000, _d(1.0), _d(-1.5),
                              0x0000000000000001, 0x7FEFFFFFFFFFFFFF)
TABLE_F32: tuple[int, ...] = (0x0, 0x80000000, 0x7F800000, 0xFF800000, 0x7FC00000,
                              0x7FA00000, _s(1.0), _s(-1.5), 0x00000001, 0x7F7FFFFF)
TABLE_UNBOXED: tuple[int, ...] = (0x000000007F800000, 0x000000003F800000,
                                  0x7FFFFFFF7FA00000)
TABLE: tuple[int, ...] = TABLE_F64 + tuple(BOX | v for v in TABLE_F32) + TABLE_UNBOXED
