"""The differential fuzzer (runtime.fuzz, ``dbtlab fuzz``): the generator covers the
encoding table and keeps memory in the window; rewriting code between cases never runs a
stale translation; a fixed-seed campaign finds no unexplained divergence; with the known
deviations switched off it finds each of unicorn's FP bugs by itself and minimises them; a
planted lowering bug is found, minimised, written and replayed; committed reproducers
replay."""

from __future__ import annotations

import importlib.util
import json
import time

import pytest

from dbtlab.ir import llvm_emit
from dbtlab.ir.state import EXIT_FAULT
from dbtlab.runtime.oracle.bare import CODE_BASE, DATA_BASE
from dbtlab.runtime.oracle.fuzz import (DEFAULT_WEIGHTS, FuzzConfig, Generator, Session,
                                 parse_weights, replay, run_campaign)
from dbtlab.runtime.oracle.fuzz.case import WINDOW, Case, Item, Layout, case_from_json, case_to_json
from dbtlab.runtime.oracle.deviations import KNOWN_DEVIATIONS, reserved_c_nop
from dbtlab.runtime.oracle.fuzz.runner import CODE_SIZE, Engine
from dbtlab.runtime.linux.memory import PAGE_SIZE
from dbtlab.translator.decode import TABLE, decode, encode
from tests.conftest import ACCELS, ROOT

FIXTURES = ROOT / "tests" / "fixtures" / "fuzz"
HAS_UNICORN = "unicorn" in ACCELS and importlib.util.find_spec("unicorn") is not None
needs_unicorn = pytest.mark.skipif(
    not HAS_UNICORN, reason="the unicorn oracle is not available (unicorn not importable, or "
                            "not among tests.conftest.ACCELS)")
#: unicorn's four FP bugs that random FP code meets all the time (runtime/oracle/deviations.py)
FP_BUGS = {"fminmax-snan", "single-not-nan-boxed", "unboxed-single-input", "fma-inf-zero-qnan"}


def all_classes() -> dict[str, float]:
    return {k: 1.0 if v == 0 else v for k, v in DEFAULT_WEIGHTS.items()}


# ---- generator -------------------------------------------------------------------------

def test_generator_covers_every_encoding_and_rounding_mode():
    g = Generator(all_classes())
    names, rms, illegal, compressed = set(), set(), 0, 0
    for i in range(1500):
        for w in g.case(5, i).layout()[0]:
            insn = decode(w)
            names.add(insn.mnemonic)
            illegal += insn.is_illegal
            compressed += insn.compressed
            if insn.enc is not None and any(f.name == "rm" for f in insn.enc.operands):
                rms.add(insn.rm)
            if insn.reason.startswith("reserved rounding mode"):
                rms.add(int(insn.reason.split()[-1]))
    assert {e.name for e in TABLE} <= names
    assert rms >= {0, 1, 2, 3, 4, 5, 6, 7}           # 5 and 6 only as illegal encodings
    assert illegal > 20 and compressed > 1000


def test_generator_is_deterministic():
    a, b = Generator(), Generator()
    for i in (0, 7, 123):
        ca, cb = a.case(9, i), b.case(9, i)
        assert ca.layout()[0] == cb.layout()[0]
        assert (ca.x, ca.f, ca.fcsr, ca.mem, ca.res, ca.budget) == \
            (cb.x, cb.f, cb.fcsr, cb.mem, cb.res, cb.budget)
    assert a.case(9, 1).layout()[0] != a.case(10, 1).layout()[0]


def test_memory_accesses_stay_in_the_window_misaligned_and_page_crossing():
    w = dict(DEFAULT_WEIGHTS, fault=0, misaligned_atomic=0, sc_misaligned=0, illegal=0,
             system=0, load=20, store=20, fload=10, fstore=10)
    g = Generator(w)
    e = Engine("interp")
    kinds = set()
    cases = [g.case(11, i) for i in range(300)]
    lay, rest = Layout.place(cases, CODE_BASE, CODE_SIZE)
    e.load_code(lay.code)
    for c, pc in zip(lay.cases, lay.pcs):
        assert e.run_case(c, pc).exit[0] != EXIT_FAULT
        for it in c.items:
            if it.cls not in ("load", "store", "fload", "fstore"):
                continue
            insn = decode(it.words[0])
            size = {"b": 1, "h": 2, "w": 4, "d": 8}[insn.name.rstrip("u")[-1]]
            addr = c.x[insn.rs1] + insn.imm
            assert DATA_BASE <= addr and addr + size <= DATA_BASE + WINDOW
            if addr % size:
                kinds.add("misaligned")
            if addr // PAGE_SIZE != (addr + size - 1) // PAGE_SIZE:
                kinds.add("page-crossing")
    assert kinds == {"misaligned", "page-crossing"}


def test_weights():
    w = parse_weights("alu=0, fp_arith=5")
    assert w["alu"] == 0 and w["fp_arith"] == 5 and w["mul"] == DEFAULT_WEIGHTS["mul"]
    with pytest.raises(ValueError, match="unknown class 'nope'.*alu"):
        parse_weights("nope=1")
    with pytest.raises(ValueError, match="every class has weight 0"):
        parse_weights(",".join(f"{k}=0" for k in DEFAULT_WEIGHTS))
    g = Generator(parse_weights(",".join(f"{k}=0" for k in DEFAULT_WEIGHTS if k != "mul")))
    c = g.case(1, 1)
    assert {decode(w).name for w in c.layout()[0][:-1]} <= {e.name for e in TABLE
                                                             if e.ext == "rv64m"}


def test_reproducer_round_trip():
    c = Generator().case(4, 2)
    d = json.loads(json.dumps(case_to_json(c)))
    back = case_from_json(d)
    assert back.layout()[0] == c.layout()[0]
    assert (back.x, back.f, back.fcsr, back.mem, back.res, back.budget) == \
        (c.x, c.f, c.fcsr, c.mem, c.res, c.budget)


# ---- engines: rewriting code between cases ---------------------------------------------

@pytest.mark.parametrize("accel", ACCELS)
def test_new_code_replaces_translations(accel):
    """Cases reuse one machine: code written over translated code must run, not the stale
    translation — for single cases and for whole batches at the same addresses."""
    e = Engine(accel)
    x = [0] * 32

    def case(k: int) -> Case:
        items = [Item([encode("addi", rd=10, rs1=10, imm=k)]),
                 Item([encode("c.addi", rd=10, rs1=10, imm=k % 32)]),
                 Item([encode("bne", rs1=10, rs2=0, imm=0)], target=4),
                 Item([encode("addi", rd=11, rs1=0, imm=1)]),
                 Item([encode("xori", rd=12, rs1=10, imm=k)])]
        return Case(items, list(x), [0] * 32)

    for k in (1, 2, 3, 1, 5):
        c = case(k)
        for _ in range(2):
            e.load_code(c.code())
            e.prepare([CODE_BASE])
            s = e.run_case(c, CODE_BASE).arch()
            assert (s["x"][10], s["x"][12]) == (k + k % 32, (k + k % 32) ^ k)
    for k in (7, 9):
        cases = [case(k + j) for j in range(40)]
        lay, _ = Layout.place(cases, CODE_BASE, CODE_SIZE)
        e.load_code(lay.code)
        e.prepare(lay.entries)
        for j, (c, pc) in enumerate(zip(lay.cases, lay.pcs)):
            assert e.run_case(c, pc).arch()["x"][10] == k + j + (k + j) % 32
    if accel == "llvm":
        assert e.accel.stats.invalidated > 0
    e.close()


# ---- campaigns -------------------------------------------------------------------------

CAMPAIGN_ACCELS = ("interp", "llvm", "unicorn") if HAS_UNICORN else ("interp", "llvm")


def test_fixed_seed_campaign_has_no_unexplained_divergence(tmp_path):
    """Several thousand cases, default weights, every engine against the interpreter (and
    unicorn's known deviations excused exactly where they occur)."""
    t0 = time.perf_counter()
    r = run_campaign(FuzzConfig(seed=2026, cases=3000, accels=CAMPAIGN_ACCELS,
                                out=str(tmp_path)))
    assert r.ok, r.summary()
    assert r.total.cases == 3000 and r.total.diverged == 0 and not list(tmp_path.iterdir())
    assert r.total.clean > 500
    assert r.total.insns > 3000 * 10
    if HAS_UNICORN:
        assert r.total.excused_cases > 500
        assert set(r.total.excused) >= {"single-not-nan-boxed", "unboxed-single-input",
                                        "fminmax-snan"}
    print(f"\n{r.summary()}\n({time.perf_counter() - t0:.1f} s)")


@needs_unicorn
def test_teeth_each_unicorn_fp_bug_is_found_and_minimised(tmp_path):
    """With the known deviations switched off, default weights find each of unicorn's
    FP bugs by themselves, each minimised to a few instructions, and each reproducer
    replays to the same class."""
    r = run_campaign(FuzzConfig(seed=1, cases=1000, accels=("interp", "unicorn"),
                                known_deviations=False, out=str(tmp_path)))
    assert not r.ok
    assert FP_BUGS <= set(r.total.classes), r.summary()
    for cls in FP_BUGS:
        doc = r.docs[cls]
        assert doc["minimised"] and len(doc["words"]) <= 6, doc["disassembly"]
        assert doc["difference"]["deviation"] == cls and doc["difference"]["rule"]
        rr = replay(r.files[cls])
        assert rr.same and rr.verdict.cls == cls
        assert replay(r.files[cls], known_deviations=True).ok    # excused when known


@pytest.mark.parametrize("tier", ["llvm", "stencil"])
def test_planted_lowering_bug_is_found_minimised_and_replayed(monkeypatch, tmp_path, tier):
    """The JIT computes xor as or — in the LLVM tier's lowering, or in the stencils (a
    library generated afresh from the broken lowering): the campaign finds it, minimises
    it to the xor and the end of the case, and the reproducer replays to the same
    divergence."""
    from dbtlab.ir.stencil_emit import StencilBuilder
    owner = llvm_emit.LLVMBuilder if tier == "llvm" else StencilBuilder
    real = owner.binop

    def broken(self, op, x, y):
        return real(self, "or" if op == "xor" else op, x, y)

    monkeypatch.setattr(owner, "binop", broken)
    if tier == "stencil":        # a library of its own, generated from the broken lowering
        monkeypatch.setenv("DBTLAB_CACHE_DIR", str(tmp_path / "cache"))
    r = run_campaign(FuzzConfig(seed=3, cases=60, accels=("interp", "llvm"),
                                out=str(tmp_path), max_minimise=3, tiers=(tier,)))
    assert not r.ok and r.total.diverged > 3
    xors = [k for k, d in r.docs.items() if d["minimised"] and
            "xor" in d["difference"]["instruction"]["mnemonic"]]
    assert xors, r.summary()
    cls = xors[0]
    doc = json.loads(open(r.files[cls]).read())
    assert doc["format"] == "dbtlab-fuzz-reproducer" and doc["engines"] == ["interp", "llvm"]
    assert len(doc["words"]) <= 3, doc["disassembly"]       # (pointer set-up,) xor, ecall
    assert doc["difference"]["instruction"]["mnemonic"] == cls.split(":")[0]
    diff = doc["difference"]["differences"][0]
    assert diff["kind"] in ("x", "memory") and diff["values"][0] != diff["values"][1]
    rr = replay(r.files[cls])
    assert rr.same, rr.report()
    monkeypatch.undo()
    assert replay(r.files[cls]).ok                   # fixed: the reproducer passes


@needs_unicorn
def test_committed_reproducer_replays():
    path = str(FIXTURES / "fminmax-snan.json")
    r = replay(path)
    assert r.same and r.verdict.cls == "fminmax-snan"
    assert "fmax.s" in r.report() and "reproduced" in r.report()
    ok = replay(path, known_deviations=True)
    assert ok.ok and [d for d, _, _ in ok.verdict.excused] == ["fminmax-snan"]


@needs_unicorn
def test_lr_d_then_sc_w_is_unicorns_deviation():
    """The fuzzer's reproducer: sc.w after lr.d whose low word still matches. dbtlab stores
    and reports success; unicorn stores the same word yet reports failure (the spec allows
    either outcome, not both at once)."""
    path = str(FIXTURES / "lrsc-mixed-size.json")
    r = replay(path, known_deviations=False)
    assert r.same and r.verdict.cls == "sc-writes-yet-fails"
    assert [d.kind for d in r.verdict.final_diffs] == ["x"]  # memory agrees: both stored
    ok = replay(path, known_deviations=True)
    assert ok.ok and [d for d, _, _ in ok.verdict.excused] == ["sc-writes-yet-fails"]


# ---- unicorn deviations the fuzzer found (in runtime/oracle/deviations.py) --------------

def _one(words: list[int], **state) -> Case:
    x = [0] * 32
    f = [0] * 32
    for k, v in state.pop("x", {}).items():
        x[k] = v
    for k, v in state.pop("f", {}).items():
        f[k] = v
    return Case([Item([w]) for w in words], x, f, **state)


SUPPLEMENT_CASES = {
    "unboxed-single-input-x": _one([encode("fclass.s", rd=10, rs1=1)], f={1: 0x3F800000}),
    "fmv.w.x-copies-64-bits": _one([encode("fmv.w.x", rd=1, rs1=10)],
                                   x={10: 0x123456789ABCDEF0}),
    "reserved-compressed-nop": _one([0x8004, encode("addi", rd=10, rs1=0, imm=1)]),
    "sc-misaligned-no-fault": _one([encode("sc.w", rd=11, rs1=10, rs2=12, aq=0, rl=0)],
                                   x={10: DATA_BASE + 0x101, 12: 5}),
    "sc-writes-yet-fails": _one([encode("sc.w", rd=11, rs1=10, rs2=12, aq=0, rl=0)],
                                x={10: DATA_BASE + 0x100, 12: 5},
                                res=(1, DATA_BASE + 0x100, 0x9E40A02909492657),
                                mem=bytes(0x100) + (0x9E40A02909492657).to_bytes(8, "little")
                                + bytes(WINDOW - 0x108)),
    "fma-inf-zero-qnan+single-not-nan-boxed": _one(
        [encode("fmadd.s", rd=3, rs1=1, rs2=2, rs3=4, rm=0)],
        f={1: 0xFFFFFFFF7F800000, 2: 0xFFFFFFFF00000000, 4: 0xFFFFFFFF7FC00000}),
}


def test_supplement_cases_cover_the_deviations_the_fuzzer_found():
    assert set(SUPPLEMENT_CASES) | FP_BUGS == {d.name for d in KNOWN_DEVIATIONS}
    for w in (0x8000, 0x8004, 0x9FFC, 0x9C41, 0x9C61, 0x9C7D):
        assert reserved_c_nop(w) and decode(w).is_illegal
    assert not reserved_c_nop(0x9C01)                  # c.subw: defined


@needs_unicorn
@pytest.mark.parametrize("name", sorted(SUPPLEMENT_CASES))
def test_supplement_deviation_is_reproduced_and_excused_exactly(name):
    c = SUPPLEMENT_CASES[name]
    s = Session(("interp", "unicorn"), known=False)
    try:
        v = s.run_alone(c)["unicorn"]
        assert not v.ok and v.cls == name and v.step.executed == 0
        s.known = True
        v = s.run_alone(c)["unicorn"]
        assert v.ok and [d for d, _, _ in v.excused] == [name]
    finally:
        s.close()


# ---- command line and workers ----------------------------------------------------------

def test_cli_fuzz(tmp_path):
    from tests.runtime.test_cli import dbtlab as cli
    r = cli("fuzz", "--seed", "3", "--cases", "60", "--accels", "interp,llvm", "--out",
            str(tmp_path))
    out = r.stdout.decode()
    assert r.returncode == 0, r.stderr.decode()
    assert "60 cases on interp,llvm" in out and "cases/s" in out
    assert "instructions compared/s" in out and "no divergence" in out
    assert "fuzz: 60/60 cases" in r.stderr.decode()
    r = cli("fuzz", "--cases", "1", "--accels", "interp,qemu")
    assert r.returncode == 1 and "unknown accelerator(s) qemu" in r.stderr.decode()
    r = cli("fuzz", "--cases", "1", "--weights", "bogus=1")
    assert r.returncode == 1 and "unknown class 'bogus'" in r.stderr.decode()
    if HAS_UNICORN:
        r = cli("fuzz", "--replay", str(FIXTURES / "fminmax-snan.json"))
        assert r.returncode == 1
        assert "class fminmax-snan" in r.stdout.decode() and "reproduced" in r.stdout.decode()


def test_parallel_workers_agree_with_one():
    cfg = dict(seed=8, cases=120, accels=("interp", "llvm"), out=None, chunk=40)
    one = run_campaign(FuzzConfig(jobs=1, **cfg))
    two = run_campaign(FuzzConfig(jobs=2, **cfg))
    assert one.ok and two.ok
    assert (one.total.cases, one.total.clean, one.total.insns) == \
        (two.total.cases, two.total.clean, two.total.insns)


@pytest.mark.slow
@pytest.mark.parametrize("accels", [("llvm", "unicorn"), ("interp", "llvm")],
                         ids=",".join)
def test_long_campaign(accels):
    if "unicorn" in accels and not HAS_UNICORN:
        pytest.skip("the unicorn oracle is not available")
    r = run_campaign(FuzzConfig(seed=77, cases=40000, accels=accels, jobs=2, out=None))
    assert r.ok, r.summary()


def test_engine_that_raises_is_a_finding(monkeypatch, tmp_path):
    """An accelerator raising (here: the LLVM tier cannot lower urem while translating) does
    not stop the campaign: the case is a divergence of class crash:ENGINE:EXCEPTION, the
    engine is replaced, and the reproducer is minimised to the instruction."""
    real = llvm_emit.LLVMBuilder.binop

    def broken(self, op, x, y):
        if op == "urem":
            raise RuntimeError("planted: no urem")
        return real(self, op, x, y)

    monkeypatch.setattr(llvm_emit.LLVMBuilder, "binop", broken)
    r = run_campaign(FuzzConfig(seed=5, cases=80, accels=("interp", "llvm"),
                                out=str(tmp_path), max_minimise=1, tiers=("llvm",)))
    assert r.total.cases == 80 and r.total.classes.get("crash:llvm:RuntimeError")
    assert r.total.clean > 20                        # the other cases still ran
    doc = r.docs["crash:llvm:RuntimeError"]
    assert doc["minimised"] and len(doc["words"]) == 2
    assert decode(int(doc["words"][0], 16)).name in ("remu", "remuw")
    assert "planted: no urem" in doc["difference"]["crash"]
    assert replay(r.files["crash:llvm:RuntimeError"]).same


def test_second_tier_regions_are_fuzzed_too():
    """--llvm-regions N: loops in the cases become second-tier regions (O2, registers in
    SSA) and are compared like everything else."""
    from dbtlab.runtime.oracle.fuzz.campaign import Worker
    cfg = FuzzConfig(seed=21, cases=200, accels=("interp", "llvm"), out=None,
                     llvm_regions=2, weights=parse_weights("branch=15"))
    w = Worker(cfg)
    try:
        r = w.run_chunk(0, 200)
        st = w.session.engines["llvm"].accel.stats
        assert r.diverged == 0 and r.clean == 200, r.classes
        assert st.regions > 5
    finally:
        w.close()
