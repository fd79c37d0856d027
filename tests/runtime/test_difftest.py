"""Lockstep differential testing: no divergence on correct engines, a planted bug is caught
at the exact step with a useful report, and unicorn's known deviations in a compiled
program are excused by name (or reported, with --no-known-deviations)."""

from __future__ import annotations

import pytest

from dbtlab.ir import llvm_emit
from dbtlab.runtime.oracle.difftest import difftest
from tests.conftest import ACCELS, GUESTS, ROOT, guest_cases

PAIRS = [("interp", "llvm")] + ([("llvm", "unicorn")] if "unicorn" in ACCELS else [])
needs_unicorn = pytest.mark.skipif("unicorn" not in ACCELS, reason="the unicorn oracle is "
                                                                   "not available")


@pytest.mark.parametrize("pair", PAIRS, ids="-".join)
@pytest.mark.parametrize("name", ["sha256", "atomics", "setjmp", "smc", "nbody", "segv",
                                  "illegal", "exit3"])
def test_programs_do_not_diverge(pair, name, tmp_path):
    prog = next(p for p, libc, _ in guest_cases(("musl",)) if p["name"] == name)
    args = [a.replace("{tmpfile}", str(tmp_path / "f")) for a in prog["test"]["args"]]
    if name in ("sha256", "nbody"):           # keep the lockstep run short
        args = {"sha256": ["512", "1"], "nbody": ["20"]}[name]
    env = [f"{k}={v}" for k, v in (prog.get("env") or {}).items()]
    r = difftest(str(GUESTS / prog["binaries"]["musl"]), args, pair, env=env)
    assert r.ok, r.summary()
    assert r.instructions > 1000 and r.steps > 100
    assert len(set(r.outputs.values())) == 1


def test_planted_lowering_bug_is_caught(monkeypatch):
    """Make the JIT compute xor as or: the first block that xors differing bits diverges."""
    real = llvm_emit.LLVMBuilder.binop

    def broken(self, op, x, y):
        return real(self, "or" if op == "xor" else op, x, y)

    monkeypatch.setattr(llvm_emit.LLVMBuilder, "binop", broken)
    r = difftest(str(GUESTS / "bin/sha256"), ["64", "1"], ("interp", "llvm"))
    assert not r.ok
    d = r.divergence
    text = d.report()
    assert text.startswith(f"DIVERGENCE at step {d.step} (after {d.instret} instructions), "
                           f"block at pc {d.pc:#x} <__copy_tls>:")
    assert any(t.startswith(("xor", "not")) for _, t in d.insns)   # the culprit is listed
    reg = next(x for x in d.differences if x.what.startswith("x"))
    assert reg.values["interp"] != reg.values["llvm"]
    assert "last steps:" in text and len(d.history) > 0


def test_insn_granularity_steps_one_instruction():
    r = difftest(str(GUESTS / "bin/exit3"), [], ("interp", "llvm"), granularity="insn")
    assert r.ok and r.steps == r.instructions         # one instruction per step


def test_cli_difftest(tmp_path):
    from tests.runtime.test_cli import dbtlab as cli
    r = cli("difftest", "--accels", "interp,llvm", str(GUESTS / "bin/exit3"))
    assert r.returncode == 0
    assert r.stdout.decode().startswith("no divergence: ")
    r = cli("difftest", "--accels", "llvm", str(GUESTS / "bin/exit3"))
    assert r.returncode == 1 and "needs two or more" in r.stderr.decode()


# ---- unicorn's known deviations in a whole program -------------------------------------

NANBOX = ROOT / "tests" / "fixtures" / "nanbox"
#: what the spec (and dbtlab) prints for tests/fixtures/src/nanbox.c
NANBOX_OUT = """\
fmv.w.x                      ffffffff3f800000
fadd.s unboxed               ffffffff7fc00000
fadd.s boxed                 ffffffff40000000
fcvt.s.d                     ffffffff40000000
fsgnj.s unboxed              ffffffff7fc00000
fclass.s unboxed             0000000000000200
fmin.s snan                  ffffffff3f800000
fmin.s snan fflags           0000000000000010
fmax.d snan                  4000000000000000
fmax.d snan fflags           0000000000000010
sc.w after lr.d: stored      0000000000000001
sc.w after lr.d: rd          0000000000000000
"""
NANBOX_EXCUSED = {"fmv.w.x-copies-64-bits": 1, "unboxed-single-input": 2,
                  "single-not-nan-boxed": 2, "unboxed-single-input-x": 1, "fminmax-snan": 2,
                  "sc-writes-yet-fails": 1}


@needs_unicorn
@pytest.mark.parametrize("pair", [("llvm", "unicorn"), ("interp", "unicorn")], ids="-".join)
def test_known_deviations_in_a_program_are_excused_by_name(pair):
    """NaN-boxing, fmin/fmax with a signalling NaN and sc.w after lr.d, as a compiled
    program runs them: each of unicorn's deviations is excused by name (the list the
    fuzzer uses), unicorn's state is repaired, so it prints what the spec says."""
    r = difftest(str(NANBOX), [], pair)
    assert r.ok, r.summary()
    assert dict(r.excused) == NANBOX_EXCUSED
    assert r.outputs[pair[0]].decode() == NANBOX_OUT == r.outputs["unicorn"].decode()
    r = difftest(str(NANBOX), [], pair, known_deviations=False)
    assert not r.ok and not r.excused
    d = r.divergence
    assert [t for _, t in d.insns] == ["fmv.w.x ft0,a0"] and d.deviation == \
        "fmv.w.x-copies-64-bits"
    assert [(x.what, x.values) for x in d.differences] == [
        ("f0 (ft0)", {pair[0]: 0xFFFFFFFF3F800000, "unicorn": 0x123456783F800000})]


@needs_unicorn
def test_cli_difftest_names_known_deviations():
    from tests.runtime.test_cli import dbtlab as cli
    r = cli("difftest", "--accels", "llvm,unicorn", str(NANBOX))
    out = r.stdout.decode()
    assert r.returncode == 0 and out.startswith("no divergence: "), out
    assert "excused known oracle deviations: fminmax-snan (2), fmv.w.x-copies-64-bits (1), " \
        "sc-writes-yet-fails (1), single-not-nan-boxed (2), unboxed-single-input (2), " \
        "unboxed-single-input-x (1)" in out
    r = cli("difftest", "--accels", "llvm,unicorn", "--no-known-deviations", str(NANBOX))
    out = r.stdout.decode()
    assert r.returncode == 1 and out.startswith("DIVERGENCE at step "), out
    assert "known oracle deviation fmv.w.x-copies-64-bits (not excused)" in out
