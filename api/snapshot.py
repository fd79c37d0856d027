"""Snapshots from Python: savevm / loadvm, a snapshot store, resuming under any engine.

    from dbtlab import snapshot

    # run, saving after exactly 300000 and 600000 guest instructions
    r = snapshot.run("guests/bin/sha256", ["2048", "4"], store="snaps.db",
                     save_at=[300_000, 600_000], accel="interp")
    r.saved                                  # ['sha256-300000', 'sha256-600000']
    snapshot.list_snapshots("snaps.db")      # SnapshotInfo: tag, instret, size, ...

    # resume under another engine: only the output produced after the snapshot
    r2 = snapshot.resume("snaps.db", "sha256-300000", accel="llvm")

    # step-by-step: a Machine in the snapshot's state
    m = snapshot.loadvm("snaps.db", "sha256-300000", accel="unicorn")
    m.run(stop_at=400_000); m.cpu.arch()
    snapshot.savevm(m, "snaps.db", "mine")   # save it again
    snapshot.restore(m, "snaps.db", "mine")  # rewind the same machine in place

Plain stream files (what ``dbtlab snapshot export`` writes) work the same way with
``save_stream`` / ``load_stream``. A snapshot taken under any accelerator resumes under any
other: the state is architectural, translated code is never stored.
"""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass, field
from typing import Callable, Iterable

from dbtlab.api import Result
from dbtlab.runtime.vm import vmstate as V
from dbtlab.runtime.config import RunConfig
from dbtlab.runtime.errors import DbtError
from dbtlab.runtime.vm.snapshots import SnapshotInfo, SnapshotStore, StoreError, check_tag

log = logging.getLogger(__name__)

__all__ = ["SnapshotStore", "SnapshotInfo", "open_store", "savevm", "loadvm", "restore",
           "save_stream", "load_stream", "run", "resume", "run_saving", "list_snapshots",
           "delete", "export", "import_stream", "default_tag", "diff", "SnapshotError"]

SnapshotError = V.SnapshotError


def open_store(store: str | SnapshotStore, *, create: bool = True) -> SnapshotStore:
    """A SnapshotStore for a path (or the store itself)."""
    if isinstance(store, SnapshotStore):
        return store
    return SnapshotStore(os.fspath(store), create=create)


class _Using:
    """Open a store for one call unless the caller passed an open one."""

    def __init__(self, store, create: bool = True) -> None:
        self.given = isinstance(store, SnapshotStore)
        self.store = open_store(store, create=create)

    def __enter__(self) -> SnapshotStore:
        return self.store

    def __exit__(self, *exc) -> None:
        if not self.given:
            self.store.close()


def default_tag(machine, prefix: str | None = None) -> str:
    """``<program name>-<instructions retired>``, e.g. ``sha256-300000`` (bytes of a
    program name that is not UTF-8 are escaped: a tag is text)."""
    return V.printable(f"{prefix or os.path.basename(machine.program.path)}-"
                       f"{machine.instret}")


def savevm(machine, store: str | SnapshotStore, tag: str | None = None) -> SnapshotInfo:
    """Save a stopped machine (between ``run`` calls) into a store as ``tag``."""
    with _Using(store) as s:
        return s.savevm(machine, tag or default_tag(machine))


def loadvm(store: str | SnapshotStore, tag: str, *, accel: str = "llvm",
           config: RunConfig | None = None, program: str | None = None, stdin: int = 0,
           stdout: int = 1, stderr: int = 2):
    """A new Machine in the state of snapshot ``tag``, running under ``accel`` (or
    ``config``). ``stdin``/``stdout``/``stderr`` are the host descriptors the guest's
    standard streams continue on. ``program`` overrides where the ELF is (same SHA-256)."""
    with _Using(store, create=False) as s:
        snap = s.load(tag)
    return V.instantiate(snap, config=config or RunConfig(accel=accel), program=program,
                         stdin=stdin, stdout=stdout, stderr=stderr)


def restore(machine, store: str | SnapshotStore, tag: str) -> None:
    """Put an existing machine (same program) back into the state of ``tag``: all or
    nothing; its accelerator drops every translation."""
    with _Using(store, create=False) as s:
        snap = s.load(tag)
    V.restore(machine, snap)


def save_stream(machine, path: str) -> int:
    """Write the machine's state as a plain stream file; returns its size."""
    return V.write_file(V.capture(machine), path)


def load_stream(path: str, *, accel: str = "llvm", config: RunConfig | None = None,
                program: str | None = None, stdin: int = 0, stdout: int = 1,
                stderr: int = 2):
    """A new Machine from a plain stream file (see ``loadvm``)."""
    snap = V.read_file(path)
    return V.instantiate(snap, config=config or RunConfig(accel=accel), program=program,
                         stdin=stdin, stdout=stdout, stderr=stderr)


def list_snapshots(store: str | SnapshotStore) -> list[SnapshotInfo]:
    with _Using(store, create=False) as s:
        return s.list()


def delete(store: str | SnapshotStore, tag: str) -> int:
    """Delete a snapshot; returns the number of pages freed."""
    with _Using(store, create=False) as s:
        return s.delete(tag)


def export(store: str | SnapshotStore, tag: str, path: str) -> int:
    with _Using(store, create=False) as s:
        return s.export(tag, path)


def import_stream(store: str | SnapshotStore, path: str, tag: str | None = None
                  ) -> SnapshotInfo:
    with _Using(store) as s:
        return s.import_stream(path, tag)


def diff(store: str | SnapshotStore, tag_a: str, tag_b: str) -> list[str]:
    """How two stored machine states differ (registers, pages, process), one line per
    difference; empty when identical. For bisecting a divergence between engines: resume
    a reference checkpoint under another engine up to the next checkpoint's count, save,
    and diff the two."""
    with _Using(store, create=False) as s:
        return V.diff(s.load(tag_a), s.load(tag_b))


# ---- running with snapshots --------------------------------------------------------------------
def parse_save_point(text: str) -> tuple[int, str | None]:
    """``N`` or ``N:TAG`` (the --savevm-at syntax)."""
    n, sep, tag = text.partition(":")
    try:
        count = int(n.replace("_", ""), 0)
    except ValueError:
        raise DbtError(f"--savevm-at {text!r}: expected N or N:TAG with N an instruction "
                       "count") from None
    if count < 0:
        raise DbtError(f"--savevm-at {text!r}: the instruction count must be >= 0")
    if sep and not tag.strip():
        raise DbtError(f"--savevm-at {text!r}: empty tag")
    if sep:
        try:
            check_tag(tag)
        except StoreError as e:
            raise DbtError(f"--savevm-at {V.printable(text)}: {e}") from None
    return count, (tag if sep else None)


def run_saving(machine, store: SnapshotStore, save_at: Iterable[tuple[int, str | None]] = (),
               every: int | None = None, *, prefix: str | None = None,
               on_save: Callable[[SnapshotInfo], None] | None = None):
    """Run ``machine`` to the end, stopping after exactly each requested instruction count
    to save a snapshot (``save_at``: (count, tag or None); ``every``: each multiple of N).
    Returns (RunResult of the last segment, [SnapshotInfo...]). Counts already passed (a
    machine resumed from a later snapshot) are skipped with a warning."""
    points: dict[int, list[str | None]] = {}
    for n, tag in save_at:
        points.setdefault(n, []).append(tag)
    for n in sorted(points):
        if n < machine.instret:
            log.warning("savevm at %d skipped: the machine is already at %d instructions",
                        n, machine.instret)
            del points[n]
    if every is not None and every <= 0:
        raise DbtError("--savevm-every must be > 0")
    saved: list[SnapshotInfo] = []
    wall = 0.0
    every_next = (machine.instret // every + 1) * every if every else None
    while True:
        cands = list(points) + ([every_next] if every_next is not None else [])
        if not cands:
            res = machine.run()
            res.wall += wall
            return res, saved
        nxt = min(cands)
        if nxt > machine.instret:
            res = machine.run(stop_at=nxt)
            wall += res.wall
            if not res.stopped or machine.instret != nxt:
                res.wall = wall
                for n in sorted(points):
                    log.warning("savevm at %d not reached: the guest %s after %d "
                                "instructions", n, "stopped" if res.stopped else "ended",
                                machine.instret)
                return res, saved
        tags = points.pop(nxt, [])
        if every_next == nxt:
            every_next += every
            tags = tags or [None]
        for tag in tags:
            info = store.savevm(machine, tag or default_tag(machine, prefix))
            saved.append(info)
            if on_save is not None:
                on_save(info)


@dataclass
class SavingResult(Result):
    """A finished run (a ``dbtlab.Result``) and the snapshots it saved."""

    saved: list[str] = field(default_factory=list)
    snapshots: list[SnapshotInfo] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return 128 + self.signal if self.signal is not None else (self.status or 0)


def _captured(make_machine, go, stdin: bytes):
    from dbtlab.api import _read_all
    with tempfile.TemporaryFile() as fin, tempfile.TemporaryFile() as fout, \
            tempfile.TemporaryFile() as ferr:
        fin.write(stdin)
        fin.seek(0)
        m = make_machine(fin.fileno(), fout.fileno(), ferr.fileno())
        try:
            res, extra = go(m)
        finally:
            m.close()
        return res, extra, _read_all(fout), _read_all(ferr)


def run(program: str, args: Iterable[str] = (), *, store: str | SnapshotStore,
        save_at: Iterable[int | tuple[int, str | None] | str] = (), every: int | None = None,
        accel: str = "llvm", env: dict[str, str] | list[str] | None = None,
        stdin: bytes = b"", prefix: str | None = None, config: RunConfig | None = None,
        **config_fields) -> SavingResult:
    """``dbtlab.run`` that saves snapshots on the way (``save_at``: counts, (count, tag)
    pairs or "N:TAG" strings; ``every``: each multiple of N). Output is captured."""
    from dbtlab.runtime.machine import Machine
    cfg = config or RunConfig(accel=accel, **config_fields)
    if isinstance(env, dict):
        env = [f"{k}={v}" for k, v in env.items()]
    points = []
    for p in save_at:
        if isinstance(p, str):
            points.append(parse_save_point(p))
        elif isinstance(p, tuple):
            points.append((int(p[0]), p[1]))
        else:
            points.append((int(p), None))
    with _Using(store) as s:
        res, infos, out, err = _captured(
            lambda i, o, e: Machine(program, [program, *args], env=list(env or []),
                                    config=cfg, stdin=i, stdout=o, stderr=e),
            lambda m: run_saving(m, s, points, every, prefix=prefix), stdin)
    return SavingResult(out, err, res.status, res.signal, res.instret, res.wall, res.message,
                        res.stopped, res.stats, saved=[i.tag for i in infos], snapshots=infos)


def resume(store: str | SnapshotStore | None, tag: str | None = None, *,
           stream: str | None = None, accel: str = "llvm", stdin: bytes = b"",
           save_at: Iterable = (), every: int | None = None, program: str | None = None,
           config: RunConfig | None = None, **config_fields) -> SavingResult:
    """Resume snapshot ``tag`` of ``store`` (or the stream file ``stream``) under
    ``accel`` and run it to the end: the result's stdout is what the guest writes after
    the snapshot point. ``max_insns=`` and friends set RunConfig fields."""
    cfg = config or RunConfig(accel=accel, **config_fields)
    if stream is not None:
        snap = V.read_file(stream)
    else:
        if tag is None:
            raise StoreError("resume: which snapshot? (tag)")
        with _Using(store, create=False) as s:
            snap = s.load(tag)
    points = [parse_save_point(p) if isinstance(p, str) else
              ((int(p[0]), p[1]) if isinstance(p, tuple) else (int(p), None))
              for p in save_at]

    def go(m):
        if points or every:
            if store is None:
                raise StoreError("resume: saving needs a store")
            with _Using(store) as s2:
                return run_saving(m, s2, points, every)
        return m.run(), []
    res, infos, out, err = _captured(
        lambda i, o, e: V.instantiate(snap, config=cfg, program=program, stdin=i, stdout=o,
                                      stderr=e), go, stdin)
    return SavingResult(out, err, res.status, res.signal, res.instret, res.wall, res.message,
                        res.stopped, res.stats, saved=[i.tag for i in infos], snapshots=infos)
