"""The one list of unicorn's known deviations (runtime/oracle/deviations.py) and its two
consumers: every entry is complete; each condition is exact (a near miss is not excused)
and its repair yields the reference's state; and the fuzzer and the lockstep difftest
excuse exactly the same conditions — each entry's triggering instruction, from the same
state, is excused by both under the same name, and reported by both under that name when
known deviations are off."""

from __future__ import annotations

import importlib.util
import struct

import pytest

from dbtlab.runtime.oracle import deviations as D
from dbtlab.runtime.oracle.bare import DATA_BASE
from dbtlab.runtime.oracle.deviations import BOX, KNOWN_DEVIATIONS, State, explain, repair
from dbtlab.runtime.oracle.difftest import difftest
from dbtlab.runtime.oracle.fuzz import Session
from dbtlab.runtime.oracle.fuzz.case import WINDOW, Case, Item
from dbtlab.translator.decode import decode, encode
from tests.conftest import ACCELS

HAS_UNICORN = "unicorn" in ACCELS and importlib.util.find_spec("unicorn") is not None
needs_unicorn = pytest.mark.skipif(not HAS_UNICORN, reason="the unicorn oracle is not available")

ONE_S = 0x3F800000
SC_VALUE = 0x9E40A02909492657      # its low word's sign extension is not the doubleword


def _sc(addr: int, **kw) -> dict:
    return dict(words=[encode("sc.w", rd=11, rs1=10, rs2=12, aq=0, rl=0)],
                x={10: addr, 12: 5}, **kw)


#: one triggering instruction and its initial state per known deviation
CASES = {
    "fminmax-snan": dict(words=[encode("fmin.d", rd=1, rs1=2, rs2=3)],
                         f={2: 0x7FF0000000000001, 3: 0x3FF0000000000000}),
    "single-not-nan-boxed": dict(words=[encode("fadd.s", rd=1, rs1=2, rs2=2, rm=0)],
                                 f={2: BOX | ONE_S}),
    "unboxed-single-input": dict(words=[encode("fsgnj.s", rd=1, rs1=2, rs2=2)], f={2: ONE_S}),
    "fma-inf-zero-qnan": dict(words=[encode("fmadd.d", rd=1, rs1=2, rs2=3, rs3=4, rm=0)],
                              f={2: 0x7FF0000000000000, 3: 0, 4: 0x7FF8000000000000}),
    "unboxed-single-input-x": dict(words=[encode("fclass.s", rd=10, rs1=1)], f={1: ONE_S}),
    "fma-inf-zero-qnan+single-not-nan-boxed": dict(
        words=[encode("fmadd.s", rd=3, rs1=1, rs2=2, rs3=4, rm=0)],
        f={1: 0xFFFFFFFF7F800000, 2: 0xFFFFFFFF00000000, 4: 0xFFFFFFFF7FC00000}),
    "fmv.w.x-copies-64-bits": dict(words=[encode("fmv.w.x", rd=1, rs1=10)],
                                   x={10: 0x123456789ABCDEF0}),
    "reserved-compressed-nop": dict(words=[0x8004, encode("addi", rd=10, rs1=0, imm=1)]),
    "sc-misaligned-no-fault": _sc(DATA_BASE + 0x101),
    "sc-writes-yet-fails": _sc(DATA_BASE + 0x100, res=DATA_BASE + 0x100,
                               mem={0x100: SC_VALUE.to_bytes(8, "little")}),
}


def _window(spec: dict) -> bytes:
    mem = bytearray(WINDOW)
    for off, data in spec.get("mem", {}).items():
        mem[off:off + len(data)] = data
    return bytes(mem)


def fuzz_case(spec: dict) -> Case:
    x, f = [0] * 32, [0] * 32
    for k, v in spec.get("x", {}).items():
        x[k] = v
    for k, v in spec.get("f", {}).items():
        f[k] = v
    mem = _window(spec)
    res = (0, 0, 0)
    if "res" in spec:
        off = spec["res"] - DATA_BASE
        res = (1, spec["res"], int.from_bytes(mem[off:off + 8], "little"))
    return Case([Item([w]) for w in spec["words"]], x, f, mem=mem, res=res)


# ---- the same case as a whole program, for difftest -----------------------------------

CODE_VADDR, TABLE_VADDR = 0x10000, 0x90000


def _words(ws: list[int]) -> bytes:
    return b"".join(w.to_bytes(2 if w & 3 != 3 else 4, "little") for w in ws)


def program(spec: dict, path) -> str:
    """A static RV64 ELF that sets up exactly the case's state (f and x registers from a
    table, the reservation with lr.d), runs the case's instructions and exits 0."""
    table = bytearray(528)
    for k, v in spec.get("x", {}).items():
        struct.pack_into("<Q", table, 8 * k, v)
    for k, v in spec.get("f", {}).items():
        struct.pack_into("<Q", table, 256 + 8 * k, v)
    struct.pack_into("<Q", table, 520, spec.get("res", 0))
    pro = [encode("lui", rd=31, imm=TABLE_VADDR)]
    pro += [encode("fld", rd=i, rs1=31, imm=256 + 8 * i) for i in range(32)]
    if "res" in spec:
        pro += [encode("ld", rd=1, rs1=31, imm=520), encode("lr.d", rd=1, rs1=1, aq=0, rl=0)]
    pro += [encode("ld", rd=i, rs1=31, imm=8 * i) for i in range(1, 32)]
    end = [encode("addi", rd=17, rs1=0, imm=93), encode("addi", rd=10, rs1=0, imm=0),
           encode("ecall")]
    code = _words(pro + spec["words"] + end)
    segs = [(CODE_VADDR, code, 5), (TABLE_VADDR, bytes(table), 4),
            (DATA_BASE, _window(spec), 6)]
    head = struct.pack("<4sBBBB8sHHIQQQIHHHHHH", b"\x7fELF", 2, 1, 1, 0, bytes(8), 2, 243, 1,
                       CODE_VADDR, 64, 0, 5, 64, 56, len(segs), 64, 0, 0)
    phdrs, body = b"", b""
    for i, (vaddr, data, flags) in enumerate(segs):
        off = 0x1000 * (i + 1)
        phdrs += struct.pack("<IIQQQQQQ", 1, flags, off, vaddr, vaddr, len(data), len(data),
                             0x1000)
        body += data.ljust(0x1000, b"\0")
    out = path / "case.elf"
    out.write_bytes((head + phdrs).ljust(0x1000, b"\0") + body)
    return str(out)


# ---- the list --------------------------------------------------------------------------

def test_every_deviation_is_complete_and_has_a_case():
    names = [d.name for d in KNOWN_DEVIATIONS]
    assert len(set(names)) == len(names) and set(CASES) == set(names)
    fields = {f for f in State.__dataclass_fields__}
    for d in KNOWN_DEVIATIONS:
        assert d.rule and d.condition and callable(d.check), d.name
        assert set(d.repair) <= fields and not ({"mem", "trap"} & set(d.repair)), d.name
        assert d.ends_run or d.repair, d.name     # a deviation it goes on from is repaired
        assert D.may_deviate(decode(CASES[d.name]["words"][0])), d.name


def _st(**kw) -> State:
    base = dict(x=(0,) * 32, f=(0,) * 32, pc=0x1000, fflags=0, frm=0)
    base.update(kw)
    return State(**base)


def _with(s: State, reg: str, i: int, v: int) -> State:
    t = list(getattr(s, reg))
    t[i] = v
    return s.but(**{reg: t})


def test_conditions_are_exact_and_repairs_restore_the_reference():
    fadd = decode(encode("fadd.s", rd=1, rs1=2, rs2=2, rm=0))
    before = _with(_st(), "f", 2, BOX | ONE_S)
    ref = _with(before, "f", 1, BOX | 0x40000000).but(pc=0x1004)
    orc = _with(ref, "f", 1, 0x40000000)
    dev = explain(fadd, before, ref, orc)
    assert dev is not None and dev.name == "single-not-nan-boxed"
    assert repair(dev, ref, orc) == ref
    # near misses: another low word, another register too, a flag, the memory, no box
    assert explain(fadd, before, ref, _with(ref, "f", 1, 0x40000001)) is None
    assert explain(fadd, before, ref, _with(orc, "x", 5, 1)) is None
    assert explain(fadd, before, ref, orc.but(fflags=1)) is None
    assert explain(fadd, before, ref.but(mem=b"a"), orc.but(mem=b"b")) is None
    assert explain(decode(encode("fadd.d", rd=1, rs1=2, rs2=2, rm=0)), before, ref,
                   orc) is None
    assert explain(fadd, before, ref, ref) is None                  # nothing to explain
    # sc.w after lr.d: only rd may differ, and only from a reference that succeeded
    sc = decode(CASES["sc-writes-yet-fails"]["words"][0])
    addr = DATA_BASE + 0x100
    before = _with(_st(res=(addr, SC_VALUE)), "x", 10, addr)
    ref = before.but(pc=0x1004, res=(), mem=b"stored")
    orc = _with(ref, "x", 11, 1)
    dev = explain(sc, before, ref, orc)
    assert dev is not None and dev.name == "sc-writes-yet-fails" and repair(dev, ref, orc) == ref
    assert explain(sc, before, ref, orc.but(mem=b"not stored")) is None
    assert explain(sc, before.but(res=(addr, SC_VALUE & 0xFFFFFFFF)), ref, orc) is None
    assert explain(sc, before.but(res=(addr + 8, SC_VALUE)), ref, orc) is None


def test_both_tools_consult_the_one_list():
    from dbtlab.runtime.oracle import difftest as T
    from dbtlab.runtime.oracle.fuzz import runner as R
    assert T.explain is R.explain is D.explain and T.repair is R.repair is D.repair
    assert importlib.util.find_spec("dbtlab.runtime.oracle.fuzz.oracle") is None


# ---- the same conditions, excused by both ----------------------------------------------

@needs_unicorn
@pytest.mark.parametrize("name", [d.name for d in KNOWN_DEVIATIONS])
def test_fuzzer_and_difftest_excuse_the_same_deviation(name, tmp_path):
    spec = CASES[name]
    dev = D.BY_NAME[name]
    s = Session(("interp", "unicorn"), known=False)
    try:
        v = s.run_alone(fuzz_case(spec))["unicorn"]
        assert not v.ok and v.cls == name
        s.known = True
        v = s.run_alone(fuzz_case(spec))["unicorn"]
        assert v.ok and [d for d, _, _ in v.excused] == [name]
    finally:
        s.close()
    prog = program(spec, tmp_path)
    assert difftest(prog, [], ("interp", "llvm")).ok          # the program is well formed
    r = difftest(prog, [], ("interp", "unicorn"), known_deviations=False)
    assert not r.ok and r.divergence.deviation == name, r.summary()
    assert f"known oracle deviation {name} (not excused)" in r.summary()
    r = difftest(prog, [], ("interp", "unicorn"))
    assert r.ok and dict(r.excused) == {name: 1}, r.summary()
    assert r.ended_at == (name if dev.ends_run else "")
    if not dev.ends_run:
        assert r.ended == {"interp": (0, None), "unicorn": (0, None)}
