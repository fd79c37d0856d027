"""The notebook-friendly API: run a program in one call and get its output and statistics.

    import dbtlab
    r = dbtlab.run("guests/bin/sha256", ["2048", "4"], accel="llvm")
    print(r.stdout.decode(), r.status, r.instret)
    print(r.stats["exits"])

``dbtlab.Machine`` is there for step-by-step control (run with an instruction limit,
inspect ``m.cpu``, switch accelerators).
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field

from dbtlab.runtime.config import RunConfig
from dbtlab.runtime.linux.loader import StartConfig
from dbtlab.runtime.machine import Machine, RunResult


@dataclass
class Result:
    """A finished run: the guest's output, how it ended, and what the engine did."""

    stdout: bytes
    stderr: bytes
    status: int | None
    signal: int | None
    instret: int
    wall: float
    message: str = ""
    stopped: bool = False
    stats: dict = field(default_factory=dict)
    profile: dict | None = None       # the profile document when run with profile=True

    @property
    def text(self) -> str:
        return self.stdout.decode(errors="replace")

    @property
    def exit_code(self) -> int:
        return 128 + self.signal if self.signal is not None else (self.status or 0)


def run(program: str, args: list[str] | tuple[str, ...] = (), *, accel: str = "llvm",
        env: dict[str, str] | list[str] | None = None, stdin: bytes = b"",
        config: RunConfig | None = None, start: StartConfig | None = None,
        **config_fields) -> Result:
    """Run a guest program to completion, capturing its stdout and stderr.

    ``env`` is the guest's whole environment (default: empty, for reproducible runs).
    Extra keyword arguments set ``RunConfig`` fields (``max_insns=...``, ``strace=True``,
    ``profile=True`` (then ``Result.profile`` holds the profile document),
    ``debug=frozenset({"in_asm"})``...).
    """
    cfg = config or RunConfig(accel=accel, **config_fields)
    if isinstance(env, dict):
        env = [f"{k}={v}" for k, v in env.items()]
    with tempfile.TemporaryFile() as fin, tempfile.TemporaryFile() as fout, \
            tempfile.TemporaryFile() as ferr:
        fin.write(stdin)
        fin.seek(0)
        m = Machine(program, [program, *args], env=list(env or []), config=cfg, start=start,
                    stdin=fin.fileno(), stdout=fout.fileno(), stderr=ferr.fileno())
        prof = None
        try:
            res: RunResult = m.run()
            if cfg.profile:
                prof = m.profile(res)
        finally:
            m.close()
        out = _read_all(fout)
        err = _read_all(ferr)
    return Result(out, err, res.status, res.signal, res.instret, res.wall, res.message,
                  res.stopped, res.stats, prof)


def _read_all(f) -> bytes:
    f.flush()
    os.lseek(f.fileno(), 0, os.SEEK_SET)
    chunks = []
    while True:
        b = os.read(f.fileno(), 1 << 20)
        if not b:
            return b"".join(chunks)
        chunks.append(b)
