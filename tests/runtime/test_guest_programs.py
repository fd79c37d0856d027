"""Every shipped guest program, under every accelerator, gives its expected output and exit
status (expected outputs come from the same C sources built for the host)."""

from __future__ import annotations

import pytest

import dbtlab
from tests.conftest import GUESTS, guest_cases


def _run(prog: dict, path: str, accel: str, tmp_path):
    args = [a.replace("{tmpfile}", str(tmp_path / "guest.tmp")) for a in prog["test"]["args"]]
    return dbtlab.run(path, args, accel=accel, env=prog.get("env") or {})


@pytest.mark.parametrize("prog,libc,path", guest_cases(),
                         ids=[f"{p['name']}-{libc}" for p, libc, _ in guest_cases()])
def test_guest_program(prog, libc, path, accel, tmp_path):
    r = _run(prog, path, accel, tmp_path)
    expected = (GUESTS / prog["expected_stdout"]).read_bytes()
    assert r.stdout == expected
    if prog["signal"] is None:
        assert (r.status, r.signal) == (prog["exit_status"], None), r.message
    else:
        assert (r.status, r.signal) == (None, prog["signal"])
        assert f"at pc 0x" in r.message


@pytest.mark.parametrize("name", ["sha256", "atomics", "nbody"])
def test_engines_agree_on_instruction_count(name, tmp_path):
    prog = next(p for p, libc, _ in guest_cases(("musl",)) if p["name"] == name)
    path = str(GUESTS / prog["binaries"]["musl"])
    counts = {a: _run(prog, path, a, tmp_path).instret for a in ("interp", "llvm")}
    assert len(set(counts.values())) == 1, counts
