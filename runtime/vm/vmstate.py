"""The VM-state stream: a stopped machine as versioned, sectioned bytes, and back.

Modelled on QEMU's migration stream, which it follows in structure (its code is not used):

* ``VMFile`` is QEMUFile: one buffered byte stream over a file, a socket or memory, with a
  *latched error* (the first failure is kept; later puts do nothing and gets return zeros,
  so writers and readers check ``f.error`` at their checkpoints instead of after every
  call) and an optional rate limit.
* ``VMStateDescription``/``VMField`` are QEMU's VMState: each component's state is
  declared once (fields, types, the version that introduced each field, the minimum
  version still loadable). A field introduced after the version of the stream being read
  gets its declared default; a section version newer than this dbtlab's, or older than
  its minimum, is refused with a message saying which.
* The stream is a sequence of sections, like QEMU's savevm format: iterative sections
  (START, PART..., END) for guest memory, so a migration can send all pages and then only
  the dirty ones (``RamSaver``), and FULL sections for everything else.

Stream layout (integers big-endian, as in QEMU)::

    stream  := "DBTLABVM" | u32 format_version | section* | eof
    START, FULL := u8 type (1, 4) | u32 section_id | u8 len | name | u32 instance_id
                   | u32 version | u32 payload_len | payload | footer
    PART, END   := u8 type (2, 3) | u32 section_id | u32 payload_len | payload | footer
    footer  := u8 0x7E | u32 section_id | u32 crc32(section bytes from its type byte
                                                    to the end of its payload)
    eof     := u8 0x00 | u32 crc32(every byte of the stream before this field)

Unlike QEMU, payloads are length-framed and every section carries a CRC, so a corrupt,
truncated or spliced stream is always detected before anything is applied. A declared
length or count is checked against the bytes that remain (and a memory map against the
guest address space, ``ADDR_LIMIT``) before anything is read, allocated or iterated: no
loop runs longer than the data present.

Sections written by ``savevm`` (section id: order of first appearance):

* ``program`` (FULL, v1): program path, SHA-256 and size of the ELF, the StartConfig it
  was started with, dbtlab version, creation time, the accelerator that saved it;
* ``ram`` (START, PART..., END; v1): the memory map and the non-zero pages, each page
  zlib-compressed on its own (records: MAP, PAGE, ZERO, EOS; see ``RamSaver``);
* ``cpu`` (FULL, v1): x, f, pc, fflags, frm, the LR/SC reservation, instructions retired;
* ``process`` (FULL, v2): the Linux process (ids, argv/envp/auxv, cwd, brk and mmap
  layout, file descriptors, clocks, random stream, signals, limits). Version 2 added
  ``umask``, ``rlimits`` and ``sigaltstack``; a version-1 section loads with the values a
  fresh process has (tests/fixtures/snapshots holds such a stream).

RAM records (inside the ram section's payloads)::

    START := u32 page_size | MAP | EOS          PART := [MAP] (PAGE | ZERO)* EOS
    END   := MAP (PAGE | ZERO)* EOS              (the final map: pages outside it go)
    MAP   := 0x01 | u32 n | n * (u32 first_page | u32 pages | u8 prot | u16 len | name)
    PAGE  := 0x02 | u32 page_number | u32 len | zlib(page)
    ZERO  := 0x03 | u32 page_number             EOS := 0x04

Translated code is never stored: after a load every accelerator retranslates.

File descriptors: stdin/stdout/stderr (and duplicates of them) continue on the streams of
the process that loads the snapshot; regular files, directories and devices are reopened
by their host path (read from /proc/self/fd when saving) with the saved flags and offset
— their contents are the host's at load time, as with QEMU's shared storage; a regular
file the guest has already unlinked is stored in the snapshot (up to ``MAX_TMPFILE``) and
comes back as an anonymous file; synthesized files (/proc/self/maps) keep their bytes. A
pipe or socket cannot be reopened: it blocks savevm (``SaveBlocked``), like QEMU's
migration blockers.

Loading is all-or-nothing: ``read_stream`` parses and checks the whole stream into a
``VMSnapshot`` of plain values; ``restore`` then reopens files (the only step that can still
fail, undone on failure) and only then swaps the state into the machine. Every problem is
a ``SnapshotError`` (a ``DbtError``): one line, no traceback, nothing half-loaded.
"""

from __future__ import annotations

import bisect
import logging
import math
import os
import socket
import stat as _stat
import struct
import tempfile
import time
import zlib
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator

from dbtlab.ir.abi import ADDR_LIMIT, PAGE_SHIFT, PAGE_SIZE
from dbtlab.runtime.errors import DbtError
from dbtlab.runtime.linux.memory import PROT_MASK

log = logging.getLogger(__name__)

MAGIC = b"DBTLABVM"
FORMAT_VERSION = 1

SEC_EOF, SEC_START, SEC_PART, SEC_END, SEC_FULL, SEC_FOOTER = 0x00, 0x01, 0x02, 0x03, 0x04, 0x7E
_SEC_NAMES = {SEC_START: "START", SEC_PART: "PART", SEC_END: "END", SEC_FULL: "FULL"}

#: largest payload a section may declare (a RAM PART is at most ~1 MiB; full sections are
#: small): a corrupt length can never make the reader allocate or wait for gigabytes
MAX_PAYLOAD = 64 << 20
#: bytes of compressed page data per RAM PART section
RAM_PART_BYTES = 1 << 20
#: zlib level for pages: the default; on guest pages (glibc alloc/qsort/strings, 520
#: pages) level 1 was no faster and 2% larger, level 9 1.8x slower for 0.1% less
ZLIB_LEVEL = 6
#: an unlinked regular file the guest holds open is stored in the snapshot up to this size
MAX_TMPFILE = 64 << 20

ZERO_PAGE = bytes(PAGE_SIZE)
_MAX_PN = ADDR_LIMIT >> PAGE_SHIFT


# ---- errors ----------------------------------------------------------------------------------
class SnapshotError(DbtError):
    """A snapshot cannot be written, read or applied (one line, for the user)."""


class StreamError(SnapshotError):
    """The stream is corrupt, truncated or not a dbtlab snapshot."""


class VersionError(SnapshotError):
    """The stream (or one of its sections) is from a newer dbtlab, or too old to load."""


class ProgramMismatch(SnapshotError):
    """The snapshot belongs to another program (or the program file changed)."""


class SaveBlocked(SnapshotError):
    """The machine is in a state that cannot be saved (QEMU's migration blockers)."""


_CONTROL = {c: f"\\x{c:02x}" for c in range(0x20)} | {0x7F: "\\x7f"}


def printable(text: str) -> str:
    """``text`` for a one-line message: bytes that are not UTF-8 (surrogate-escaped host
    bytes), lone surrogates and control characters (a newline in a file name) escaped."""
    try:
        b = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        b = text.encode("utf-8", "backslashreplace")
    return b.decode("utf-8", "backslashreplace").translate(_CONTROL)


class _Malformed(Exception):
    """Raised inside payload decoding; turned into a StreamError naming the section."""


# ---- the buffered stream (QEMUFile) ------------------------------------------------------------
class _Backend:
    """Where bytes go or come from. ``read`` returns b"" at the end."""

    name = "stream"

    def write(self, data: bytes) -> None:
        raise OSError("stream not writable")

    def read(self, n: int) -> bytes:
        raise OSError("stream not readable")

    def at_end(self) -> bool | None:
        """True if nothing follows (None: cannot tell without blocking, e.g. a socket)."""
        return None

    def remaining(self) -> int | None:
        """Bytes left to read, if known without reading them (None: a socket, a pipe)."""
        return None

    def close(self) -> None:
        pass


class _FileBackend(_Backend):
    def __init__(self, fobj, owned: bool, name: str) -> None:
        self.f, self.owned, self.name = fobj, owned, name

    def write(self, data: bytes) -> None:
        self.f.write(data)

    def read(self, n: int) -> bytes:
        return self.f.read(n)

    def at_end(self) -> bool | None:
        try:
            return self.f.read(1) == b""
        except OSError:
            return None

    def remaining(self) -> int | None:
        try:
            st = os.fstat(self.f.fileno())
            if not _stat.S_ISREG(st.st_mode):
                return None
            return max(0, st.st_size - self.f.tell())
        except (OSError, ValueError, AttributeError):
            return None

    def close(self) -> None:
        if self.owned:
            self.f.close()
        else:
            try:
                self.f.flush()
            except (OSError, ValueError):
                pass


class _SocketBackend(_Backend):
    name = "socket"

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def write(self, data: bytes) -> None:
        self.sock.sendall(data)

    def read(self, n: int) -> bytes:
        return self.sock.recv(n)


class _MemoryBackend(_Backend):
    name = "memory"

    def __init__(self, data: bytes | None = None) -> None:
        self.buf = bytearray() if data is None else None
        self.data = memoryview(bytes(data)) if data is not None else None
        self.pos = 0

    def write(self, data: bytes) -> None:
        if self.buf is None:
            raise OSError("memory stream opened for reading")
        self.buf += data

    def read(self, n: int) -> bytes:
        if self.data is None:
            raise OSError("memory stream opened for writing")
        out = bytes(self.data[self.pos:self.pos + n])
        self.pos += len(out)
        return out

    def at_end(self) -> bool | None:
        return self.data is not None and self.pos >= len(self.data)

    def remaining(self) -> int | None:
        return None if self.data is None else len(self.data) - self.pos


class VMFile:
    """A buffered, one-direction byte stream with a latched error and an optional rate
    limit (QEMU's QEMUFile). Big-endian put/get helpers; ``crc`` is the CRC-32 of every
    byte put or got so far; ``transferred`` counts them.

    Build one with ``for_path``, ``for_fileobj``, ``for_socket``, ``writer`` (memory) or
    ``reader`` (bytes). A reader buffers ahead (up to ``BUFSIZE``): on a socket, bytes
    sent after the stream's end marker may already be in its buffer, so go on reading
    them through the same VMFile."""

    BUFSIZE = 64 << 10
    #: largest single read from the back end: a declared length never sizes an allocation
    MAX_READ = 1 << 20

    def __init__(self, backend: _Backend, writable: bool, *,
                 rate_limit: int | None = None) -> None:
        self.backend = backend
        self.writable = writable
        self._wbuf = bytearray()
        self._rbuf = b""
        self._rpos = 0
        self._error: SnapshotError | None = None
        self.crc = 0
        self.transferred = 0
        self.rate_limit = rate_limit          # bytes per second, None = unlimited
        self._win_start = time.monotonic()
        self._win_bytes = 0

    # constructors
    @classmethod
    def for_path(cls, path: str, mode: str = "rb", **kw) -> "VMFile":
        """Open a file: mode "rb" to read, "wb" to write. Failures raise SnapshotError."""
        if mode not in ("rb", "wb"):
            raise ValueError("mode must be 'rb' or 'wb'")
        try:
            f = open(path, mode)
        except OSError as e:
            raise SnapshotError(f"cannot open snapshot stream {printable(path)}: "
                                f"{e.strerror or e}") from None
        return cls(_FileBackend(f, True, path), mode == "wb", **kw)

    @classmethod
    def for_fileobj(cls, fobj, writable: bool, name: str = "stream", **kw) -> "VMFile":
        """Wrap an open binary file object (not closed by ``close``)."""
        return cls(_FileBackend(fobj, False, name), writable, **kw)

    @classmethod
    def for_socket(cls, sock: socket.socket, writable: bool, **kw) -> "VMFile":
        """One direction of a connected stream socket (for live migration)."""
        return cls(_SocketBackend(sock), writable, **kw)

    @classmethod
    def writer(cls, **kw) -> "VMFile":
        """An in-memory stream to write; ``getvalue()`` gives the bytes."""
        return cls(_MemoryBackend(), True, **kw)

    @classmethod
    def reader(cls, data: bytes, **kw) -> "VMFile":
        """An in-memory stream reading ``data``."""
        return cls(_MemoryBackend(data), False, **kw)

    # error latch
    @property
    def error(self) -> SnapshotError | None:
        """The first error met, or None (QEMU's qemu_file_get_error)."""
        return self._error

    def set_error(self, err: SnapshotError) -> None:
        """Latch ``err`` unless an error is already latched."""
        if self._error is None:
            self._error = err

    def check(self) -> None:
        """Raise the latched error, if any."""
        if self._error is not None:
            raise self._error

    # rate limiting
    def set_rate_limit(self, bytes_per_second: int | None) -> None:
        self.rate_limit = bytes_per_second

    def rate_limit_exceeded(self) -> bool:
        """True when this 100 ms window's allowance is used up: an iterative saver should
        end its round (QEMU's qemu_file_rate_limit). Writes past it are delayed."""
        if not self.rate_limit:
            return False
        self._roll_window()
        return self._win_bytes >= self.rate_limit * 0.1

    def _roll_window(self) -> None:
        now = time.monotonic()
        if now - self._win_start >= 0.1:
            self._win_start, self._win_bytes = now, 0

    def _throttle(self, n: int) -> None:
        if not self.rate_limit:
            return
        allowance = max(1.0, self.rate_limit * 0.1)
        self._roll_window()
        while self._win_bytes and self._win_bytes + n > allowance:
            time.sleep(max(0.0, self._win_start + 0.1 - time.monotonic()))
            self._roll_window()
        self._win_bytes += n

    # writing
    def put_buffer(self, data: bytes) -> None:
        if self._error is not None:
            return
        if not self.writable:
            self.set_error(SnapshotError("snapshot stream opened for reading, not writing"))
            return
        self.crc = zlib.crc32(data, self.crc)
        self.transferred += len(data)
        self._wbuf += data
        if len(self._wbuf) >= self.BUFSIZE:
            self.flush()

    def put_u8(self, v: int) -> None:
        self.put_buffer(bytes((v,)))

    def put_be32(self, v: int) -> None:
        self.put_buffer(struct.pack(">I", v))

    def put_be64(self, v: int) -> None:
        self.put_buffer(struct.pack(">Q", v))

    def flush(self) -> None:
        if self._error is not None or not self._wbuf:
            self._wbuf.clear()
            return
        data = bytes(self._wbuf)
        self._wbuf.clear()
        try:
            for i in range(0, len(data), self.BUFSIZE):
                chunk = data[i:i + self.BUFSIZE]
                self._throttle(len(chunk))
                self.backend.write(chunk)
        except OSError as e:
            self.set_error(SnapshotError(f"snapshot stream ({self.backend.name}): write "
                                         f"failed: {e.strerror or e}"))

    # reading
    def get_buffer(self, n: int) -> bytes:
        """Exactly n bytes; on a short read latches a truncation error and returns what
        there was (callers check ``error``)."""
        if self._error is not None or n <= 0:
            return b""
        out = []
        need = n
        while need:
            if self._rpos >= len(self._rbuf):
                try:
                    self._rbuf = self.backend.read(min(max(need, self.BUFSIZE),
                                                       self.MAX_READ))
                except OSError as e:
                    self.set_error(SnapshotError(f"snapshot stream ({self.backend.name}): "
                                                 f"read failed: {e.strerror or e}"))
                    return b"".join(out)
                self._rpos = 0
                if not self._rbuf:
                    self.set_error(StreamError(
                        f"snapshot stream is truncated: it ends after {self.transferred} "
                        "bytes"))
                    return b"".join(out)
            take = self._rbuf[self._rpos:self._rpos + need]
            self._rpos += len(take)
            need -= len(take)
            out.append(take)
            self.crc = zlib.crc32(take, self.crc)
            self.transferred += len(take)
        return b"".join(out) if len(out) != 1 else out[0]

    def get_u8(self) -> int:
        b = self.get_buffer(1)
        return b[0] if len(b) == 1 else 0

    def get_be32(self) -> int:
        b = self.get_buffer(4)
        return struct.unpack(">I", b)[0] if len(b) == 4 else 0

    def get_be64(self) -> int:
        b = self.get_buffer(8)
        return struct.unpack(">Q", b)[0] if len(b) == 8 else 0

    def remaining(self) -> int | None:
        """Bytes left to read (buffered and in the back end), or None when the back end
        cannot tell (a socket, a pipe)."""
        probe = getattr(self.backend, "remaining", None)     # duck-typed back ends may lack it
        rest = probe() if probe is not None else None
        return None if rest is None else rest + len(self._rbuf) - self._rpos

    def at_end(self) -> bool | None:
        """Nothing left to read? (None when the back end cannot tell, e.g. a socket.)"""
        if self._rpos < len(self._rbuf):
            return False
        return self.backend.at_end()

    # lifecycle
    def getvalue(self) -> bytes:
        """The bytes written to an in-memory writer."""
        self.flush()
        if not isinstance(self.backend, _MemoryBackend) or self.backend.buf is None:
            raise TypeError("getvalue() needs an in-memory writer")
        return bytes(self.backend.buf)

    def close(self) -> SnapshotError | None:
        """Flush and close; returns the latched error (QEMU's qemu_fclose)."""
        if self.writable:
            self.flush()
        try:
            self.backend.close()
        except OSError as e:
            self.set_error(SnapshotError(f"snapshot stream ({self.backend.name}): close "
                                         f"failed: {e.strerror or e}"))
        return self._error

    def __enter__(self) -> "VMFile":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# ---- payload encoding ------------------------------------------------------------------------
class _Reader:
    """Bounds-checked reads from one section's payload."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise _Malformed(f"a field runs past the end of the payload ({len(self.data)} "
                             "bytes)")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def unpack(self, st: struct.Struct):
        return st.unpack(self.take(st.size))

    @property
    def left(self) -> int:
        return len(self.data) - self.pos


class VMType:
    """How one value is encoded in a payload."""

    name = "?"

    def put(self, out: bytearray, v: Any) -> None:
        raise NotImplementedError

    def get(self, r: _Reader) -> Any:
        raise NotImplementedError


class _Int(VMType):
    def __init__(self, name: str, fmt: str, lo: int, hi: int) -> None:
        self.name, self.st, self.lo, self.hi = name, struct.Struct(fmt), lo, hi

    def put(self, out, v):
        v = int(v)
        if not self.lo <= v <= self.hi:
            raise ValueError(f"{v} does not fit {self.name}")
        out += self.st.pack(v)

    def get(self, r):
        return r.unpack(self.st)[0]


class _F64(VMType):
    name = "f64"
    st = struct.Struct(">d")

    def put(self, out, v):
        out += self.st.pack(float(v))

    def get(self, r):
        return r.unpack(self.st)[0]


class _Bool(VMType):
    name = "bool"

    def put(self, out, v):
        out.append(1 if v else 0)

    def get(self, r):
        b = r.take(1)[0]
        if b > 1:
            raise _Malformed(f"boolean byte {b}")
        return bool(b)


_LEN = struct.Struct(">I")


class _Bytes(VMType):
    name = "bytes"

    def put(self, out, v):
        out += _LEN.pack(len(v))
        out += v

    def get(self, r):
        n, = r.unpack(_LEN)
        return bytes(r.take(n))


class _Str(VMType):
    """UTF-8 with surrogateescape, so any host path round-trips."""

    name = "str"

    def put(self, out, v):
        b = v.encode("utf-8", "surrogateescape")
        out += _LEN.pack(len(b))
        out += b

    def get(self, r):
        n, = r.unpack(_LEN)
        try:
            return bytes(r.take(n)).decode("utf-8", "surrogateescape")
        except UnicodeDecodeError:
            raise _Malformed("invalid UTF-8 in a string") from None


class Optional_(VMType):
    def __init__(self, t: VMType) -> None:
        self.t, self.name = t, f"optional {t.name}"

    def put(self, out, v):
        out.append(0 if v is None else 1)
        if v is not None:
            self.t.put(out, v)

    def get(self, r):
        flag = r.take(1)[0]
        if flag > 1:
            raise _Malformed(f"optional-presence byte {flag}")
        return self.t.get(r) if flag else None


class ListOf(VMType):
    """u32 count, then the items."""

    def __init__(self, t: VMType) -> None:
        self.t, self.name = t, f"list of {t.name}"

    def put(self, out, v):
        out += _LEN.pack(len(v))
        for x in v:
            self.t.put(out, x)

    def get(self, r):
        n, = r.unpack(_LEN)
        if n > r.left:                 # every item takes at least one byte
            raise _Malformed(f"list of {n} items in {r.left} bytes")
        return [self.t.get(r) for _ in range(n)]


class Array(VMType):
    """A fixed number of items, no count (QEMU's VMSTATE_*_ARRAY)."""

    def __init__(self, t: VMType, n: int) -> None:
        self.t, self.n, self.name = t, n, f"{t.name}[{n}]"

    def put(self, out, v):
        if len(v) != self.n:
            raise ValueError(f"{self.name}: {len(v)} items")
        for x in v:
            self.t.put(out, x)

    def get(self, r):
        return [self.t.get(r) for _ in range(self.n)]


class Tuple(VMType):
    def __init__(self, *ts: VMType) -> None:
        self.ts = ts
        self.name = "(" + ", ".join(t.name for t in ts) + ")"

    def put(self, out, v):
        if len(v) != len(self.ts):
            raise ValueError(f"{self.name}: {len(v)} items")
        for t, x in zip(self.ts, v):
            t.put(out, x)

    def get(self, r):
        return tuple(t.get(r) for t in self.ts)


U8 = _Int("u8", ">B", 0, 0xFF)
U16 = _Int("u16", ">H", 0, 0xFFFF)
U32 = _Int("u32", ">I", 0, 0xFFFFFFFF)
U64 = _Int("u64", ">Q", 0, (1 << 64) - 1)
I64 = _Int("i64", ">q", -(1 << 63), (1 << 63) - 1)
F64 = _F64()
BOOL = _Bool()
BYTES = _Bytes()
STR = _Str()


_NO_DEFAULT = object()


@dataclass(frozen=True)
class VMField:
    """One field of a component's state.

    ``since``: the section version that introduced it (a stream of an older version lacks
    it and gets ``default``, a value or a callable taking the fields read so far).
    ``check``: returns an error text (or None) for a decoded value: bad values are refused
    like corrupt bytes."""

    name: str
    type: VMType
    since: int = 1
    default: Any = _NO_DEFAULT
    check: Callable[[Any], str | None] | None = None
    doc: str = ""


class Struct(VMType):
    """A nested description (its fields follow the enclosing section's version)."""

    def __init__(self, vmsd: "VMStateDescription") -> None:
        self.vmsd, self.name = vmsd, vmsd.name

    def put(self, out, v):
        self.vmsd._put(out, v, self._version)

    def get(self, r):
        return self.vmsd._get(r, self._version)

    _version = 1


@dataclass(frozen=True)
class VMStateDescription:
    """A component's state, declared: name, current version, the oldest version this code
    still loads, and the fields in stream order (QEMU's VMStateDescription)."""

    name: str
    version: int
    minimum_version: int
    fields: tuple[VMField, ...]
    doc: str = ""

    def encode(self, state: dict, version: int | None = None) -> bytes:
        """The payload for ``state`` (a dict of field values) at ``version`` (default:
        current; an older one omits the fields introduced after it)."""
        v = self.version if version is None else version
        if not self.minimum_version <= v <= self.version:
            raise ValueError(f"{self.name}: cannot write version {v}")
        out = bytearray()
        self._put(out, state, v)
        return bytes(out)

    def decode(self, payload: bytes, version: int) -> dict:
        """Decode a payload written at ``version``; raises VersionError if it cannot be
        loaded, _Malformed if the bytes are not a valid payload."""
        self.check_version(version)
        r = _Reader(payload)
        d = self._get(r, version)
        if r.left:
            raise _Malformed(f"{r.left} unexpected bytes after the last field")
        return d

    def check_version(self, version: int) -> None:
        if version > self.version:
            raise VersionError(
                f"snapshot section '{self.name}' has version {version}, but this dbtlab "
                f"reads versions {self.minimum_version} to {self.version}: the snapshot is "
                "from a newer dbtlab; upgrade dbtlab to load it")
        if version < self.minimum_version:
            raise VersionError(
                f"snapshot section '{self.name}' has version {version}, older than the "
                f"oldest this dbtlab loads ({self.minimum_version})")

    def _put(self, out: bytearray, state: dict, version: int) -> None:
        for f in self.fields:
            if f.since > version:
                continue
            t = f.type
            _set_struct_version(t, version)
            try:
                t.put(out, state[f.name])
            except (ValueError, TypeError, KeyError, struct.error) as e:
                raise ValueError(f"{self.name}.{f.name}: cannot encode: {e}") from None

    def _get(self, r: _Reader, version: int) -> dict:
        d: dict = {}
        for f in self.fields:
            if f.since > version:
                if f.default is _NO_DEFAULT:
                    raise _Malformed(f"{self.name}.{f.name} has no default for version "
                                     f"{version}")
                d[f.name] = f.default(d) if callable(f.default) else f.default
                continue
            _set_struct_version(f.type, version)
            v = f.type.get(r)
            if f.check is not None:
                msg = f.check(v)
                if msg:
                    raise _Malformed(f"{self.name}.{f.name}: {msg}")
            d[f.name] = v
        return d


def _set_struct_version(t: VMType, version: int) -> None:
    while True:
        if isinstance(t, Struct):
            t._version = version
            return
        inner = getattr(t, "t", None)
        if inner is None:
            if isinstance(t, Tuple):
                for x in t.ts:
                    _set_struct_version(x, version)
            return
        t = inner


def _range(lo: int, hi: int) -> Callable[[int], str | None]:
    return lambda v: None if lo <= v <= hi else f"{v} outside {lo}..{hi}"


def _one_of(*values) -> Callable[[Any], str | None]:
    return lambda v: None if v in values else f"{v!r} is not one of {values}"


# ---- component descriptions --------------------------------------------------------------------
VMSTATE_PROGRAM = VMStateDescription(
    "program", 1, 1, (
        VMField("path", STR, doc="absolute path of the ELF when it was saved"),
        VMField("sha256", BYTES, check=lambda v: None if len(v) == 32 else "not 32 bytes"),
        VMField("size", U64),
        VMField("dbtlab_version", STR),
        VMField("created", F64, check=lambda v: None if math.isfinite(v) else "not finite"),
        VMField("accel", STR, doc="the accelerator that was running (informational)"),
        VMField("argv", ListOf(STR)),
        VMField("env", ListOf(STR)),
        VMField("stack_top", U64),
        VMField("stack_size", U64),
        VMField("random_bytes", BYTES, check=lambda v: None if len(v) == 16 else "not 16 "
                "bytes"),
        VMField("exec_path", Optional_(STR)),
        VMField("pie_base", U64),
        VMField("hwcap", U64),
        VMField("mmap_top", U64),
        VMField("uid", U32),
        VMField("gid", U32),
    ), doc="Which program this is and how it was started (the loader's StartConfig).")

VMSTATE_CPU = VMStateDescription(
    "cpu", 1, 1, (
        VMField("x", Array(U64, 32), check=lambda v: None if v[0] == 0 else "x0 is not 0"),
        VMField("f", Array(U64, 32)),
        VMField("pc", U64),
        VMField("fflags", U8, check=_range(0, 0x1F)),
        VMField("frm", U8, check=_range(0, 7)),
        VMField("res_addr", U64),
        VMField("res_val", U64),
        VMField("res_valid", BOOL),
        VMField("instret", U64, doc="instructions retired since the program started"),
    ), doc="The architectural RV64GC state and the retired-instruction counter.")

FD_STDIO, FD_FILE, FD_DATA, FD_TMPFILE = 0, 1, 2, 3
FD_KINDS = {FD_STDIO: "stdio", FD_FILE: "file", FD_DATA: "synthesized",
            FD_TMPFILE: "unlinked file"}
STDIO_NAMES = ("<stdin>", "<stdout>", "<stderr>")

VMSTATE_FD = VMStateDescription(
    "fd", 1, 1, (
        VMField("fd", U32, check=_range(0, 1 << 20)),
        VMField("kind", U8, check=_one_of(*FD_KINDS)),
        VMField("path", STR, doc="what the guest sees (/proc/self/fd, messages)"),
        VMField("host_path", STR, doc="FD_FILE: the host file to reopen"),
        VMField("flags", U32, doc="guest open flags as opened"),
        VMField("status", U32, doc="guest F_GETFL status flags when saved"),
        VMField("offset", U64, doc="file position (FD_FILE, FD_TMPFILE, FD_DATA)"),
        VMField("cloexec", BOOL),
        VMField("is_dir", BOOL),
        VMField("owned", BOOL, doc="False: one of the process's own stdin/out/err"),
        VMField("stdio", U8, check=_range(0, 2), doc="FD_STDIO: which stream"),
        VMField("data", BYTES, doc="FD_DATA / FD_TMPFILE contents"),
    ))

_SIGNO = lambda v: None if 1 <= v <= 64 else f"signal {v}"   # noqa: E731

VMSTATE_PROCESS = VMStateDescription(
    "process", 2, 1, (
        VMField("pid", U32), VMField("tid", U32), VMField("ppid", U32),
        VMField("uid", U32), VMField("euid", U32), VMField("gid", U32), VMField("egid", U32),
        VMField("argv", ListOf(STR)),
        VMField("envp", ListOf(STR)),
        VMField("auxv", ListOf(Tuple(U64, U64))),
        VMField("exe_path", STR),
        VMField("cwd", STR),
        VMField("comm", STR),
        VMField("brk_start", U64),
        VMField("brk", U64),
        VMField("mmap_top", U64, check=_range(0, ADDR_LIMIT)),
        VMField("mmap_min", U64, check=_range(0, ADDR_LIMIT)),
        VMField("fds", ListOf(Struct(VMSTATE_FD)),
                check=lambda v: None if len({d["fd"] for d in v}) == len(v) else
                "duplicate descriptor numbers"),
        VMField("time_mode", STR, check=_one_of("host", "virtual")),
        VMField("ns_per_insn", F64, check=lambda v: None if math.isfinite(v) and v > 0
                else f"{v} is not a positive number"),
        VMField("slept_ns", U64),
        VMField("random_mode", STR, check=_one_of("seeded", "host")),
        VMField("rand_counter", U64),
        VMField("clear_child_tid", U64),
        VMField("robust_list", Tuple(U64, U64)),
        VMField("sigactions", ListOf(Tuple(U32, U64, U64, U64)),
                check=lambda v: next((_SIGNO(s[0]) for s in v if _SIGNO(s[0])), None)),
        VMField("sigmask", U64),
        VMField("pending", ListOf(U32),
                check=lambda v: next((_SIGNO(s) for s in v if _SIGNO(s)), None)),
        # ---- version 2 ----
        VMField("umask", U32, since=2, default=0o022, check=_range(0, 0o777)),
        VMField("rlimits", Optional_(ListOf(Tuple(U32, U64, U64))), since=2, default=None,
                doc="None: a fresh process's limits"),
        VMField("sigaltstack", Tuple(U64, U32, U64), since=2, default=(0, 2, 0)),
    ), doc="The Linux process: identity, layout, descriptors, clocks, signals, limits.")

#: full sections this dbtlab reads, by name
FULL_SECTIONS = {d.name: d for d in (VMSTATE_PROGRAM, VMSTATE_CPU, VMSTATE_PROCESS)}
RAM_SECTION = "ram"
RAM_VERSION = 1
RAM_MIN_VERSION = 1
SECTION_VERSIONS = {**{n: d.version for n, d in FULL_SECTIONS.items()},
                    RAM_SECTION: RAM_VERSION}


# ---- memory image and the iterative RAM section -------------------------------------------------
Region = tuple[int, int, int, str]      # (first page number, page count, prot, name)


@dataclass
class MemoryImage:
    """Guest memory as plain values: the map and the contents of its non-zero pages."""

    regions: list[Region]
    pages: dict[int, bytes]                 # page number -> PAGE_SIZE bytes (never zero)

    def mapped(self) -> Iterator[int]:
        for first, n, _p, _name in self.regions:
            yield from range(first, first + n)

    @property
    def npages(self) -> int:
        return sum(n for _f, n, _p, _name in self.regions)


class RegionIndex:
    """Page-number membership in a sorted, disjoint region list, without a set of every
    page (a crafted map may claim 2**26 pages)."""

    def __init__(self, regions: list[Region]) -> None:
        self.starts = [r[0] for r in regions]
        self.ends = [r[0] + r[1] for r in regions]

    def __contains__(self, pn: int) -> bool:
        i = bisect.bisect_right(self.starts, pn) - 1
        return i >= 0 and pn < self.ends[i]


def memory_regions(mem) -> list[Region]:
    """The map of a GuestMemory (runs of equal permissions and name; PROT_CODE dropped)."""
    return [(s >> PAGE_SHIFT, (e - s) >> PAGE_SHIFT, prot & PROT_MASK, name)
            for s, e, prot, name, _host in mem.regions()]


def written_pages(mem) -> list[int]:
    """The page numbers of a GuestMemory that may hold non-zero bytes (written since they
    were mapped), in order, found by range (``data_ranges``): a huge, mostly untouched
    mapping is never walked page by page."""
    ranges = getattr(mem, "data_ranges", None)
    if ranges is None:                       # a memory without range bookkeeping
        return sorted(mem.pages)
    out: list[int] = []
    for start, end, *_ in mem.regions():
        for lo, hi in ranges(start, end - start):
            out.extend(range(lo >> PAGE_SHIFT, (hi + PAGE_SIZE - 1) >> PAGE_SHIFT))
    return out


def capture_memory(mem) -> MemoryImage:
    """Copy the guest memory's map and non-zero pages."""
    pages = {}
    for pn in written_pages(mem):
        raw = mem.page_bytes(pn).tobytes()
        if raw != ZERO_PAGE:
            pages[pn] = raw
    return MemoryImage(memory_regions(mem), pages)


def compress_page(raw: bytes) -> bytes:
    return zlib.compress(raw, ZLIB_LEVEL)


def decompress_page(data: bytes) -> bytes:
    """The page behind ``data``; _Malformed unless it is exactly one valid zlib page."""
    d = zlib.decompressobj()
    try:
        raw = d.decompress(data, PAGE_SIZE)
    except zlib.error as e:
        raise _Malformed(f"page data does not decompress ({e})") from None
    if len(raw) != PAGE_SIZE or not d.eof or d.unused_data or d.unconsumed_tail:
        raise _Malformed("page data is not one compressed page")
    return raw


R_MAP, R_PAGE, R_ZERO, R_EOS = 0x01, 0x02, 0x03, 0x04
_REGION = struct.Struct(">IIBH")
_PN = struct.Struct(">I")
_PAGE_HDR = struct.Struct(">BII")


def _encode_map(regions: list[Region]) -> bytes:
    out = bytearray((R_MAP,))
    out += _LEN.pack(len(regions))
    for first, n, prot, name in regions:
        b = name.encode("utf-8", "surrogateescape")[:0xFFFF]
        out += _REGION.pack(first, n, prot & PROT_MASK, len(b))
        out += b
    return bytes(out)


class RamSaver:
    """Writes the iterative ``ram`` section (QEMU's ram_save_setup / iterate / complete).

    savevm uses it in one go (``save_all``). A pre-copy migration calls ``setup``, then
    ``iterate`` (first with ``pages=None``: every page; later with the set of pages dirtied
    since), then stops the guest and calls ``complete`` with the last dirty set. Every
    PART/END carries the current memory map, so mappings may change between rounds; a page
    that became zero after it was sent goes as a ZERO record, a never-sent zero page not
    at all.

    ``source`` is a GuestMemory, or a MemoryImage (optionally with ``compressed``, pages
    already compressed, e.g. from the snapshot store)."""

    def __init__(self, w: "StreamWriter", source, *, instance_id: int = 0,
                 compressed: Callable[[int], bytes | None] | None = None) -> None:
        self.w = w
        self.source = source
        self.instance_id = instance_id
        self.compressed = compressed
        self.sid: int | None = None
        self.sent: set[int] = set()          # pages the receiver holds non-zero
        self.pages_sent = 0
        self.bytes_sent = 0

    def _regions(self) -> list[Region]:
        if isinstance(self.source, MemoryImage):
            return list(self.source.regions)
        return memory_regions(self.source)

    def _all_pages(self) -> list[int]:
        # the stored or written pages, never every mapped page: a zero page not sent
        # before is not sent at all, and a map may claim the whole address space (2**26
        # pages) with a handful stored
        if isinstance(self.source, MemoryImage):
            return sorted(self.source.pages)
        return written_pages(self.source)

    def _page(self, pn: int) -> bytes | None:
        """Compressed contents, or None for a zero page."""
        if isinstance(self.source, MemoryImage):
            if pn not in self.source.pages:
                return None
            c = self.compressed(pn) if self.compressed else None
            return c if c is not None else compress_page(self.source.pages[pn])
        raw = self.source.page_bytes(pn).tobytes()
        return None if raw == ZERO_PAGE else compress_page(raw)

    def setup(self) -> None:
        payload = _PN.pack(PAGE_SIZE) + _encode_map(self._regions()) + bytes((R_EOS,))
        self.sid = self.w.start(RAM_SECTION, self.instance_id, RAM_VERSION, payload)

    def iterate(self, pages: Iterable[int] | None = None, *, final: bool = False) -> int:
        """Send ``pages`` (None: all mapped pages) in PART sections (the END section if
        ``final``); returns the number of PAGE/ZERO records sent."""
        if self.sid is None:
            raise RuntimeError("RamSaver.setup() first")
        regions = self._regions()
        mapped = RegionIndex(regions)
        todo = self._all_pages() if pages is None else sorted(p for p in set(pages)
                                                               if p in mapped)
        if pages is None and self.sent:
            # pages sent before that are zero now still go (as ZERO records)
            todo = sorted(set(todo) | {p for p in self.sent if p in mapped})
        # the receiver keeps pages unmapped between passes until END (which drops what is
        # outside the final map): a page remapped as zero must still go as a ZERO record
        if final:
            self.sent = {p for p in self.sent if p in mapped}
        chunk = bytearray(_encode_map(regions))
        records = 0
        for pn in todo:
            data = self._page(pn)
            if data is None:
                if pn not in self.sent:
                    continue
                self.sent.discard(pn)
                chunk += bytes((R_ZERO,)) + _PN.pack(pn)
            else:
                self.sent.add(pn)
                chunk += _PAGE_HDR.pack(R_PAGE, pn, len(data))
                chunk += data
                self.pages_sent += 1
                self.bytes_sent += len(data)
            records += 1
            if len(chunk) >= RAM_PART_BYTES:
                chunk.append(R_EOS)
                self.w.part(self.sid, bytes(chunk))
                chunk = bytearray()
        chunk.append(R_EOS)
        if final:
            # END always restates the final map (the receiver drops pages outside it)
            if not chunk.startswith(bytes((R_MAP,))):
                chunk = bytearray(_encode_map(regions)) + chunk
            self.w.end(self.sid, bytes(chunk))
        elif len(chunk) > 1:
            self.w.part(self.sid, bytes(chunk))
        return records

    def complete(self, pages: Iterable[int] = ()) -> int:
        """The END section: the final map and the pages dirtied since the last round."""
        return self.iterate(pages, final=True)

    def save_all(self) -> None:
        """setup + every page + END: what savevm writes."""
        self.setup()
        self.iterate(None)
        self.complete(())


class _RamLoader:
    """Rebuilds a MemoryImage from the ram section's START/PART/END payloads."""

    def __init__(self) -> None:
        self.regions: list[Region] | None = None
        self.mapped = RegionIndex([])
        self.pages: dict[int, bytes] = {}
        self.compressed: dict[int, bytes] = {}
        self.done = False

    def _map(self, r: _Reader) -> None:
        n, = r.unpack(_LEN)
        if n > r.left // _REGION.size:
            raise _Malformed(f"memory map of {n} regions in {r.left} bytes")
        regions = []
        prev_end = 0
        for _ in range(n):
            first, count, prot, nlen = r.unpack(_REGION)
            try:
                name = bytes(r.take(nlen)).decode("utf-8", "surrogateescape")
            except UnicodeDecodeError:
                raise _Malformed("invalid UTF-8 in a mapping name") from None
            if count == 0 or first < prev_end or first + count > _MAX_PN \
                    or prot & ~PROT_MASK:
                raise _Malformed(f"bad memory map entry {first:#x}+{count} prot {prot}")
            prev_end = first + count
            regions.append((first, count, prot, name))
        self.regions, self.mapped = regions, RegionIndex(regions)

    def feed(self, kind: int, payload: bytes) -> None:
        r = _Reader(payload)
        if kind == SEC_START:
            psize, = r.unpack(_PN)
            if psize != PAGE_SIZE:
                raise _Malformed(f"page size {psize}, this dbtlab uses {PAGE_SIZE}")
            if r.take(1)[0] != R_MAP:
                raise _Malformed("START without a memory map")
            self._map(r)
        elif kind == SEC_END:
            if not r.left or r.data[r.pos] != R_MAP:
                raise _Malformed("END without the final memory map")
        while True:
            rec = r.take(1)[0]
            if rec == R_EOS:
                break
            if rec == R_MAP:
                self._map(r)
            elif rec == R_PAGE:
                pn, clen = r.unpack(struct.Struct(">II"))
                data = bytes(r.take(clen))
                if pn not in self.mapped:
                    raise _Malformed(f"page {pn:#x} is not in the memory map")
                raw = decompress_page(data)
                if raw == ZERO_PAGE:
                    self.pages.pop(pn, None)
                    self.compressed.pop(pn, None)
                else:
                    self.pages[pn] = raw
                    self.compressed[pn] = data
            elif rec == R_ZERO:
                pn, = r.unpack(_PN)
                if pn not in self.mapped:
                    raise _Malformed(f"zero page {pn:#x} is not in the memory map")
                self.pages.pop(pn, None)
                self.compressed.pop(pn, None)
            else:
                raise _Malformed(f"unknown RAM record type {rec:#x}")
        if r.left:
            raise _Malformed(f"{r.left} bytes after the end-of-section record")
        if kind == SEC_END:
            for pn in [p for p in self.pages if p not in self.mapped]:
                del self.pages[pn]
                self.compressed.pop(pn, None)
            self.done = True

    def image(self) -> MemoryImage:
        return MemoryImage(list(self.regions or []), self.pages)


# ---- the section layer -------------------------------------------------------------------------
_SEC_HDR = struct.Struct(">BI")
_FOOTER = struct.Struct(">BII")


def encode_regions(regions: list[Region]) -> bytes:
    """A memory map as bytes (the MAP record of the ram section)."""
    return _encode_map(regions)


def decode_regions(data: bytes) -> list[Region]:
    """Inverse of ``encode_regions``; StreamError if malformed."""
    r = _Reader(data)
    ld = _RamLoader()
    try:
        if r.take(1)[0] != R_MAP:
            raise _Malformed("not a memory map")
        ld._map(r)
        if r.left:
            raise _Malformed("trailing bytes after the memory map")
    except _Malformed as e:
        raise StreamError(f"corrupt memory map: {e}") from None
    return ld.regions or []


class _NullBackend(_Backend):
    """Discards bytes (to measure a stream's size)."""

    name = "null"

    def write(self, data: bytes) -> None:
        pass


def stream_size(snap: "VMSnapshot", compressed_sizes: dict[int, int]) -> int:
    """Exact size of ``snap`` as a stream, given the compressed size of each page."""
    sized = VMSnapshot(snap.program, snap.cpu, snap.process, snap.memory, snap.versions,
                       snap.format_version,
                       compressed={pn: bytes(n) for pn, n in compressed_sizes.items()})
    f = VMFile(_NullBackend(), True)
    write_stream(sized, f)
    return f.transferred


class StreamWriter:
    """Writes the header, sections and end marker to a VMFile (QEMU's savevm layer)."""

    def __init__(self, f: VMFile, format_version: int = FORMAT_VERSION) -> None:
        self.f = f
        self._next_id = 0
        self._open: dict[int, str] = {}
        f.put_buffer(MAGIC)
        f.put_be32(format_version)

    def _section(self, kind: int, sid: int, head: bytes, payload: bytes) -> None:
        if len(payload) > MAX_PAYLOAD:
            raise SnapshotError(f"snapshot section payload of {len(payload)} bytes exceeds "
                                f"the format's limit ({MAX_PAYLOAD})")
        sec = _SEC_HDR.pack(kind, sid) + head + _LEN.pack(len(payload))
        crc = zlib.crc32(payload, zlib.crc32(sec))
        self.f.put_buffer(sec)
        self.f.put_buffer(payload)
        self.f.put_buffer(_FOOTER.pack(SEC_FOOTER, sid, crc))

    @staticmethod
    def _head(name: str, instance_id: int, version: int) -> bytes:
        b = name.encode()
        return bytes((len(b),)) + b + struct.pack(">II", instance_id, version)

    def full(self, name: str, instance_id: int, version: int, payload: bytes) -> int:
        sid = self._next_id
        self._next_id += 1
        self._section(SEC_FULL, sid, self._head(name, instance_id, version), payload)
        return sid

    def start(self, name: str, instance_id: int, version: int, payload: bytes) -> int:
        sid = self._next_id
        self._next_id += 1
        self._open[sid] = name
        self._section(SEC_START, sid, self._head(name, instance_id, version), payload)
        return sid

    def part(self, sid: int, payload: bytes) -> None:
        self._section(SEC_PART, sid, b"", payload)

    def end(self, sid: int, payload: bytes) -> None:
        self._open.pop(sid, None)
        self._section(SEC_END, sid, b"", payload)

    def finish(self) -> None:
        """The end marker (with the CRC of the whole stream), then flush."""
        if self._open:
            raise RuntimeError(f"iterative sections not ended: {sorted(self._open.values())}")
        self.f.put_u8(SEC_EOF)
        self.f.put_be32(self.f.crc)
        self.f.flush()
        self.f.check()


# ---- the snapshot as plain values ----------------------------------------------------------------
@dataclass
class VMSnapshot:
    """A whole machine state as plain values: the decoded sections and the memory image.
    ``versions`` are the section versions it was read at (or is to be written at)."""

    program: dict
    cpu: dict
    process: dict
    memory: MemoryImage
    versions: dict[str, int] = field(default_factory=lambda: dict(SECTION_VERSIONS))
    format_version: int = FORMAT_VERSION
    #: compressed page data already known (from a stream or a store), to avoid recompressing
    compressed: dict[int, bytes] = field(default_factory=dict, repr=False)

    @property
    def instret(self) -> int:
        return self.cpu["instret"]

    @property
    def program_path(self) -> str:
        return self.program["path"]

    @property
    def program_sha256(self) -> str:
        return self.program["sha256"].hex()

    def start_config(self):
        """The loader StartConfig the program was started with."""
        from dbtlab.runtime.linux.loader import StartConfig
        p = self.program
        return StartConfig(argv=list(p["argv"]), env=list(p["env"]), stack_top=p["stack_top"],
                           stack_size=p["stack_size"], random_bytes=p["random_bytes"],
                           exec_path=p["exec_path"], pie_base=p["pie_base"],
                           hwcap=p["hwcap"], mmap_top=p["mmap_top"], uid=p["uid"],
                           gid=p["gid"])

    def describe(self) -> str:
        return (f"{os.path.basename(self.program_path)} at {self.instret} instructions, "
                f"{len(self.memory.pages)} non-zero of {self.memory.npages} pages")


def write_stream(snap: VMSnapshot, f: VMFile, *,
                 versions: dict[str, int] | None = None) -> None:
    """Write ``snap`` as a stream (sections at their current versions unless ``versions``
    names older ones — how the older-format test fixture is made)."""
    vers = dict(SECTION_VERSIONS)
    vers.update(versions or {})
    w = StreamWriter(f)
    w.full("program", 0, vers["program"], VMSTATE_PROGRAM.encode(snap.program,
                                                                  vers["program"]))
    RamSaver(w, snap.memory, compressed=snap.compressed.get).save_all()
    w.full("cpu", 0, vers["cpu"], VMSTATE_CPU.encode(snap.cpu, vers["cpu"]))
    w.full("process", 0, vers["process"], VMSTATE_PROCESS.encode(snap.process,
                                                                  vers["process"]))
    w.finish()


def read_stream(f: VMFile, *, expect_end: bool = True) -> VMSnapshot:
    """Parse and check a whole stream. Raises StreamError / VersionError (one line)."""
    try:
        return _read_stream(f, expect_end)
    except _Malformed as e:                      # pragma: no cover - converted below
        raise StreamError(f"corrupt snapshot stream: {e}") from None



def decode_section(name: str, payload: bytes, version: int) -> dict:
    """A full section's state from its payload; StreamError (or VersionError) when the
    payload cannot be read."""
    try:
        return FULL_SECTIONS[name].decode(payload, version)
    except _Malformed as e:
        raise StreamError(f"corrupt snapshot stream: section '{name}': {e}") from None

def _read_stream(f: VMFile, expect_end: bool) -> VMSnapshot:
    magic = f.get_buffer(len(MAGIC))
    if f.error is not None and not magic:
        raise StreamError("not a dbtlab snapshot stream: it is empty")
    if magic != MAGIC:
        raise StreamError("not a dbtlab snapshot stream (bad magic "
                          f"{magic[:8]!r}; expected {MAGIC!r})")
    fmt = f.get_be32()
    f.check()
    if fmt > FORMAT_VERSION:
        raise VersionError(f"snapshot stream format version {fmt} is newer than this dbtlab "
                           f"reads ({FORMAT_VERSION}): the snapshot is from a newer dbtlab; "
                           "upgrade dbtlab to load it")
    if fmt < 1:
        raise StreamError(f"corrupt snapshot stream: format version {fmt}")
    sections: dict[int, tuple[str, int, int]] = {}      # id -> (name, instance, version)
    full: dict[str, tuple[int, dict]] = {}
    ram = _RamLoader()
    ram_sid: int | None = None
    ram_version = RAM_VERSION
    while True:
        at = f.transferred
        kind = f.get_u8()
        f.check()
        if kind == SEC_EOF:
            want = f.crc
            got = f.get_be32()
            f.check()
            if got != want:
                raise StreamError(f"corrupt snapshot stream: end-marker checksum mismatch "
                                  f"(stream {got:#010x}, computed {want:#010x})")
            break
        if kind not in _SEC_NAMES:
            raise StreamError(f"corrupt snapshot stream: unknown section type {kind:#04x} "
                              f"at byte {at}")
        sid = f.get_be32()
        head = _SEC_HDR.pack(kind, sid)
        if kind in (SEC_START, SEC_FULL):
            nlen = f.get_u8()
            raw_name = f.get_buffer(nlen)
            instance_id, version = f.get_be32(), f.get_be32()
            f.check()
            head += bytes((nlen,)) + raw_name + struct.pack(">II", instance_id, version)
            try:
                name = raw_name.decode("ascii")
            except UnicodeDecodeError:
                raise StreamError(f"corrupt snapshot stream: unreadable section name at "
                                  f"byte {at}") from None
            if sid in sections:
                raise StreamError(f"corrupt snapshot stream: section id {sid} used twice "
                                  f"('{sections[sid][0]}' and '{name}')")
        else:
            if sid not in sections:
                raise StreamError(f"corrupt snapshot stream: {_SEC_NAMES[kind]} section for "
                                  f"unknown section id {sid} at byte {at}")
            name, instance_id, version = sections[sid]
        plen = f.get_be32()
        f.check()
        if plen > MAX_PAYLOAD:
            raise StreamError(f"corrupt snapshot stream: section '{name}' claims a "
                              f"{plen}-byte payload (limit {MAX_PAYLOAD})")
        left = f.remaining()
        if left is not None and plen + _FOOTER.size > left:
            raise StreamError(f"snapshot stream is truncated: section '{name}' claims a "
                              f"{plen}-byte payload, but only {left} bytes follow")
        payload = f.get_buffer(plen)
        footer = f.get_buffer(_FOOTER.size)
        if f.error is not None:
            raise type(f.error)(f"{f.error} (in section '{name}')")
        tag, fsid, crc = _FOOTER.unpack(footer)
        if tag != SEC_FOOTER or fsid != sid:
            raise StreamError(f"corrupt snapshot stream: bad footer after section '{name}' "
                              f"(id {sid}): found tag {tag:#04x} id {fsid}")
        want = zlib.crc32(payload, zlib.crc32(head + _LEN.pack(plen)))
        if crc != want:
            raise StreamError(f"corrupt snapshot stream: checksum mismatch in section "
                              f"'{name}' (id {sid})")
        # the section is intact: interpret it
        if kind in (SEC_START, SEC_FULL):
            if instance_id != 0:
                raise StreamError(f"snapshot section '{name}' instance {instance_id}: this "
                                  "dbtlab has one instance of each component")
            if name in FULL_SECTIONS:
                if kind != SEC_FULL:
                    raise StreamError(f"corrupt snapshot stream: section '{name}' must be "
                                      "a FULL section")
                if name in full:
                    raise StreamError(f"corrupt snapshot stream: section '{name}' appears "
                                      "twice")
            elif name == RAM_SECTION:
                if kind != SEC_START:
                    raise StreamError("corrupt snapshot stream: section 'ram' must be "
                                      "iterative (START/PART/END)")
                if ram_sid is not None:
                    raise StreamError("corrupt snapshot stream: section 'ram' started twice")
                if version > RAM_VERSION:
                    raise VersionError(
                        f"snapshot section 'ram' has version {version}, but this dbtlab "
                        f"reads versions {RAM_MIN_VERSION} to {RAM_VERSION}: the snapshot "
                        "is from a newer dbtlab; upgrade dbtlab to load it")
                if version < RAM_MIN_VERSION:
                    raise VersionError(f"snapshot section 'ram' has version {version}, "
                                       f"older than the oldest this dbtlab loads "
                                       f"({RAM_MIN_VERSION})")
                ram_sid, ram_version = sid, version
            else:
                raise StreamError(f"snapshot stream has an unknown section '{name}' "
                                  f"(version {version}): not written by a compatible dbtlab")
            sections[sid] = (name, instance_id, version)
        try:
            if name in FULL_SECTIONS:
                full[name] = (version, decode_section(name, payload, version))
            else:
                if ram.done:
                    raise _Malformed("data after the END section")
                ram.feed(kind, payload)
        except _Malformed as e:
            raise StreamError(f"corrupt snapshot stream: section '{name}': {e}") from None
    missing = [n for n in ("program", "cpu", "process") if n not in full]
    if ram_sid is None or not ram.done:
        missing.append("ram" if ram_sid is None else "ram (no END section)")
    if missing:
        raise StreamError(f"incomplete snapshot stream: missing section(s) "
                          f"{', '.join(missing)}")
    if expect_end and f.at_end() is False:
        raise StreamError("corrupt snapshot stream: data after the end marker")
    vers = {n: v for n, (v, _d) in full.items()}
    vers[RAM_SECTION] = ram_version
    return VMSnapshot(full["program"][1], full["cpu"][1], full["process"][1], ram.image(),
                      versions=vers, format_version=fmt, compressed=ram.compressed)


def dumps(snap: VMSnapshot, **kw) -> bytes:
    """The stream for ``snap`` as bytes."""
    f = VMFile.writer()
    write_stream(snap, f, **kw)
    return f.getvalue()


def loads(data: bytes) -> VMSnapshot:
    """Parse a stream held in memory."""
    return read_stream(VMFile.reader(data))


def read_file(path: str) -> VMSnapshot:
    with VMFile.for_path(path, "rb") as f:
        return read_stream(f)


def write_file(snap: VMSnapshot, path: str, **kw) -> int:
    """Write a stream file (atomically: a temporary file renamed into place); returns its
    size."""
    d = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise SnapshotError(f"cannot write snapshot stream {printable(path)}: it is a "
                            "directory")
    try:
        fd, tmp = tempfile.mkstemp(prefix=".dbtlab-vm-", dir=d)
    except OSError as e:
        raise SnapshotError(f"cannot write snapshot stream {printable(path)}: "
                            f"{e.strerror or e}") from None
    try:
        try:
            with os.fdopen(fd, "wb") as fo:
                f = VMFile.for_fileobj(fo, True, name=path)
                write_stream(snap, f, **kw)
                f.check()
                size = f.transferred
            os.replace(tmp, path)
        except OSError as e:
            raise SnapshotError(f"cannot write snapshot stream {printable(path)}: "
                                f"{e.strerror or e}") from None
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return size


# ---- capture: machine -> VMSnapshot ---------------------------------------------------------------
_KINDS = ((_stat.S_ISDIR, "a directory"), (_stat.S_ISFIFO, "a FIFO"),
          (_stat.S_ISSOCK, "a socket"), (_stat.S_ISCHR, "a character device"),
          (_stat.S_ISBLK, "a block device"))
_PSEUDO_FS: dict[str, int | None] = {}


def _file_kind(st: os.stat_result) -> str:
    return next((what for test, what in _KINDS if test(st.st_mode)), "not a regular file")


def _pseudo_fs(st: os.stat_result) -> str | None:
    """'/proc' or '/sys' if the file lives on the host's procfs or sysfs (their files
    look regular but describe this process and this machine), else None."""
    for root in ("/proc", "/sys"):
        if root not in _PSEUDO_FS:
            try:
                _PSEUDO_FS[root] = os.stat(root).st_dev
            except OSError:
                _PSEUDO_FS[root] = None
        if _PSEUDO_FS[root] is not None and st.st_dev == _PSEUDO_FS[root]:
            return root
    return None


def open_program(path: str) -> tuple[int, os.stat_result]:
    """Open a program file named by a snapshot, refusing anything but a regular file: a
    directory, a FIFO (whose open would wait for a writer), a device, a socket or a file
    of the host's /proc or /sys is never opened. Returns (descriptor, its fstat)."""
    try:
        st = os.stat(path)
    except (OSError, ValueError) as e:
        raise SnapshotError(f"snapshot: cannot read program {printable(path)}: "
                            f"{getattr(e, 'strerror', None) or e}") from None
    if not _stat.S_ISREG(st.st_mode):
        raise ProgramMismatch(f"snapshot program {printable(path)} is {_file_kind(st)}, not a "
                              "program file: refusing to open it")
    pseudo = _pseudo_fs(st)
    if pseudo is not None:
        raise ProgramMismatch(f"snapshot program {printable(path)} is a file of the host's "
                              f"{pseudo}, not a program file: refusing to open it")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as e:
        raise SnapshotError(f"snapshot: cannot read program {printable(path)}: "
                            f"{e.strerror or e}") from None
    fst = os.fstat(fd)
    if (fst.st_dev, fst.st_ino) != (st.st_dev, st.st_ino) or not _stat.S_ISREG(fst.st_mode):
        os.close(fd)
        raise SnapshotError(f"snapshot: program {printable(path)} changed while it was opened")
    return fd, fst


def file_sha256(path: str) -> tuple[bytes, int]:
    """(SHA-256, size) of a regular file (see ``open_program`` for what is refused)."""
    import hashlib
    fd, st = open_program(path)
    h = hashlib.sha256()
    n = 0
    try:
        while n < st.st_size:
            chunk = os.read(fd, min(1 << 20, st.st_size - n))
            if not chunk:
                break
            h.update(chunk)
            n += len(chunk)
    except OSError as e:
        raise SnapshotError(f"snapshot: cannot read program {printable(path)}: "
                            f"{e.strerror or e}") from None
    finally:
        os.close(fd)
    return h.digest(), n


_HASH_CACHE: dict[tuple, tuple[bytes, int]] = {}


def program_identity(path: str) -> tuple[bytes, int]:
    """(SHA-256, size) of a program file (cached by path, size, mtime); only a regular
    file is opened."""
    try:
        st = os.stat(path)
    except (OSError, ValueError) as e:
        raise SnapshotError(f"snapshot: cannot read program {printable(path)}: "
                            f"{getattr(e, 'strerror', None) or e}") from None
    key = (os.path.abspath(path), st.st_dev, st.st_size, st.st_mtime_ns, st.st_ino)
    if key not in _HASH_CACHE or not _stat.S_ISREG(st.st_mode):
        _HASH_CACHE[key] = file_sha256(path)
    return _HASH_CACHE[key]


def capture(machine, *, accel: str | None = None) -> VMSnapshot:
    """The machine's whole state, copied into a VMSnapshot (the machine must be stopped
    between ``run`` calls, not exited). Raises SaveBlocked for state that cannot be saved
    (a pipe or socket descriptor)."""
    proc = machine.proc
    if proc.done:
        raise SaveBlocked("savevm: the guest has already exited; nothing to save")
    path = os.path.abspath(machine.program.path)
    digest, size = program_identity(path)
    st = machine.start
    import dbtlab
    program = dict(path=path, sha256=digest, size=size, dbtlab_version=dbtlab.__version__,
                   created=time.time(), accel=accel or machine.accel.name,
                   argv=list(st.argv), env=list(st.env), stack_top=st.stack_top,
                   stack_size=st.stack_size, random_bytes=bytes(st.random_bytes),
                   exec_path=st.exec_path, pie_base=st.pie_base, hwcap=st.hwcap,
                   mmap_top=st.mmap_top, uid=st.uid, gid=st.gid)
    a = machine.cpu.arch()
    cpu = dict(x=a["x"], f=a["f"], pc=a["pc"], fflags=a["fflags"] & 0x1F, frm=a["frm"] & 7,
               res_addr=a["res_addr"], res_val=a["res_val"], res_valid=bool(a["res_valid"]),
               instret=machine.instret)
    process = capture_process(proc)
    return VMSnapshot(program, cpu, process, capture_memory(machine.mem))


def capture_process(proc) -> dict:
    return dict(
        pid=proc.pid, tid=proc.tid, ppid=proc.ppid, uid=proc.uid, euid=proc.euid,
        gid=proc.gid, egid=proc.egid, argv=list(proc.argv), envp=list(proc.envp),
        auxv=[(int(k), int(v)) for k, v in proc.auxv], exe_path=proc.exe_path, cwd=proc.cwd,
        comm=proc.comm, brk_start=proc.brk_start, brk=proc.brk, mmap_top=proc.mmap_top,
        mmap_min=proc.mmap_min, fds=[_capture_fd(n, d) for n, d in sorted(proc.fds.items())],
        time_mode=proc.time_mode, ns_per_insn=float(proc.ns_per_insn),
        slept_ns=proc.slept_ns, random_mode=proc.random_mode,
        rand_counter=proc._rand_counter, clear_child_tid=proc.clear_child_tid,
        robust_list=tuple(proc.robust_list),
        sigactions=[(s, h, fl, m) for s, (h, fl, m) in sorted(proc.sigactions.items())],
        sigmask=proc.sigmask, pending=sorted(proc.pending), umask=proc.umask,
        rlimits=[(r, cur, mx) for r, (cur, mx) in sorted(proc.rlimits.items())],
        sigaltstack=tuple(proc.sigaltstack))


def _fd_record(fd: int, d, kind: int, **kw) -> dict:
    rec = dict(fd=fd, kind=kind, path=d.path, host_path="", flags=d.flags & 0xFFFFFFFF,
               status=d.flags & 0xFFFFFFFF, offset=0, cloexec=bool(d.cloexec),
               is_dir=bool(d.is_dir), owned=bool(d.owned), stdio=0, data=b"")
    rec.update(kw)
    return rec


def _capture_fd(fd: int, d) -> dict:
    if d.host_fd is None:
        return _fd_record(fd, d, FD_DATA, data=bytes(d.data or b""), offset=max(0, d.pos))
    if d.path in STDIO_NAMES:
        return _fd_record(fd, d, FD_STDIO, stdio=STDIO_NAMES.index(d.path))
    from dbtlab.runtime.linux.syscalls.fs import guest_oflags
    try:
        st = os.fstat(d.host_fd)
        import fcntl
        status = guest_oflags(fcntl.fcntl(d.host_fd, fcntl.F_GETFL))
    except OSError as e:
        raise SaveBlocked(f"savevm: guest fd {fd} ({d.path}): {e.strerror or e}") from None
    mode = st.st_mode
    if _stat.S_ISFIFO(mode) or _stat.S_ISSOCK(mode):
        what = "a pipe" if _stat.S_ISFIFO(mode) else "a socket"
        raise SaveBlocked(f"savevm: guest fd {fd} ({d.path}) is {what}, which cannot be "
                          "reopened from a snapshot; save before it is opened or after it "
                          "is closed")
    try:
        offset = os.lseek(d.host_fd, 0, os.SEEK_CUR)
    except OSError:
        offset = 0
    host_path = ""
    try:
        host_path = os.readlink(f"/proc/self/fd/{d.host_fd}")
    except OSError:
        pass
    same = False
    if host_path.startswith("/"):
        try:
            hs = os.stat(host_path)
            same = (hs.st_dev, hs.st_ino) == (st.st_dev, st.st_ino)
        except OSError:
            same = False
    if same:
        return _fd_record(fd, d, FD_FILE, host_path=host_path, status=status, offset=offset)
    if _stat.S_ISREG(mode):
        # unlinked (or replaced) while open: keep its contents, like a block device image
        if st.st_size > MAX_TMPFILE:
            raise SaveBlocked(f"savevm: guest fd {fd} ({d.path}) is an unlinked file of "
                              f"{st.st_size} bytes (more than {MAX_TMPFILE} cannot be stored)")
        data = _pread_all(d.host_fd, st.st_size)
        return _fd_record(fd, d, FD_TMPFILE, status=status, offset=offset, data=data)
    raise SaveBlocked(f"savevm: guest fd {fd} ({d.path}) cannot be reopened (its host file "
                      "is gone)")


def _pread_all(hfd: int, size: int) -> bytes:
    out = bytearray()
    while len(out) < size:
        b = os.pread(hfd, min(1 << 20, size - len(out)), len(out))
        if not b:
            break
        out += b
    return bytes(out)


# ---- restore: VMSnapshot -> machine --------------------------------------------------------------
def check_program(snap: VMSnapshot, path: str) -> None:
    """Refuse a program file that is not the one the snapshot was taken of."""
    digest, size = program_identity(path)
    if digest != snap.program["sha256"]:
        raise ProgramMismatch(
            f"snapshot is of {printable(snap.program_path)} (sha256 "
            f"{snap.program_sha256[:16]}...), but {printable(path)} has sha256 "
            f"{digest.hex()[:16]}...: refusing to load it into a different program")


def _reopen_host_file(n: int, path: str, oflags: int) -> int:
    """Open a saved descriptor's host file again. What a snapshot names is checked before
    it is opened: a FIFO (whose open would wait for a writer), a socket, a block device
    or a file of the host's /proc or /sys (this process's memory, not the saver's) is
    refused; the open itself does not block, and the file opened must be the one
    checked."""
    what = f"loadvm: cannot reopen guest fd {n} ({printable(path)})"
    try:
        st = os.stat(path)
    except (OSError, ValueError) as e:
        raise SnapshotError(f"{what}: {getattr(e, 'strerror', None) or e}") from None
    mode = st.st_mode
    if not (_stat.S_ISREG(mode) or _stat.S_ISDIR(mode) or _stat.S_ISCHR(mode)):
        raise SnapshotError(f"{what}: it is {_file_kind(st)}, which a snapshot never "
                            "reopens")
    pseudo = _pseudo_fs(st)
    if pseudo is not None:
        raise SnapshotError(f"{what}: it is a file of the host's {pseudo}, which a "
                            "snapshot never reopens")
    try:
        h = os.open(path, oflags | os.O_NONBLOCK | os.O_NOCTTY)
    except OSError as e:
        raise SnapshotError(f"{what}: {e.strerror or e}") from None
    try:
        fst = os.fstat(h)
        if (fst.st_dev, fst.st_ino) != (st.st_dev, st.st_ino):
            raise SnapshotError(f"{what}: the file changed while it was opened")
        if not oflags & os.O_NONBLOCK:
            import fcntl
            fcntl.fcntl(h, fcntl.F_SETFL, fcntl.fcntl(h, fcntl.F_GETFL) & ~os.O_NONBLOCK)
    except BaseException:
        os.close(h)
        raise
    return h


def _reopen_fds(records: list[dict], stdio: tuple[int | None, int | None, int | None]):
    """Open host descriptors for every saved guest fd; all or nothing."""
    from dbtlab.runtime.linux.process import FileDesc
    from dbtlab.runtime.linux.syscalls.fs import (O_APPEND, O_CREAT, O_EXCL, O_NONBLOCK, O_TRUNC,
                                            host_oflags)
    out: dict = {}
    try:
        for r in records:
            n, kind = r["fd"], r["kind"]
            common = dict(path=r["path"], flags=r["flags"], cloexec=r["cloexec"])
            if kind == FD_DATA:
                out[n] = FileDesc(None, data=r["data"], pos=r["offset"], **common)
            elif kind == FD_STDIO:
                h = stdio[r["stdio"]]
                if h is None or h < 0:
                    continue
                if r["owned"]:
                    out[n] = FileDesc(os.dup(h), **common)
                else:
                    out[n] = FileDesc(h, owned=False, **common)
            elif kind == FD_FILE:
                fl = (r["flags"] & ~(O_CREAT | O_EXCL | O_TRUNC) & ~(O_APPEND | O_NONBLOCK)) \
                    | (r["status"] & (O_APPEND | O_NONBLOCK))
                h = _reopen_host_file(n, r["host_path"], host_oflags(fl))
                out[n] = FileDesc(h, is_dir=r["is_dir"], **common)
                if _stat.S_ISDIR(os.fstat(h).st_mode) != r["is_dir"]:
                    raise SnapshotError(f"loadvm: guest fd {n} ({r['host_path']}) is no "
                                        "longer the same kind of file")
                if r["offset"]:
                    try:
                        os.lseek(h, r["offset"], os.SEEK_SET)
                    except OSError:
                        pass
            elif kind == FD_TMPFILE:
                tfd, tpath = tempfile.mkstemp(prefix="dbtlab-fd-")
                os.unlink(tpath)
                out[n] = FileDesc(tfd, **common)
                view = memoryview(r["data"])
                while view:
                    view = view[os.write(tfd, view):]
                if r["status"] & O_APPEND:
                    import fcntl
                    fcntl.fcntl(tfd, fcntl.F_SETFL, fcntl.fcntl(tfd, fcntl.F_GETFL)
                                | os.O_APPEND)
                os.lseek(tfd, r["offset"], os.SEEK_SET)
    except BaseException:
        for d in out.values():
            d.close()
        raise
    return out


def restore(machine, snap: VMSnapshot, *, stdio: tuple | None = None,
            program_checked: bool = False, fresh: bool = False) -> None:
    """Make ``machine`` the snapshot's machine: memory, CPU, instruction count, process.

    Everything that can fail (program check, reopening files) happens before the machine
    is touched; on failure the machine is unchanged. Cached translations are dropped.
    ``stdio``: the host descriptors for the guest's stdin/stdout/stderr (default: the ones
    the machine's process was given). ``fresh``: the machine has never run (nothing is
    translated yet), so the accelerator need not flush."""
    if not program_checked:
        check_program(snap, machine.program.path)
    proc = machine.proc
    if stdio is None:
        stdio = _current_stdio(proc)
    start = snap.start_config()
    program = machine.program
    if start != machine.start:
        from dbtlab.runtime.linux.loader import load_elf
        from dbtlab.runtime.linux.memory import GuestMemory
        scratch = GuestMemory()
        try:
            program = load_elf(scratch, machine.program.path, start)
        finally:
            scratch.close()
    new_fds = _reopen_fds(snap.process["fds"], stdio)
    # ---- nothing below can fail on a valid snapshot ----
    if not fresh:
        machine.accel.invalidate_all()
    _apply_memory(machine.mem, snap.memory)
    c = snap.cpu
    machine.cpu.set_arch(dict(x=c["x"], f=c["f"], pc=c["pc"], fflags=c["fflags"],
                              frm=c["frm"], res_addr=c["res_addr"], res_val=c["res_val"],
                              res_valid=int(c["res_valid"])))
    machine.instret = c["instret"]
    machine.program = program
    machine.start = start
    proc.program = program
    proc.cfg = start
    _apply_process(proc, snap.process, new_fds)
    log.info("loaded snapshot: %s", snap.describe())


def _current_stdio(proc) -> tuple:
    out = [None, None, None]
    for d in proc.fds.values():
        if not d.owned and d.path in STDIO_NAMES:
            out[STDIO_NAMES.index(d.path)] = d.host_fd
    return tuple(out)


def _apply_memory(mem, image: MemoryImage) -> None:
    for start, end, *_ in list(mem.regions()):
        mem.unmap(start, end - start)
    for first, n, prot, name in image.regions:
        mem.map(first << PAGE_SHIFT, n << PAGE_SHIFT, prot, name)
    for pn, raw in image.pages.items():
        mem.poke(pn << PAGE_SHIFT, raw)


def _apply_process(proc, s: dict, fds: dict) -> None:
    from dbtlab.runtime.linux.process import (RLIM_INFINITY, RLIMIT_CORE, RLIMIT_NOFILE,
                                        RLIMIT_STACK)
    for name in ("pid", "tid", "ppid", "uid", "euid", "gid", "egid", "exe_path", "cwd",
                 "comm", "brk_start", "brk", "mmap_top", "mmap_min", "time_mode",
                 "ns_per_insn", "slept_ns", "random_mode", "clear_child_tid", "sigmask",
                 "umask"):
        setattr(proc, name, s[name])
    proc.argv, proc.envp = list(s["argv"]), list(s["envp"])
    proc.auxv = [tuple(x) for x in s["auxv"]]
    proc._rand_counter = s["rand_counter"]
    proc.robust_list = tuple(s["robust_list"])
    proc.sigactions = {sig: (h, fl, m) for sig, h, fl, m in s["sigactions"]}
    proc.pending = set(s["pending"])
    proc.sigaltstack = tuple(s["sigaltstack"])
    if s["rlimits"] is None:
        proc.rlimits = {RLIMIT_STACK: (proc.cfg.stack_size, RLIM_INFINITY),
                        RLIMIT_NOFILE: (1024, 1048576), RLIMIT_CORE: (0, RLIM_INFINITY)}
    else:
        proc.rlimits = {r: (cur, mx) for r, cur, mx in s["rlimits"]}
    proc.exit_status = None
    proc.killed_by = None
    old = proc.fds
    proc.fds = fds
    for d in old.values():
        d.close()


def instantiate(snap: VMSnapshot, *, config=None, program: str | None = None,
                stdin: int = 0, stdout: int = 1, stderr: int = 2):
    """A new Machine in the snapshot's state, ready to ``run`` (under ``config.accel``).

    ``program``: where the ELF is now (default: the path recorded in the snapshot); it
    must be the same file (SHA-256)."""
    from dbtlab.runtime.config import RunConfig
    from dbtlab.runtime.machine import Machine
    path = program or snap.program_path
    if not os.path.exists(path):
        raise ProgramMismatch(f"snapshot program {printable(path)} does not exist (the "
                              "snapshot needs the exact ELF it was taken of)")
    check_program(snap, path)
    cfg = config or RunConfig()
    m = Machine(path, config=cfg, start=snap.start_config(), stdin=stdin, stdout=stdout,
                stderr=stderr)
    try:
        restore(m, snap, stdio=(stdin, stdout, stderr), program_checked=True, fresh=True)
    except BaseException:
        m.close()
        raise
    return m


# ---- comparing two machine states -----------------------------------------------------------------
_X_NAMES = ("zero", "ra", "sp", "gp", "tp", "t0", "t1", "t2", "s0", "s1", "a0", "a1", "a2",
            "a3", "a4", "a5", "a6", "a7", "s2", "s3", "s4", "s5", "s6", "s7", "s8", "s9",
            "s10", "s11", "t3", "t4", "t5", "t6")
#: process fields that legitimately differ between two runs of the same guest state
_PROCESS_IGNORED = ()


def diff(a: VMSnapshot, b: VMSnapshot, *, limit: int = 40) -> list[str]:
    """The differences between two machine states, one line each (empty: identical).
    Metadata (creation time, saving accelerator, dbtlab version) is not state and is
    ignored; so are the host descriptors behind the guest's files."""
    out: list[str] = []
    if a.program["sha256"] != b.program["sha256"]:
        out.append(f"program: {a.program_path} and {b.program_path} are different files")
    ca, cb = a.cpu, b.cpu
    for k in ("instret", "pc"):
        if ca[k] != cb[k]:
            out.append(f"cpu.{k}: {ca[k]:#x} != {cb[k]:#x}")
    for i in range(32):
        if ca["x"][i] != cb["x"][i]:
            out.append(f"cpu.x{i} ({_X_NAMES[i]}): {ca['x'][i]:#018x} != {cb['x'][i]:#018x}")
    for i in range(32):
        if ca["f"][i] != cb["f"][i]:
            out.append(f"cpu.f{i}: {ca['f'][i]:#018x} != {cb['f'][i]:#018x}")
    for k in ("fflags", "frm", "res_addr", "res_val", "res_valid"):
        if ca[k] != cb[k]:
            out.append(f"cpu.{k}: {ca[k]!r} != {cb[k]!r}")
    ra, rb = a.memory.regions, b.memory.regions
    if ra != rb:
        only_a, only_b = set(ra) - set(rb), set(rb) - set(ra)
        for first, n, prot, name in sorted(only_a):
            out.append(f"memory map: only in the first: {first << PAGE_SHIFT:#x}-"
                       f"{(first + n) << PAGE_SHIFT:#x} prot {prot} {name}")
        for first, n, prot, name in sorted(only_b):
            out.append(f"memory map: only in the second: {first << PAGE_SHIFT:#x}-"
                       f"{(first + n) << PAGE_SHIFT:#x} prot {prot} {name}")
    pa, pb = a.memory.pages, b.memory.pages
    for pn in sorted(set(pa) | set(pb)):
        x, y = pa.get(pn, ZERO_PAGE), pb.get(pn, ZERO_PAGE)
        if x != y:
            idx = [i for i in range(PAGE_SIZE) if x[i] != y[i]]
            addr = (pn << PAGE_SHIFT) + idx[0]
            out.append(f"memory page {pn << PAGE_SHIFT:#x}: {len(idx)} bytes differ, first at "
                       f"{addr:#x} ({x[idx[0]]:#04x} != {y[idx[0]]:#04x})")
    for k in a.process:
        if k in _PROCESS_IGNORED:
            continue
        va, vb = a.process[k], b.process.get(k)
        if k == "fds":
            va = [(d["fd"], d["kind"], d["path"], d["offset"], d["flags"]) for d in va]
            vb = [(d["fd"], d["kind"], d["path"], d["offset"], d["flags"]) for d in vb or []]
        if va != vb:
            out.append(f"process.{k}: {_short(va)} != {_short(vb)}")
    if len(out) > limit:
        out = out[:limit] + [f"... and {len(out) - limit} more differences"]
    return out


def _short(v) -> str:
    r = repr(v)
    return r if len(r) <= 80 else r[:77] + "..."


# ---- one-call helpers ----------------------------------------------------------------------------
def save_vm(machine, f: VMFile) -> VMSnapshot:
    """savevm to a stream: capture the stopped machine and write it."""
    snap = capture(machine)
    write_stream(snap, f)
    return snap


def load_vm(f: VMFile, machine) -> VMSnapshot:
    """loadvm from a stream into an existing machine (same program), all or nothing."""
    snap = read_stream(f)
    restore(machine, snap)
    return snap
