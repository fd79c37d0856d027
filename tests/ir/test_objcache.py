"""The persistent translation cache: warm runs load instead of compiling; entries are atomic,
checked, bounded, shared safely by concurrent processes."""

from __future__ import annotations

import os
import subprocess
import sys

import dbtlab
from dbtlab.ir.objcache import ObjectCache
from tests.conftest import GUESTS, ROOT

SHA = str(GUESTS / "bin/sha256")
#: the cache holds the LLVM tier's modules: these tests run that tier whatever DBTLAB_TIERS
#: says (stencils need no cache of their own beyond the library)
LLVM_TIERS = ("llvm", "region")


def test_warm_run_loads_every_module(tmp_path):
    cold = dbtlab.run(SHA, ["2048", "1"], accel="llvm", tiers=LLVM_TIERS, cache_dir=str(tmp_path))
    warm = dbtlab.run(SHA, ["2048", "1"], accel="llvm", tiers=LLVM_TIERS, cache_dir=str(tmp_path))
    assert warm.stdout == cold.stdout and warm.instret == cold.instret
    assert cold.stats["cache_hits"] == 0
    assert warm.stats["cache_hits"] == warm.stats["modules"] == cold.stats["modules"]
    assert warm.stats["compile_seconds"] < cold.stats["compile_seconds"] / 3


def test_no_cache_writes_nothing(tmp_path):
    dbtlab.run(SHA, ["64", "1"], accel="llvm", tiers=LLVM_TIERS, cache=False, cache_dir=str(tmp_path))
    assert ObjectCache(tmp_path).summary()["entries"] == 0


def test_corrupt_entry_is_discarded_and_rebuilt(tmp_path):
    dbtlab.run(SHA, ["64", "1"], accel="llvm", tiers=LLVM_TIERS, cache_dir=str(tmp_path))
    cache = ObjectCache(tmp_path)
    entries = cache.entries()
    assert entries
    for _, _, p in entries:                  # flip one byte of every payload
        data = bytearray(p.read_bytes())
        data[-10] ^= 0xFF
        p.write_bytes(bytes(data))
    r = dbtlab.run(SHA, ["64", "1"], accel="llvm", tiers=LLVM_TIERS, cache_dir=str(tmp_path))
    assert r.status == 0 and r.stats["cache_hits"] == 0     # nothing corrupt was loaded
    assert len(ObjectCache(tmp_path).entries()) == len(entries)  # rebuilt
    assert all(ObjectCache._check(p.read_bytes()) is not None
               for _, _, p in ObjectCache(tmp_path).entries())


def test_truncated_and_foreign_entries_are_rejected(tmp_path):
    cache = ObjectCache(tmp_path)
    key = cache.key("x")
    cache.put(key, b"\x7fELF" + bytes(100))
    assert cache.get(key) == b"\x7fELF" + bytes(100)
    p = cache._path(key)
    p.write_bytes(p.read_bytes()[:-1])
    assert cache.get(key) is None and not p.exists()
    p.write_bytes(b"not an entry")
    assert cache.get(key) is None


def test_size_bound_evicts_least_recently_used(tmp_path):
    cache = ObjectCache(tmp_path, max_bytes=10_000)
    keys = [cache.key(str(i)) for i in range(30)]
    for i, k in enumerate(keys):
        cache.put(k, bytes(1000))
        os.utime(cache._path(k), (i, i)) if cache._path(k).exists() else None
    assert cache.size() <= 10_000
    assert cache.get(keys[-1]) is not None          # the youngest survive
    assert cache.stats.evicted > 0


def test_concurrent_processes_share_the_cache(tmp_path):
    env = dict(os.environ, DBTLAB_CACHE_DIR=str(tmp_path),
               PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    cmd = [sys.executable, "-m", "dbtlab.runtime.cli", "run", "--tiers", "llvm,region", SHA,
           "2048", "1"]
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE) for _ in range(3)]
    outs = [p.communicate(timeout=120)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert len(set(outs)) == 1
    assert not list(tmp_path.glob("*/.tmp-*"))       # no partial entries left behind
    assert all(ObjectCache._check(p.read_bytes()) is not None
               for _, _, p in ObjectCache(tmp_path).entries())


def test_cli_cache_stats_and_clear(tmp_path):
    from tests.runtime.test_cli import dbtlab as cli
    cli("run", "--tiers", "llvm,region", "--cache-dir", str(tmp_path), SHA, "64", "1")
    r = cli("cache", "stats", "--cache-dir", str(tmp_path))
    assert r.returncode == 0 and " entries, " in r.stdout.decode()
    r = cli("cache", "clear", "--cache-dir", str(tmp_path))
    assert r.stdout.decode().startswith("removed ")
    assert ObjectCache(tmp_path).summary()["entries"] == 0


def test_size_is_remembered_not_rescanned(tmp_path, monkeypatch):
    """A new process reads the remembered total instead of statting every entry; a stale
    record (over an hour old) is rescanned, and the bound still holds across processes."""
    first = ObjectCache(tmp_path, max_bytes=1 << 20)
    for i in range(10):
        first.put(f"{i:064x}", bytes(1000))
    total = sum(s for _, s, _ in first.entries())
    second = ObjectCache(tmp_path, max_bytes=1 << 20)
    scans = []
    real = ObjectCache.entries

    def counted(self):
        scans.append(1)
        return real(self)
    monkeypatch.setattr(ObjectCache, "entries", counted)
    assert second.size() == total and not scans
    import time
    old = time.time() - 7200
    os.utime(tmp_path / "size", (old, old))
    third = ObjectCache(tmp_path, max_bytes=1 << 20)
    assert third.size() == total and scans == [1]
    small = ObjectCache(tmp_path, max_bytes=8_000)
    small.put("f" * 64, bytes(1000))
    monkeypatch.undo()
    assert sum(s for _, s, _ in small.entries()) <= 8_000
