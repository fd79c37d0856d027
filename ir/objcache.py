"""The persistent translation cache: object code on disk, shared between runs and processes.

A translation module's object code is stored under a key that covers everything it depends
on: the translator version, the host CPU name and features, the options that change the code
(pass and codegen levels, profiling, write log, tiering), and the module's LLVM IR — which is
itself a function of the guest code bytes it covers, their addresses and the chain slots it
uses (the guest bytes' hash is part of the key too, so a reader can see what an entry is).
Translated code refers to the environment only through ``%st`` and to nothing else, so an
entry holds no process-specific address and is valid in any process.

Entry files: ``<dir>/<2 hex>/<key>.o``, a header (magic, version, SHA-256 of the payload,
payload length) then the object code. Writes go to a temporary file in the same directory
and are renamed into place (atomic on POSIX), so concurrent dbtlab processes never see a
partial entry; readers verify the checksum, and a corrupt entry is deleted and rebuilt,
never loaded. The cache is bounded: when it grows past ``max_bytes`` the least recently
used entries (by modification time, refreshed on every hit) are evicted.
"""

from __future__ import annotations

import hashlib
import logging
import os
import struct
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

MAGIC = b"DBTLOBJ\x01"
HEADER = struct.Struct("<8s32sQ")
DEFAULT_MAX_BYTES = 512 << 20
SIZE_FILE = "size"                  # the remembered total (see ObjectCache.size)
SIZE_RESCAN_SECONDS = 3600


def default_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "dbtlab"


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    stores: int = 0
    corrupt: int = 0
    evicted: int = 0
    load_seconds: float = 0.0


class ObjectCache:
    def __init__(self, directory: str | os.PathLike | None = None,
                 max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.dir = Path(directory) if directory else default_dir()
        self.dir.mkdir(parents=True, exist_ok=True)
        self.max_bytes = max_bytes
        self.stats = CacheStats()
        self._size: int | None = None      # bytes on disk, computed lazily

    @staticmethod
    def key(*parts: str | bytes) -> str:
        h = hashlib.sha256()
        for p in parts:
            b = p.encode() if isinstance(p, str) else p
            h.update(len(b).to_bytes(8, "little"))
            h.update(b)
        return h.hexdigest()

    def _path(self, key: str) -> Path:
        return self.dir / key[:2] / f"{key}.o"

    def get(self, key: str) -> bytes | None:
        path = self._path(key)
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError:
            self.stats.misses += 1
            return None
        obj = self._check(data)
        if obj is None:
            self.stats.corrupt += 1
            self.stats.misses += 1
            log.warning("discarding corrupt translation-cache entry %s", path)
            try:
                path.unlink()
            except OSError:
                pass
            return None
        try:
            os.utime(path)                 # LRU: a hit makes the entry young
        except OSError:
            pass
        self.stats.hits += 1
        return obj

    @staticmethod
    def _check(data: bytes) -> bytes | None:
        if len(data) < HEADER.size:
            return None
        magic, digest, n = HEADER.unpack_from(data)
        payload = data[HEADER.size:]
        if magic != MAGIC or n != len(payload) or hashlib.sha256(payload).digest() != digest:
            return None
        return payload

    def put(self, key: str, obj: bytes) -> None:
        self.size()                        # before this entry exists: counted once
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        data = HEADER.pack(MAGIC, hashlib.sha256(obj).digest(), len(obj)) + obj
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        except OSError as e:
            log.warning("translation cache write failed: %s", e)
            try:
                os.unlink(tmp)
            except OSError:
                pass
            return
        self.stats.stores += 1
        self._size += len(data)
        if self._size > self.max_bytes:
            self.evict()
        else:
            self._save_size()

    def entries(self) -> list[tuple[float, int, Path]]:
        out = []
        for sub in self.dir.iterdir() if self.dir.exists() else ():
            if not sub.is_dir():
                continue
            for p in sub.glob("*.o"):
                try:
                    st = p.stat()
                except OSError:
                    continue
                out.append((st.st_mtime, st.st_size, p))
        return out

    def size(self) -> int:
        """Bytes on disk. Scanning a large cache costs ~20 µs per entry, so the total is
        remembered in a file of its own (``size``) and rescanned only when that is over
        an hour old; processes sharing the cache update it without locking, so a race can
        lose an update (the bound is a soft one, corrected at every rescan)."""
        if self._size is None:
            try:
                st = os.stat(self.dir / SIZE_FILE)
                if time.time() - st.st_mtime < SIZE_RESCAN_SECONDS:
                    self._size = int((self.dir / SIZE_FILE).read_text())
            except (OSError, ValueError):
                pass
            if self._size is None:
                self._size = sum(s for _, s, _ in self.entries())
                self._save_size(touch=True)
        return self._size

    def _save_size(self, touch: bool = False) -> None:
        """Record the total (keeping the file's age unless ``touch``: only a scan makes it
        young)."""
        path = self.dir / SIZE_FILE
        try:
            old = None if touch else os.stat(path)
            path.write_text(str(self._size))
            if old is not None:
                os.utime(path, (old.st_atime, old.st_mtime))
        except OSError:
            pass

    def evict(self, target: int | None = None) -> int:
        """Remove least recently used entries until the cache is below ``target`` bytes
        (default: 80% of max_bytes). Returns the number removed."""
        target = int(self.max_bytes * 0.8) if target is None else target
        entries = sorted(self.entries())
        total = sum(s for _, s, _ in entries)
        removed = 0
        for _, size, p in entries:
            if total <= target:
                break
            try:
                p.unlink()
                total -= size
                removed += 1
            except OSError:
                pass
        self._size = total
        self._save_size(touch=True)
        self.stats.evicted += removed
        return removed

    def clear(self) -> int:
        n = 0
        for _, _, p in self.entries():
            try:
                p.unlink()
                n += 1
            except OSError:
                pass
        self._size = 0
        self._save_size(touch=True)
        return n

    def summary(self) -> dict:
        entries = self.entries()
        return {"directory": str(self.dir), "entries": len(entries),
                "bytes": sum(s for _, s, _ in entries), "max_bytes": self.max_bytes}
