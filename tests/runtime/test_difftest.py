"""Lockstep differential testing: no divergence on correct engines, and a planted bug is
caught at the exact step with a useful report."""

from __future__ import annotations

import pytest

from dbtlab.ir import llvm_emit
from dbtlab.runtime.oracle.difftest import difftest
from tests.conftest import ACCELS, GUESTS, guest_cases

PAIRS = [("interp", "llvm")] + ([("llvm", "unicorn")] if "unicorn" in ACCELS else [])


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
