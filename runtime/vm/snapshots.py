"""The snapshot store: named machine snapshots in one SQLite file (stdlib ``sqlite3``).

Like QEMU's internal snapshots in a qcow2 image, but for a user-mode process:

* every snapshot has a tag and metadata (creation time, guest instruction count, program
  path and SHA-256, dbtlab version, the accelerator that saved it, its size as a plain
  stream, how many pages it added);
* memory is stored content-addressed: a page's key is the SHA-256 of its bytes, its
  value the zlib-compressed page, so successive snapshots of a process share every page
  that did not change (only new contents are compressed and written);
* the rest of the state is kept as the stream's section payloads, with their versions, so
  an old store is read with the same versioned descriptions as an old stream;
* everything stored is checked when it is read: a page against its key, every section
  payload against the checksum stored with it, and each snapshot's record (its metadata,
  memory map, page list and section checksums) against the record's own checksum, so a
  flipped bit or a deleted row is reported as damage, never loaded;
* a save is one transaction (``BEGIN IMMEDIATE`` ... ``COMMIT``): a writer killed mid-save
  leaves the store as it was before that save — SQLite's journal rolls the partial
  transaction back when the file is next opened;
* ``delete`` removes a snapshot and garbage-collects the pages no snapshot references;
* ``export``/``import_stream`` convert to and from the plain stream format
  (``dbtlab.runtime.vm.vmstate``), which is what travels between machines.

Schema (version 2)::

    meta(key, value)                         -- format = dbtlab-snapshot-store, schema = 2
    snapshots(id, tag UNIQUE, created, instret, program_path, program_sha256,
              dbtlab_version, accel, format_version, size, pages, new_pages, new_bytes,
              memory_map, pages_digest, checksum)
    sections(snapshot_id, name, version, payload, checksum)  -- the stream's FULL sections
    pages(id, hash UNIQUE, data)                      -- sha256(page) -> zlib(page)
    snapshot_pages(snapshot_id, pn, page_id)          -- the non-zero pages of a snapshot

``pages_digest`` is the SHA-256 of the snapshot's (page number, page hash) list,
``sections.checksum`` the SHA-256 of a section's name, version and payload, and
``snapshots.checksum`` the SHA-256 of every other column of the record and of its
sections' checksums. SQLite's integers are signed 64-bit: ``instret`` is stored as its
two's complement (an unsigned count >= 2**63 reads back negative and is unwrapped); a
program path or name that is not valid UTF-8 is stored as the bytes it names (a BLOB).
Tags must be valid UTF-8.

Version 1 (dbtlab before the checksums) had no ``pages_digest`` and no ``checksum``
columns. Such a store is read as it is (pages are still checked against their keys, and
a missing page is still damage); the first save into it upgrades it in place, in the
save's transaction, after checking every snapshot it holds.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import sqlite3
import stat as _stat
import struct
import time
from dataclasses import dataclass
from typing import Callable, Iterator

from dbtlab.runtime.vm import vmstate as V

log = logging.getLogger(__name__)

STORE_FORMAT = "dbtlab-snapshot-store"
SCHEMA_VERSION = 2

_SCHEMA = """
CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE snapshots(
    id INTEGER PRIMARY KEY,
    tag TEXT NOT NULL UNIQUE,
    created REAL NOT NULL,
    instret INTEGER NOT NULL,
    program_path TEXT NOT NULL,
    program_sha256 TEXT NOT NULL,
    dbtlab_version TEXT NOT NULL,
    accel TEXT NOT NULL,
    format_version INTEGER NOT NULL,
    size INTEGER NOT NULL,
    pages INTEGER NOT NULL,
    new_pages INTEGER NOT NULL,
    new_bytes INTEGER NOT NULL,
    memory_map BLOB NOT NULL,
    pages_digest BLOB,
    checksum BLOB
);
CREATE TABLE sections(
    snapshot_id INTEGER NOT NULL,
    name TEXT NOT NULL,
    version INTEGER NOT NULL,
    payload BLOB NOT NULL,
    checksum BLOB,
    PRIMARY KEY (snapshot_id, name)
);
CREATE TABLE pages(
    id INTEGER PRIMARY KEY,
    hash BLOB NOT NULL UNIQUE,
    data BLOB NOT NULL
);
CREATE TABLE snapshot_pages(
    snapshot_id INTEGER NOT NULL,
    pn INTEGER NOT NULL,
    page_id INTEGER NOT NULL,
    PRIMARY KEY (snapshot_id, pn)
) WITHOUT ROWID;
CREATE INDEX snapshot_pages_page ON snapshot_pages(page_id);
"""

_BATCH = 500            # host parameters per IN (...) query
_U64 = 1 << 64


class StoreError(V.SnapshotError):
    """The store file cannot be used, or has no such snapshot, or is damaged."""


# ---- values SQLite cannot hold as they are -------------------------------------------------
def check_tag(tag) -> str:
    """``tag`` if it can name a snapshot (non-empty, no surrounding blanks or newline,
    valid UTF-8), else StoreError."""
    if not isinstance(tag, str):
        raise StoreError(f"bad snapshot tag {tag!r}: not a string")
    try:
        tag.encode("utf-8")
    except UnicodeEncodeError:
        raise StoreError(f"bad snapshot tag '{V.printable(tag)}': not valid UTF-8 (a tag "
                         "is text)") from None
    if not tag or tag != tag.strip() or any(c < " " or c == "\x7f" for c in tag):
        raise StoreError(f"bad snapshot tag {tag!r}: empty, surrounded by blanks or "
                         "holding control characters")
    return tag


#: what SQLite and the sqlite3 module raise on a damaged or busy file (a TEXT value that is
#: not UTF-8 surfaces as a UnicodeDecodeError while rows are fetched)
_DB_ERRORS = (sqlite3.Error, UnicodeDecodeError)


def _db_error(e: Exception) -> str:
    """SQLite's message on one line (a malformed schema quotes its SQL, newlines and all)."""
    text = " ".join(V.printable(str(e).replace("\n", " ")).split())
    return text if len(text) <= 200 else text[:197] + "..."


def _to_sql_text(value: str, what: str):
    """A str SQLite can store as TEXT, or the bytes it names (surrogate-escaped host
    bytes) as a BLOB."""
    try:
        value.encode("utf-8")
        return value
    except UnicodeEncodeError:
        pass
    try:
        return value.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        raise StoreError(f"cannot store {what} '{V.printable(value)}': it is neither text nor "
                         "host bytes (a lone surrogate)") from None


def _from_sql_text(value) -> str:
    return value.decode("utf-8", "surrogateescape") if isinstance(value, bytes) else value


def _to_sql_u64(value: int, what: str) -> int:
    if not 0 <= value < _U64:
        raise StoreError(f"cannot store {what} {value}: not in 0..2**64-1")
    return value - _U64 if value >= 1 << 63 else value


def _section_sum(name: str, version: int, payload: bytes) -> bytes:
    h = hashlib.sha256(b"dbtlab-store-section\0")
    h.update(name.encode("utf-8", "surrogateescape") + b"\0")
    h.update(struct.pack(">q", version))
    h.update(payload)
    return h.digest()


def _pages_digest(refs) -> bytes:
    """Of (page number, page hash) pairs, in page-number order."""
    h = hashlib.sha256(b"dbtlab-store-pages\0")
    for pn, ph in refs:
        h.update(struct.pack(">Q", pn))
        h.update(ph)
    return h.digest()


def _record_sum(values, section_sums) -> bytes:
    """Of a snapshot record's stored values (as SQLite holds them) and its sections'
    checksums (by name)."""
    h = hashlib.sha256(b"dbtlab-store-record\0")
    for v in values:
        if isinstance(v, bool) or v is None:
            raise TypeError(f"unexpected value {v!r}")
        if isinstance(v, int):
            b = b"I" + str(v).encode()
        elif isinstance(v, float):
            b = b"F" + struct.pack(">d", v)
        elif isinstance(v, str):
            b = b"S" + v.encode("utf-8")
        else:
            b = b"B" + bytes(v)
        h.update(struct.pack(">Q", len(b)) + b)
    for name, digest in sorted(section_sums):
        h.update(name.encode("utf-8", "surrogateescape") + b"\0" + digest)
    return h.digest()


@dataclass(frozen=True)
class SnapshotInfo:
    """One stored snapshot's metadata."""

    tag: str
    created: float
    instret: int
    program_path: str
    program_sha256: str
    dbtlab_version: str
    accel: str
    format_version: int
    size: int               # bytes as a plain stream (what export writes)
    pages: int              # non-zero pages
    new_pages: int          # pages this snapshot added to the store when it was saved
    new_bytes: int          # compressed bytes it added

    @property
    def created_text(self) -> str:
        try:
            return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.created))
        except (OverflowError, ValueError, OSError):
            return "?"

    def __str__(self) -> str:
        return (f"{self.tag}: {V.printable(os.path.basename(self.program_path))} at "
                f"{self.instret} instructions ({V.printable(self.accel)}), {self.pages} "
                f"pages, {self.size} bytes")


_INFO_COLS = ("tag, created, instret, program_path, program_sha256, dbtlab_version, accel, "
              "format_version, size, pages, new_pages, new_bytes")
#: the stored type of each column of _INFO_COLS (str-or-bytes: text that may be host bytes)
_INFO_TYPES = (str, float, int, (str, bytes), str, (str, bytes), (str, bytes), int, int, int,
               int, int)


class SnapshotStore:
    """A snapshot store file. Use as a context manager or call ``close``.

    ``create=False`` refuses a missing file (read-only commands must not create one).
    Every failure — a missing or damaged snapshot, a file that is not a store, an SQLite
    error (locked, malformed, not a database) — is a ``StoreError`` (one line)."""

    def __init__(self, path: str, *, create: bool = True, timeout: float = 30.0) -> None:
        self.path = path
        self.shown = V.printable(os.fsdecode(path))         # the path, in messages
        self.schema = SCHEMA_VERSION
        try:
            st = os.stat(path)
        except FileNotFoundError:
            st = None
        except (OSError, ValueError) as e:
            raise StoreError(f"cannot open snapshot store {self.shown}: "
                             f"{getattr(e, 'strerror', None) or e}") from None
        if st is None and not create:
            raise StoreError(f"no snapshot store at {self.shown}")
        if st is not None and not _stat.S_ISREG(st.st_mode):
            raise StoreError(f"{self.shown} is {V._file_kind(st)}, not a snapshot store")
        try:
            self.db = sqlite3.connect(path, timeout=timeout, isolation_level=None)
        except _DB_ERRORS as e:
            raise StoreError(f"cannot open snapshot store {self.shown}: "
                             f"{_db_error(e)}") from None
        try:
            self._check_or_create()
        except BaseException:
            self.db.close()
            raise

    # ---- schema ----------------------------------------------------------------------------
    def _check_or_create(self) -> None:
        try:
            tables = {r[0] for r in self.db.execute(
                "SELECT name FROM sqlite_master WHERE type='table'")}
            if not tables:
                self.db.execute("BEGIN IMMEDIATE")
                tables = {r[0] for r in self.db.execute(
                    "SELECT name FROM sqlite_master WHERE type='table'")}
                if not tables:
                    for stmt in _SCHEMA.split(";"):
                        if stmt.strip():
                            self.db.execute(stmt)
                    self.db.executemany("INSERT INTO meta VALUES (?, ?)",
                                        [("format", STORE_FORMAT),
                                         ("schema", str(SCHEMA_VERSION))])
                    self.db.execute("COMMIT")
                    return
                self.db.execute("COMMIT")
            if "meta" not in tables:
                raise StoreError(f"{self.shown} is an SQLite database but not a dbtlab "
                                 "snapshot store")
            meta = dict(self.db.execute("SELECT key, value FROM meta").fetchall())
        except _DB_ERRORS as e:
            self._rollback()
            if isinstance(e, sqlite3.OperationalError) and "locked" in str(e):
                raise StoreError(f"snapshot store {self.shown} is locked by another process "
                                 f"({_db_error(e)})") from None
            raise StoreError(f"{self.shown} is not a dbtlab snapshot store "
                             f"({_db_error(e)})") from None
        if meta.get("format") != STORE_FORMAT:
            raise StoreError(f"{self.shown} is an SQLite database but not a dbtlab snapshot "
                             "store")
        try:
            schema = int(meta.get("schema", "0"))
        except (ValueError, TypeError):
            schema = 0
        if schema > SCHEMA_VERSION:
            raise V.VersionError(f"snapshot store {self.shown} has schema version {schema}, "
                                 f"newer than this dbtlab reads ({SCHEMA_VERSION}): it was "
                                 "written by a newer dbtlab; upgrade dbtlab to use it")
        if schema < 1:
            raise StoreError(f"snapshot store {self.shown}: unknown schema version "
                             f"{meta.get('schema')!r}")
        self.schema = schema

    def _rollback(self) -> None:
        try:
            if self.db.in_transaction:
                self.db.execute("ROLLBACK")
        except sqlite3.Error:
            pass

    def close(self) -> None:
        try:
            self.db.close()
        except _DB_ERRORS as e:
            raise StoreError(f"snapshot store {self.shown}: {_db_error(e)}") from None

    def __enter__(self) -> "SnapshotStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @contextlib.contextmanager
    def _write(self, what: str) -> Iterator[sqlite3.Connection]:
        """One write transaction (``BEGIN IMMEDIATE``: writers queue on the file lock):
        committed when the block ends, rolled back when it raises; a database error says
        ``what`` failed."""
        db = self.db
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
                db.execute("COMMIT")
            except BaseException:
                self._rollback()
                raise
        except _DB_ERRORS as e:
            raise StoreError(f"snapshot store {self.shown}: {what}: {_db_error(e)}") from None

    def _rows(self, sql: str, args=()) -> list:
        """Every row of a query (fetched here: SQLite reports a damaged file while rows
        are read, not only when the query starts)."""
        try:
            return self.db.execute(sql, args).fetchall()
        except _DB_ERRORS as e:
            raise StoreError(f"snapshot store {self.shown}: {_db_error(e)}") from None

    def _one(self, sql: str, args=()):
        rows = self._rows(sql, args)
        return rows[0] if rows else None

    def _info(self, row, what: str | None = None) -> SnapshotInfo:
        """A SnapshotInfo from stored values (of _INFO_COLS), type-checked."""
        for v, t in zip(row, _INFO_TYPES):
            if not isinstance(v, t) or isinstance(v, bool):
                name = row[0] if isinstance(row[0], str) else "?"
                raise StoreError(f"snapshot '{V.printable(name)}' in {self.shown} is damaged: its "
                                 f"record holds {type(v).__name__} {_short(v)} where "
                                 f"{getattr(t, '__name__', 'text')} belongs")
        vals = list(row)
        vals[2] %= _U64
        for k in (3, 5, 6):
            vals[k] = _from_sql_text(vals[k])
        return SnapshotInfo(*vals)

    # ---- listing ---------------------------------------------------------------------------
    def list(self) -> list[SnapshotInfo]:
        """Every snapshot, in the order they were stored."""
        return [self._info(r) for r in
                self._rows(f"SELECT {_INFO_COLS} FROM snapshots ORDER BY id")]

    def tags(self) -> list[str]:
        return [i.tag for i in self.list()]

    def __contains__(self, tag: str) -> bool:
        check_tag(tag)
        return self._one("SELECT 1 FROM snapshots WHERE tag = ?", (tag,)) is not None

    def info(self, tag: str) -> SnapshotInfo:
        check_tag(tag)
        r = self._one(f"SELECT {_INFO_COLS} FROM snapshots WHERE tag = ?", (tag,))
        if r is None:
            raise self._no_such(tag)
        return self._info(r)

    def _no_such(self, tag: str) -> StoreError:
        have = [r[0] for r in self._rows("SELECT tag FROM snapshots ORDER BY id")]
        have = [V.printable(t) if isinstance(t, str) else "?" for t in have]
        hint = f" (it has: {', '.join(have[:10])}{', ...' if len(have) > 10 else ''})" \
            if have else " (it is empty)"
        return StoreError(f"no snapshot '{tag}' in {self.shown}{hint}")

    def stats(self) -> dict:
        """Counts for the whole store: snapshots, distinct pages, their compressed bytes."""
        n = self._one("SELECT count(*) FROM snapshots")[0]
        pages, nbytes = self._one("SELECT count(*), coalesce(sum(length(data)), 0) "
                                  "FROM pages")
        refs = self._one("SELECT count(*) FROM snapshot_pages")[0]
        try:
            size = os.path.getsize(self.path)
        except OSError as e:
            raise StoreError(f"snapshot store {self.shown}: {e.strerror or e}") from None
        return {"snapshots": n, "pages": pages, "page_bytes": nbytes, "page_refs": refs,
                "file_bytes": size}

    # ---- saving ----------------------------------------------------------------------------
    def savevm(self, machine, tag: str, **kw) -> SnapshotInfo:
        """Capture a stopped machine and save it as ``tag``."""
        check_tag(tag)
        return self.save(V.capture(machine), tag, **kw)

    def save(self, snap: V.VMSnapshot, tag: str, *, replace: bool = True,
             progress: Callable[[int, int], None] | None = None) -> SnapshotInfo:
        """Store ``snap`` as ``tag`` in one transaction (an existing tag is replaced unless
        ``replace`` is False). ``progress(done, total)`` is called as pages are stored.
        Values SQLite cannot hold as they are (an instruction count >= 2**63, a path that
        is not UTF-8) are stored so that they read back exactly; a tag that is not valid
        UTF-8 is refused."""
        check_tag(tag)
        t0 = time.perf_counter()
        hashes = {pn: hashlib.sha256(raw).digest() for pn, raw in snap.memory.pages.items()}
        # state sections are stored re-encoded at the current versions
        try:
            sections = {name: (d.version, d.encode(getattr(snap, name)))
                        for name, d in V.FULL_SECTIONS.items()}
            memory_map = V.encode_regions(snap.memory.regions)
        except (ValueError, TypeError, struct.error) as e:
            raise StoreError(f"cannot save '{tag}': {e}") from None
        sums = {name: _section_sum(name, v, pl) for name, (v, pl) in sections.items()}
        p = snap.program
        head = (tag, float(p["created"]), _to_sql_u64(snap.instret, "instruction count"),
                _to_sql_text(p["path"], "program path"), p["sha256"].hex(),
                _to_sql_text(p["dbtlab_version"], "dbtlab version"),
                _to_sql_text(p["accel"], "accelerator name"), V.FORMAT_VERSION)
        pages_digest = _pages_digest((pn, hashes[pn]) for pn in sorted(hashes))
        with self._write(f"cannot save '{tag}'") as db:
            if self.schema < SCHEMA_VERSION:
                self._upgrade(db)
            old = db.execute("SELECT id FROM snapshots WHERE tag = ?", (tag,)).fetchone()
            if old is not None:
                if not replace:
                    raise StoreError(f"snapshot '{tag}' already exists in {self.shown}")
                self._delete_rows(old[0])
            # which contents are there already
            known: dict[bytes, tuple[int, int]] = {}
            distinct = list(set(hashes.values()))
            for i in range(0, len(distinct), _BATCH):
                chunk = distinct[i:i + _BATCH]
                q = ("SELECT hash, id, length(data) FROM pages WHERE hash IN ("
                     + ",".join("?" * len(chunk)) + ")")
                for h, pid, n in db.execute(q, chunk).fetchall():
                    known[h] = (pid, n)
            new_pages = new_bytes = 0
            total = len(hashes)
            refs = []
            for done, (pn, h) in enumerate(sorted(hashes.items()), 1):
                if h not in known:
                    data = snap.compressed.get(pn) or V.compress_page(snap.memory.pages[pn])
                    cur = db.execute("INSERT INTO pages(hash, data) VALUES (?, ?)",
                                     (h, data))
                    known[h] = (cur.lastrowid, len(data))
                    new_pages += 1
                    new_bytes += len(data)
                refs.append((pn, known[h][0]))
                if progress is not None:
                    progress(done, total)
            size = V.stream_size(snap, {pn: known[h][1] for pn, h in hashes.items()})
            values = head + (size, len(hashes), new_pages, new_bytes, memory_map,
                             pages_digest)
            cur = db.execute(
                "INSERT INTO snapshots(tag, created, instret, program_path, program_sha256,"
                " dbtlab_version, accel, format_version, size, pages, new_pages, new_bytes,"
                " memory_map, pages_digest, checksum) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                values + (_record_sum(values, sums.items()),))
            sid = cur.lastrowid
            db.executemany("INSERT INTO sections VALUES (?, ?, ?, ?, ?)",
                           [(sid, n, v, pl, sums[n]) for n, (v, pl) in sections.items()])
            db.executemany("INSERT INTO snapshot_pages VALUES (?, ?, ?)",
                           [(sid, pn, pid) for pn, pid in refs])
            if old is not None:
                self._gc()
        info = self.info(tag)
        log.info("saved snapshot %s in %.3f s (%d new pages, %d bytes)", info,
                 time.perf_counter() - t0, new_pages, new_bytes)
        return info

    def _upgrade(self, db: sqlite3.Connection) -> None:
        """Schema 1 -> 2, inside the caller's write transaction: add the checksum columns
        and fill them for every snapshot, each checked first as a version-1 store is read
        (a damaged one stops the upgrade, naming it)."""
        meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
        if meta.get("schema") == str(SCHEMA_VERSION):     # another writer upgraded it
            self.schema = SCHEMA_VERSION
            return
        cols = {t: {r[1] for r in db.execute(f"PRAGMA table_info({t})").fetchall()}
                for t in ("snapshots", "sections")}
        for t, c in (("snapshots", "pages_digest"), ("snapshots", "checksum"),
                     ("sections", "checksum")):
            if c not in cols[t]:
                db.execute(f"ALTER TABLE {t} ADD COLUMN {c} BLOB")
        for (tag,) in db.execute("SELECT tag FROM snapshots ORDER BY id").fetchall():
            try:
                sid, values, sections, refs = self._read_verified(tag, schema=1)
            except StoreError as e:
                raise StoreError(f"cannot upgrade snapshot store {self.shown} from schema "
                                 f"version 1 to {SCHEMA_VERSION}: {e}") from None
            sums = {}
            for name, version, payload, _c in sections:
                sums[name] = _section_sum(name, version, payload)
                db.execute("UPDATE sections SET checksum = ? WHERE snapshot_id = ? AND "
                           "name = ?", (sums[name], sid, name))
            digest = _pages_digest((pn, h) for pn, _pid, h, _d in refs)
            values = values + (digest,)
            db.execute("UPDATE snapshots SET pages_digest = ?, checksum = ? WHERE id = ?",
                       (digest, _record_sum(values, sums.items()), sid))
        db.execute("UPDATE meta SET value = ? WHERE key = 'schema'", (str(SCHEMA_VERSION),))
        self.schema = SCHEMA_VERSION
        log.info("upgraded snapshot store %s to schema version %d", self.path,
                 SCHEMA_VERSION)

    # ---- loading ---------------------------------------------------------------------------
    def _read_verified(self, tag: str, schema: int):
        """The rows of snapshot ``tag``, checked: (id, record values, sections, page refs
        as (pn, page id, hash, data) in page order). StoreError names what is damaged."""
        damaged = f"snapshot '{tag}' in {self.shown} is damaged"
        row = self._one(f"SELECT id, {_INFO_COLS}, memory_map, "
                        + ("pages_digest, checksum" if schema >= 2 else "NULL, NULL")
                        + " FROM snapshots WHERE tag = ?", (tag,))
        if row is None:
            raise self._no_such(tag)
        sid, values, (memory_map, pages_digest, checksum) = row[0], row[1:13], row[13:]
        self._info(values)
        if not isinstance(memory_map, bytes):
            raise StoreError(f"{damaged}: its memory map is not stored as bytes")
        sections = self._rows("SELECT name, version, payload, "
                              + ("checksum" if schema >= 2 else "NULL")
                              + " FROM sections WHERE snapshot_id = ? ORDER BY name", (sid,))
        for name, version, payload, csum in sections:
            if not isinstance(name, str) or name not in V.FULL_SECTIONS:
                raise StoreError(f"{damaged}: unknown section {_short(name)}")
            if not isinstance(version, int) or not isinstance(payload, bytes):
                raise StoreError(f"{damaged}: section '{name}' has a version or payload of "
                                 "the wrong type")
            if schema >= 2 and csum != _section_sum(name, version, payload):
                raise StoreError(f"{damaged}: section '{name}' does not match its checksum")
        present = {s[0] for s in sections}
        missing = [n for n in V.FULL_SECTIONS if n not in present]
        if missing:
            raise StoreError(f"{damaged}: missing section(s) {', '.join(missing)}")
        refs = self._rows(
            "SELECT sp.pn, sp.page_id, p.hash, p.data FROM snapshot_pages sp LEFT JOIN "
            "pages p ON p.id = sp.page_id WHERE sp.snapshot_id = ? ORDER BY sp.pn", (sid,))
        for pn, _pid, h, data in refs:
            if not isinstance(pn, int) or not 0 <= pn < 1 << 52:
                raise StoreError(f"{damaged}: a page number is {_short(pn)}")
            if h is None:
                raise StoreError(f"{damaged}: page {pn:#x} is missing from the store")
            if not isinstance(h, bytes) or not isinstance(data, bytes):
                raise StoreError(f"{damaged}: page {pn:#x} is not stored as bytes")
        npages = values[9]
        if schema >= 2:
            if pages_digest != _pages_digest((pn, h) for pn, _pid, h, _d in refs):
                raise StoreError(f"{damaged}: its page list does not match its checksum "
                                 f"({len(refs)} pages listed, {npages} recorded)")
            want = _record_sum(tuple(values) + (memory_map, pages_digest),
                               ((n, c) for n, _v, _p, c in sections))
            if checksum != want:
                raise StoreError(f"{damaged}: its record (metadata, memory map, page list, "
                                 "section checksums) does not match its checksum")
        elif len(refs) != npages:
            raise StoreError(f"{damaged}: {len(refs)} pages listed, {npages} recorded")
        return sid, tuple(values) + (memory_map,), sections, refs

    def load(self, tag: str) -> V.VMSnapshot:
        """The stored snapshot ``tag``, checked: every page against its hash, every
        section and the snapshot's record against their checksums."""
        check_tag(tag)
        _sid, values, sections, refs = self._read_verified(tag, self.schema)
        fmt, memory_map = values[7], values[12]
        damaged = f"snapshot '{tag}' in {self.shown} is damaged"
        if fmt > V.FORMAT_VERSION:
            raise V.VersionError(f"snapshot '{tag}' has stream format version {fmt}, newer "
                                 f"than this dbtlab reads ({V.FORMAT_VERSION})")
        try:
            regions = V.decode_regions(memory_map)
        except V.StreamError as e:
            raise StoreError(f"{damaged}: {e}") from None
        states, versions = {}, {}
        for name, version, payload, _c in sections:
            try:
                states[name] = V.FULL_SECTIONS[name].decode(payload, version)
            except V._Malformed as e:
                raise StoreError(f"{damaged}: section '{name}': {e}") from None
            versions[name] = version
        mapped = V.RegionIndex(regions)
        pages, compressed = {}, {}
        for pn, _pid, h, data in refs:
            try:
                raw = V.decompress_page(data)
            except V._Malformed as e:
                raise StoreError(f"{damaged}: page {pn:#x}: {e}") from None
            if hashlib.sha256(raw).digest() != h or pn not in mapped:
                raise StoreError(f"{damaged}: page {pn:#x} does not match its hash or map")
            pages[pn] = raw
            compressed[pn] = data
        versions[V.RAM_SECTION] = V.RAM_VERSION
        return V.VMSnapshot(states["program"], states["cpu"], states["process"],
                            V.MemoryImage(regions, pages), versions=versions,
                            format_version=fmt, compressed=compressed)

    # ---- deleting --------------------------------------------------------------------------
    def _delete_rows(self, sid: int) -> None:
        self.db.execute("DELETE FROM snapshot_pages WHERE snapshot_id = ?", (sid,))
        self.db.execute("DELETE FROM sections WHERE snapshot_id = ?", (sid,))
        self.db.execute("DELETE FROM snapshots WHERE id = ?", (sid,))

    def _gc(self) -> int:
        cur = self.db.execute("DELETE FROM pages WHERE id NOT IN "
                              "(SELECT page_id FROM snapshot_pages)")
        return cur.rowcount

    def delete(self, tag: str) -> int:
        """Delete a snapshot and every page no other snapshot uses; returns the number of
        pages freed."""
        check_tag(tag)
        with self._write(f"cannot delete '{tag}'") as db:
            row = db.execute("SELECT id FROM snapshots WHERE tag = ?", (tag,)).fetchone()
            if row is None:
                raise self._no_such(tag)
            self._delete_rows(row[0])
            freed = self._gc()
        log.info("deleted snapshot %s (%d pages freed)", tag, freed)
        return freed

    def gc(self) -> int:
        """Remove pages no snapshot references (saves and deletes already do this)."""
        with self._write("cannot collect unreferenced pages"):
            return self._gc()

    def vacuum(self) -> None:
        """Give the space of deleted pages back to the file system."""
        self._rows("VACUUM")

    # ---- the plain stream ------------------------------------------------------------------
    def export(self, tag: str, dest) -> int:
        """Write snapshot ``tag`` as a plain stream to ``dest`` (a path or a writable
        VMFile); returns the bytes written."""
        snap = self.load(tag)
        if isinstance(dest, V.VMFile):
            n0 = dest.transferred
            V.write_stream(snap, dest)
            return dest.transferred - n0
        return V.write_file(snap, dest)

    def import_stream(self, src, tag: str | None = None, *,
                      replace: bool = True) -> SnapshotInfo:
        """Read a plain stream (a path or a readable VMFile) — checked completely before
        anything is stored — and save it as ``tag`` (default: the file's name without its
        extension)."""
        if tag is not None:
            check_tag(tag)
        if isinstance(src, V.VMFile):
            snap = V.read_stream(src)
            if tag is None:
                raise StoreError("import: a tag is needed for a stream that is not a file")
        else:
            snap = V.read_file(src)
            if tag is None:
                # a file name that is not UTF-8 gives a tag with its bytes escaped
                tag = V.printable(os.path.splitext(os.path.basename(src))[0]) or "imported"
                check_tag(tag)
        return self.save(snap, tag, replace=replace)

    def __iter__(self) -> Iterator[SnapshotInfo]:
        return iter(self.list())


def _short(v) -> str:
    r = repr(v)
    return r if len(r) <= 40 else r[:37] + "..."
