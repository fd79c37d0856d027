"""Live migration: iterative pre-copy of a running guest to another dbtlab process.

QEMU's design, on the VM-state stream of ``runtime.vmstate`` (the same sections a snapshot
has, sent as they become ready):

Source (QMP ``migrate`` with ``uri`` = ``tcp:HOST:PORT`` or ``unix:PATH``; a coroutine of
the main loop, status ``setup`` → ``active`` → ``completed`` | ``failed`` | ``cancelled``):

1. connect; write the stream header, the ``program`` section and the START of ``ram``;
2. *pass 1*: every mapped page, while the guest keeps running;
3. *pass k*: sample the memory map and the dirty pages (a ``run_on_cpu`` on the vCPU
   thread: microseconds, no STOP), send the pages changed since the last pass — until the
   estimated time to send what is still dirty fits ``downtime-limit`` (QEMU's
   threshold = bandwidth × downtime-limit) or ``x-max-rounds`` passes were made;
4. *stop and copy*: pause the vCPU (runstate ``finish-migrate``, STOP), send the last dirty
   pages and the END of ``ram``, the ``cpu`` and ``process`` sections and the end marker;
5. wait for the destination to confirm it loaded the state, tell it to run (if the guest
   was running) and enter ``postmigrate``: the guest now lives on the destination.

Any failure — connection refused, reset or cut mid-transfer, the destination rejecting
the stream or saying anything unexpected, a timeout, ``migrate_cancel``, a bug — ends the
migration as ``failed`` (or ``cancelled``) with ``error-desc`` saying why in one line, and
the guest resumes here if it was running: the source never loses the guest. The
destination's lines are read as they come (at most ``MAX_LINE`` bytes each), so a
destination that refused and hung up is reported by what it said even when the source
finds out through a failed send. Stalls end after ``x-timeout`` (migrate-set-parameters,
milliseconds; ``TIMEOUT`` by default) without progress: a destination that accepts no
data, is not ready, or does not confirm the state; on the destination, a connection on
which the next bytes of the stream do not come.

Dirty pages (``x-dirty-sync``): ``log`` uses the accelerator's store log where it can
cover a pass (the interpreter logs every store in Python; the llvm one logs JIT stores in a
4096-entry ring, which a busy guest overflows within microseconds — an overflowed pass
falls back to comparison); ``compare`` compares every mapped page with what the
destination holds (a copy kept here, like QEMU's XBZRLE cache); ``auto`` = ``log`` on the
interpreter, ``compare`` elsewhere (unicorn stores are never logged; the llvm ring would
only overflow, and turning it on costs a retranslation). Map changes (mmap, munmap, brk)
are always tracked through the memory's map listeners. What the destination holds is
tracked here too (pages unmapped and remapped between passes are re-sent or zeroed).

Destination (``dbtlab run --incoming tcp:HOST:PORT``): the main loop listens, and a
coroutine reads the stream as it arrives (the monitor keeps answering); a worker thread
parses and checks it section by section (``vmstate.read_stream``: every section's CRC,
versions, the map) — nothing is applied before the whole stream checked out. As soon as the
``program`` section is in, the machine is built (ELF load, accelerator start-up) in the
background, so downtime does not pay for it. Then the state is restored, the source is
told ``LOADED``, and the guest resumes when the source says ``RUN`` (anything else, or
nothing within ``x-timeout``: it waits paused for ``cont``). A failure — a bad stream, one
that stops arriving, a bug — reports one line ``ERROR <why>`` to the source and ends the
destination with exit status 1 and that line, as QEMU's does.

After the stream, both sides speak one-line messages on the same connection::

    destination → source   DBTLAB-MIGRATION LOADED | DBTLAB-MIGRATION ERROR <why>
    source → destination   DBTLAB-MIGRATION RUN | DBTLAB-MIGRATION STOP

Downtime (``query-migrate``) is measured on the source from the moment the vCPU was asked
to stop to the moment ``RUN`` was sent: it includes the destination's final parse and
restore.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import socket
import struct
import time
import types
import zlib
from dataclasses import dataclass, field

from dbtlab.runtime.vm import vmstate as V
from dbtlab.runtime.errors import DbtError
from dbtlab.runtime.monitor.mainloop import Address, VMError, _settle, parse_address, start_listener
from dbtlab.runtime.linux.memory import PAGE_SHIFT, PAGE_SIZE

log = logging.getLogger(__name__)

MSG_READY = b"DBTLAB-MIGRATION READY\n"
MSG_LOADED = b"DBTLAB-MIGRATION LOADED\n"
MSG_ERROR = b"DBTLAB-MIGRATION ERROR "
MSG_RUN = b"DBTLAB-MIGRATION RUN\n"
MSG_STOP = b"DBTLAB-MIGRATION STOP\n"

#: default of the ``x-timeout`` parameter (seconds): how long either side waits for the
#: other to make progress — accept the next bytes, answer, send the next bytes of the
#: stream — before the migration fails (QEMU leaves this to TCP keepalives; a stalled peer
#: must not hold a stopped guest)
TIMEOUT = 60.0
#: connecting gives up after this long (or x-timeout, if shorter)
CONNECT_TIMEOUT = 10.0
#: longest line either side accepts from the other (the replies are a few dozen bytes; an
#: ERROR line carries at most about 1000 bytes of reason)
MAX_LINE = 4096
#: longest reason quoted from the peer
MAX_REASON = 1000
#: bytes handed to the socket at a time (each must leave within x-timeout)
SEND_PIECE = 1 << 20
#: bytes the destination reads ahead of its parser (a fast source fills no more memory)
FEED_LIMIT = 32 << 20
#: pages compressed per worker-thread job during pre-copy (the loop sends between jobs)
SLICE_PAGES = 512
DIRTY_SYNC_MODES = ("auto", "log", "compare")
#: the largest value an integer parameter takes (QEMU's are 64-bit)
MAX_PARAMETER = (1 << 63) - 1


class MigrationFailed(DbtError):
    """Why a migration failed (the text goes to ``error-desc``)."""


# ---- parameters --------------------------------------------------------------------------------
@dataclass
class Parameters:
    """QEMU's migration parameters that apply here (migrate-set-parameters)."""

    downtime_limit: int = 300          # ms the final stop-and-copy may take (QEMU default)
    max_bandwidth: int = 0             # bytes per second; 0 = unlimited
    x_max_rounds: int = 30             # pre-copy passes before stop-and-copy regardless
    x_dirty_sync: str = "auto"         # auto | log | compare
    #: zlib level of the pages sent (QEMU's compress-level). 0 = stored: on a local link
    #: compressing costs far more time than it saves (~75 us per page at level 6 against
    #: ~3 us stored), and the stop-and-copy pays it in downtime; raise it for slow links.
    compress_level: int = 0
    #: ms either side waits for the other to make progress before failing (``TIMEOUT``)
    x_timeout: int = field(default_factory=lambda: int(TIMEOUT * 1000))

    def update(self, **kw) -> None:
        new = dict(self.__dict__)
        for k, v in kw.items():
            if k not in new:
                raise DbtError(f"Parameter '{k.replace('_', '-')}' is unexpected")
            if isinstance(v, int) and v > MAX_PARAMETER:
                raise DbtError(f"Parameter '{k.replace('_', '-')}' must be at most "
                               f"{MAX_PARAMETER}")
            if k == "x_dirty_sync":
                if v not in DIRTY_SYNC_MODES:
                    raise DbtError(f"Parameter 'x-dirty-sync' must be one of "
                                   f"{', '.join(DIRTY_SYNC_MODES)}")
            elif k == "compress_level" and not 0 <= v <= 9:
                raise DbtError("Parameter 'compress-level' must be between 0 and 9")
            elif k in ("x_max_rounds", "x_timeout") and v < 1:
                raise DbtError(f"Parameter '{k.replace('_', '-')}' must be at least 1")
            elif v < 0:
                raise DbtError(f"Parameter '{k.replace('_', '-')}' must not be negative")
            new[k] = v
        self.__dict__.update(new)

    def info(self) -> dict:
        return {k.replace("_", "-"): v for k, v in self.__dict__.items()}

    @property
    def timeout(self) -> float:
        """``x-timeout`` in seconds."""
        return self.x_timeout / 1000


# ---- dirty-page tracking ---------------------------------------------------------------------------
class DirtyTracker:
    """Which pages must be (re)sent, and what the destination holds.

    ``start``/``sync``/``stop`` run on the vCPU thread (or while it is parked); ``scan``
    and ``encode`` run in a worker thread, one job at a time."""

    def __init__(self, machine, mode: str, compress_level: int = V.ZLIB_LEVEL) -> None:
        self.m = machine
        self.level = compress_level
        name = machine.accel.name
        if mode == "auto":
            mode = "log" if name == "interp" else "compare"
        if mode == "log" and name not in ("interp", "llvm"):
            raise MigrationFailed(f"x-dirty-sync log: the {name} accelerator does not log "
                                  "its stores; use compare")
        self.mode = mode
        self.shadow: dict[int, bytes] = {}     # page -> bytes the destination holds
        self.map_events: set[int] = set()
        self.overflows = 0
        self._log_was_on = False
        self._started = False

    def start(self) -> None:
        mem = self.m.mem
        mem.map_listeners.append(self._on_map)
        if self.mode == "log":
            self._log_was_on = mem.write_log is not None
            self.m.accel.enable_write_log()
            self._take_log()
        self._started = True

    def stop(self) -> None:
        if not self._started:
            return
        self._started = False
        mem, accel = self.m.mem, self.m.accel
        if self._on_map in mem.map_listeners:
            mem.map_listeners.remove(self._on_map)
        if self.mode == "log" and not self._log_was_on:
            mem.write_log = None
            if getattr(accel, "write_log", None) is not None:    # llvm: back to plain stores
                accel.write_log = None
                accel.invalidate_all()

    def _on_map(self, event: str, addr: int, size: int, prot: int, host: int) -> None:
        self.map_events.update(range(addr >> PAGE_SHIFT, (addr + size) >> PAGE_SHIFT))

    def _take_log(self) -> set[int] | None:
        try:
            return self.m.accel.take_written_pages()
        except RuntimeError:                      # the llvm ring overflowed: forget it
            self.overflows += 1
            env = getattr(self.m.accel, "env", None)
            if env is not None:
                env.state.wlog_n = 0
            self.m.cpu.wlog_n = 0
            return None

    def sync(self) -> tuple[list, list[int], set[int] | None]:
        """The memory map, the mapped pages, and the pages written since the last sync
        (None: unknown, compare them all)."""
        mem = self.m.mem
        regions = V.memory_regions(mem)
        mapped = sorted(mem.pages)
        logged = None
        if self.mode == "log":
            logged = self._take_log()
            if logged is not None:
                logged |= self.map_events
        self.map_events.clear()
        return regions, mapped, logged

    def scan(self, candidates, regions: list | None = None) -> list[tuple[int, bytes | None]]:
        """Pages whose contents differ from what the destination holds: (page, bytes), or
        (page, None) for a page that became zero. ``regions`` (the whole map) instead of
        ``candidates``: every mapped page, zero pages found in bulk."""
        mem = self.m.mem
        shadow = self.shadow
        if regions is not None:
            nonzero = _nonzero_pages(mem, regions)
            if nonzero is not None:
                nz = set(nonzero)
                mapped = V.RegionIndex(regions)
                gone = [(pn, None) for pn in shadow if pn not in nz and pn in mapped]
                return sorted(self._changed(nonzero) + gone)
            candidates = [pn for first, n, _p, _name in regions
                          for pn in range(first, first + n)]
        out = []
        for pn in candidates:
            try:
                raw = mem.page_bytes(pn).tobytes()
            except KeyError:                      # unmapped meanwhile: the next sync sees it
                continue
            old = shadow.get(pn)
            if raw == V.ZERO_PAGE:
                if old is not None:
                    out.append((pn, None))
            elif raw != old:
                out.append((pn, raw))
        return out

    def _changed(self, pages) -> list[tuple[int, bytes | None]]:
        mem, shadow = self.m.mem, self.shadow
        out = []
        for pn in pages:
            try:
                raw = mem.page_bytes(pn).tobytes()
            except KeyError:
                continue
            if raw != shadow.get(pn):
                out.append((pn, raw if raw != V.ZERO_PAGE else None))
        return [(pn, raw) for pn, raw in out if raw is not None or pn in shadow]

    def encode(self, saver: V.RamSaver, f: V.VMFile, sink: "_Sink", regions: list,
               items: list[tuple[int, bytes | None]], *, final: bool = False) -> bytes:
        """The ram PART (END if ``final``) sections for ``items``, as bytes."""
        pages = {pn: raw for pn, raw in items if raw is not None}
        saver.source = V.MemoryImage(regions, pages)
        if self.level:
            saver.compressed = lambda pn: zlib.compress(pages[pn], self.level)
        else:
            saver.compressed = lambda pn: stored_page(pages[pn])
        saver.sent = set(self.shadow)           # what the destination holds, mapped or not
        saver.iterate([pn for pn, _ in items], final=final)
        for pn, raw in items:
            if raw is None:
                self.shadow.pop(pn, None)
            else:
                self.shadow[pn] = raw
        f.flush()
        f.check()
        return sink.take()


def _nonzero_pages(mem, regions: list) -> list[int] | None:
    """The non-zero pages of ``regions``, found with numpy over the host view (a few ms
    for megabytes, against ~8 us per page page by page); None without numpy."""
    try:
        import numpy as np
    except ImportError:                           # pragma: no cover - numpy comes with
        return None                               # matplotlib, a dependency
    import ctypes
    words = PAGE_SIZE // 8
    out: list[int] = []
    for first, n, _prot, _name in regions:
        buf = (ctypes.c_uint64 * (n * words)).from_address(mem.host_address(first << PAGE_SHIFT))
        a = np.frombuffer(buf, dtype=np.uint64).reshape(n, words)
        out.extend((np.flatnonzero(a.any(axis=1)) + first).tolist())
    return out


def stored_page(raw: bytes) -> bytes:
    """``raw`` as a zlib stream of one stored block (what ``zlib.compress(raw, 0)`` makes,
    at a third of its cost: no deflate state to set up)."""
    n = len(raw)
    return (b"\x78\x01\x01" + struct.pack("<HH", n, n ^ 0xFFFF) + raw
            + struct.pack(">I", zlib.adler32(raw)))


class _Sink:
    """A VMFile back end that collects what is written, for the loop to send."""

    name = "migration stream"

    def __init__(self) -> None:
        self.chunks: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.chunks.append(bytes(data))

    def read(self, n: int) -> bytes:
        raise OSError("migration stream is write-only")

    def at_end(self):
        return None

    def close(self) -> None:
        pass

    def take(self) -> bytes:
        out = b"".join(self.chunks)
        self.chunks.clear()
        return out


class _NoMemory:
    """Stands in for guest memory when only the CPU, process and program are captured."""

    pages: dict = {}

    def regions(self):
        return iter(())

    def page_bytes(self, pn: int):
        raise KeyError(pn)


def capture_without_memory(machine) -> V.VMSnapshot:
    """``vmstate.capture`` minus the memory copy (the pages travel separately)."""
    proxy = types.SimpleNamespace(proc=machine.proc, program=machine.program,
                                  start=machine.start, cpu=machine.cpu,
                                  instret=machine.instret, accel=machine.accel,
                                  mem=_NoMemory())
    return V.capture(proxy)


# ---- the source ----------------------------------------------------------------------------------
def one_line(text: str, limit: int = MAX_REASON) -> str:
    """``text`` as one printable line of at most ``limit`` characters (reasons quote what a
    peer sent and end up in error-desc, logs and the destination's last line)."""
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    text = "".join(c if c.isprintable() else " " for c in text)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _os_why(e: BaseException) -> str:
    return getattr(e, "strerror", None) or str(e) or type(e).__name__


async def _connect(addr: Address) -> socket.socket:
    """A connected non-blocking socket to ``addr`` (OSError or ValueError if not)."""
    loop = asyncio.get_running_loop()
    if addr.kind == "unix":
        targets = [(socket.AF_UNIX, socket.SOCK_STREAM, 0, addr.path)]
    else:
        infos = await loop.getaddrinfo(addr.host, addr.port, type=socket.SOCK_STREAM)
        targets = [(fam, typ, proto, sa) for fam, typ, proto, _name, sa in infos]
    err: BaseException = OSError("no address")
    for fam, typ, proto, sa in targets:
        sock = socket.socket(fam, typ, proto)
        try:
            sock.setblocking(False)
            await loop.sock_connect(sock, sa)
            return sock
        except BaseException as e:
            sock.close()
            if not isinstance(e, OSError):
                raise
            err = e
    raise err


async def _settle_pending() -> None:
    """Let what became ready with a deadline run first (a loaded machine may not run the
    loop for longer than a short timeout; data that arrived meanwhile is not a stall)."""
    for _ in range(3):
        await asyncio.sleep(0)


class _Peer:
    """The source's connection to the destination. The stream goes out with ``send``
    (each piece must leave within the timeout); a task reads the destination's lines as
    they come, so what it said before it hung up is known even when the hang-up is found
    by a failed send."""

    def __init__(self, sock: socket.socket, addr: Address, timeout: float) -> None:
        self.sock = sock
        self.addr = addr
        self.timeout = timeout
        self.loop = asyncio.get_running_loop()
        self.lines: list[bytes] = []          # complete lines not yet taken
        self.ready = False                    # READY was taken
        self.end: str | None = None           # why reading stopped (None: still reading)
        self.changed = asyncio.Event()
        self._partial = b""
        self.task = self.loop.create_task(self._read())

    async def _read(self) -> None:
        try:
            while True:
                data = await self.loop.sock_recv(self.sock, MAX_LINE)
                if not data:
                    if self._partial:         # a last line without its newline
                        self.lines.append(self._partial)
                        self._partial = b""
                    self.end = "the destination closed the connection"
                    return
                *complete, self._partial = (self._partial + data).split(b"\n")
                self.lines.extend(line + b"\n" for line in complete)
                if len(self._partial) > MAX_LINE or \
                        any(len(line) > MAX_LINE for line in complete):
                    self.end = f"the destination sent a line longer than {MAX_LINE} bytes"
                    return
                self.changed.set()
        except OSError as e:
            self.end = f"connection to {self.addr} lost: {_os_why(e)}"
        finally:
            self.changed.set()

    def _refusal(self) -> MigrationFailed | None:
        for line in self.lines:
            if line.startswith(MSG_ERROR):
                return _reply_error(line)
        return None

    def check(self) -> None:
        """Raise MigrationFailed if the destination refused, hung up or said something
        other than READY (once) so far."""
        refused = self._refusal()
        if refused is not None:
            raise refused
        while self.lines and not self.ready:
            _check_reply(self.lines.pop(0), MSG_READY)
            self.ready = True
        if self.lines:
            _check_reply(self.lines[0], b"")      # nothing else is expected yet
        if self.end is not None:
            raise MigrationFailed(self.end)

    async def wait_change(self, timeout: float) -> None:
        self.changed.clear()
        if self.end is None:
            try:
                await asyncio.wait_for(self.changed.wait(), timeout)
            except asyncio.TimeoutError:
                pass

    async def next_line(self, what: str) -> bytes:
        """The destination's next line; MigrationFailed if it hung up or said nothing for
        the timeout (``what`` it was expected to do)."""
        deadline = time.monotonic() + self.timeout
        while not self.lines:
            if self.end is not None:
                raise MigrationFailed(self.end)
            left = deadline - time.monotonic()
            if left <= 0:
                await _settle_pending()          # a line that came with the deadline
                if self.lines or self.end is not None:
                    continue
                raise MigrationFailed(f"the destination did not {what} within "
                                      f"{self.timeout:g} s")
            await self.wait_change(left)
        return self.lines.pop(0)

    async def send(self, data: bytes) -> None:
        view = memoryview(data)
        for i in range(0, len(view), SEND_PIECE):
            task = self.loop.create_task(self.loop.sock_sendall(self.sock,
                                                                view[i:i + SEND_PIECE]))
            try:
                await asyncio.wait({task}, timeout=self.timeout)
                if not task.done():
                    await _settle_pending()      # it may have finished with the deadline
                if not task.done():
                    task.cancel()
                    await asyncio.gather(task, return_exceptions=True)
                    raise MigrationFailed(await self.why_lost(
                        f"the destination accepted no data for {self.timeout:g} s"))
                task.result()
            except OSError as e:
                raise MigrationFailed(await self.why_lost(
                    f"connection to {self.addr} lost: {_os_why(e)}")) from None
            except asyncio.CancelledError:
                task.cancel()
                raise

    async def why_lost(self, why: str) -> str:
        """Why the connection broke: what the destination said before it went (read to
        its end first: a refusal followed by a hang-up often surfaces as a failed send),
        else ``why``."""
        deadline = time.monotonic() + min(5.0, self.timeout)
        while self.end is None and self._refusal() is None and time.monotonic() < deadline:
            await self.wait_change(deadline - time.monotonic())
        refused = self._refusal()
        if refused is not None:
            return str(refused)
        if self.end is not None and self.end.startswith("the destination"):
            return self.end
        return why

    async def aclose(self) -> None:
        """Stop reading, then close (never a descriptor the loop still watches)."""
        self.task.cancel()
        try:
            await asyncio.gather(self.task, return_exceptions=True)
            await asyncio.sleep(0)             # a cancelled send's clean-up runs first
        finally:
            self.sock.close()


class OutgoingMigration:
    """One outgoing migration: its coroutine and what ``query-migrate`` reports."""

    def __init__(self, vm, addr: Address, params: Parameters) -> None:
        self.vm = vm
        self.addr = addr
        self.params = Parameters(**params.__dict__)
        self.status = "setup"
        self.error = ""
        self.t_start = time.monotonic()
        self.t_setup = None
        self.t_end = None
        self.downtime = None
        self.expected_downtime = None
        self.transferred = 0
        self.pages = 0               # page records sent (PAGE + ZERO)
        self.zero_pages = 0
        self.total_pages = 0
        self.remaining_pages = 0
        self.dirty_rate = 0.0        # pages per second dirtied between the last two syncs
        self.passes: list[dict] = []
        self.dirty_sync = ""
        self.bandwidth = 0.0         # bytes per second achieved in the last pass
        self.task: asyncio.Task | None = None
        self._peer: _Peer | None = None
        self._tracker: DirtyTracker | None = None
        # what to give back on failure: did this migration stop the guest, and how was it
        self._paused_here = False
        self._was_running = False
        self._prev_state = ""

    # ---- reporting ----
    def _set_status(self, status: str) -> None:
        self.status = status
        log.info("migration to %s: %s%s", self.addr, status,
                 f" ({self.error})" if self.error else "")
        self.vm.emit("MIGRATION", {"status": status})

    def info(self) -> dict:
        now = self.t_end or time.monotonic()
        d = {"status": self.status, "total-time": int(1e3 * (now - self.t_start))}
        if self.t_setup is not None:
            d["setup-time"] = int(1e3 * (self.t_setup - self.t_start))
        ram = {"transferred": self.transferred, "total": self.total_pages * PAGE_SIZE,
               "remaining": self.remaining_pages * PAGE_SIZE,
               "duplicate": self.zero_pages, "normal": self.pages - self.zero_pages,
               "normal-bytes": (self.pages - self.zero_pages) * PAGE_SIZE,
               "dirty-pages-rate": int(self.dirty_rate),
               "mbps": 8 * self.bandwidth / 1e6,
               "dirty-sync-count": len(self.passes), "page-size": PAGE_SIZE}
        d["ram"] = ram
        if self.downtime is not None:
            d["downtime"] = int(round(1e3 * self.downtime))
            d["x-downtime-us"] = int(1e6 * self.downtime)
        elif self.expected_downtime is not None and self.status == "active":
            d["expected-downtime"] = int(1e3 * self.expected_downtime)
        if self.error:
            d["error-desc"] = self.error
        d["x-rounds"] = len(self.passes)
        d["x-passes"] = list(self.passes)
        d["x-dirty-sync"] = self.dirty_sync
        return d

    # ---- the coroutine ----
    async def run(self) -> None:
        """The migration. Whatever happens, it ends ``completed``, ``failed`` (with
        ``error-desc``) or ``cancelled``, and a failed or cancelled one gives the guest back
        as it was."""
        vm = self.vm
        self._was_running = vm.running
        self._prev_state = vm.runstate
        try:
            await self._migrate()
        except asyncio.CancelledError:
            self.error = self.error or "cancelled"
            self.t_end = time.monotonic()
            if not vm.done.done():
                self._recover()
                self._set_status("cancelled")
            raise
        except (MigrationFailed, V.SnapshotError, DbtError) as e:
            self._fail(str(e))
        except (OSError, EOFError) as e:
            self._fail(f"connection to {self.addr} lost: {_os_why(e)}")
        except Exception as e:                     # a bug: fail, never leave it "active"
            log.exception("migration to %s: internal error", self.addr)
            self._fail(f"internal error: {type(e).__name__}: {e}")
        finally:
            await self._cleanup()

    async def _migrate(self) -> None:
        vm = self.vm
        m = vm.machine
        loop = vm.loop
        timeout = self.params.timeout
        try:
            sock = await asyncio.wait_for(_connect(self.addr), min(CONNECT_TIMEOUT, timeout))
        except asyncio.TimeoutError:
            raise MigrationFailed(f"cannot connect to {self.addr}: timed out") from None
        except (OSError, ValueError) as e:
            raise MigrationFailed(f"cannot connect to {self.addr}: {_os_why(e)}") from None
        peer = self._peer = _Peer(sock, self.addr, timeout)
        tracker = self._tracker = DirtyTracker(m, self.params.x_dirty_sync,
                                               self.params.compress_level)
        self.dirty_sync = tracker.mode
        await loop.run_in_executor(None, _warm_up, None)    # numpy, for the page scans
        await vm.on_cpu(tracker.start)
        sink = _Sink()
        f = V.VMFile(sink, True, rate_limit=self.params.max_bandwidth or None)
        w = V.StreamWriter(f)
        head = await vm.on_cpu(lambda: capture_without_memory(m))
        w.full("program", 0, V.VMSTATE_PROGRAM.version,
               V.VMSTATE_PROGRAM.encode(head.program))
        saver = V.RamSaver(w, V.MemoryImage([], {}))
        regions, mapped, _ = await vm.on_cpu(tracker.sync)
        saver.source = V.MemoryImage(regions, {})
        saver.setup()
        f.flush()
        await self._send(sink.take())
        self.t_setup = time.monotonic()
        self._set_status("active")

        # ---- pre-copy passes while the guest runs ----
        t_sync_prev = t_sync = time.monotonic()
        candidates = None                       # None: every mapped page
        while True:
            peer.check()                        # it refused or hung up early: say why
            t0 = time.monotonic()
            items = await loop.run_in_executor(None, tracker.scan, candidates or (),
                                               regions if candidates is None else None)
            self.total_pages = len(mapped)
            self.remaining_pages = len(items)
            if self.passes:
                self.dirty_rate = len(items) / max(1e-6, t_sync - t_sync_prev)
                est = self._estimate(len(items))
                self.expected_downtime = est
                if est * 1e3 <= self.params.downtime_limit or \
                        len(self.passes) >= self.params.x_max_rounds:
                    # stop and copy only once the destination has built its machine
                    if await self._destination_ready():
                        break
            sent0 = self.transferred
            for i in range(0, len(items), SLICE_PAGES):
                part = items[i:i + SLICE_PAGES]
                data = await loop.run_in_executor(
                    None, functools.partial(tracker.encode, saver, f, sink, regions, part))
                await self._send(data)
                self._count(part)
            dt = time.monotonic() - t0
            nbytes = self.transferred - sent0
            if items and dt > 0:
                self.bandwidth = nbytes / dt
            self.passes.append({"pass": len(self.passes) + 1, "pages": len(items),
                                "bytes": nbytes, "seconds": round(dt, 6),
                                "log": candidates is not None})
            vm.emit("MIGRATION_PASS", {"pass": len(self.passes)})
            regions, mapped, logged = await vm.on_cpu(tracker.sync)
            t_sync_prev, t_sync = t_sync, time.monotonic()
            candidates = None if logged is None else _mapped_only(logged, mapped)

        # ---- stop and copy ----
        async with vm.lock:
            t_stop = time.monotonic()
            self._was_running = vm.running
            self._prev_state = vm.runstate
            self._paused_here = True              # set first: a stop that times out half-stops
            await vm._pause_vcpu("finish-migrate")
            t_paused = time.monotonic()
            regions, mapped, logged = tracker.sync()
            # the pages found dirty when the passes ended were not sent yet
            candidates = None if logged is None else _mapped_only(
                logged | {pn for pn, _ in items}, mapped)
            data, last = await loop.run_in_executor(
                None, functools.partial(self._final, tracker, saver, f, sink, w, m,
                                        regions, candidates))
            t_encoded = time.monotonic()
            await self._send(data)
            t_sent = time.monotonic()
            self._count(last)
            final = {"pass": len(self.passes) + 1, "pages": len(last), "bytes": len(data),
                     "seconds": round(t_sent - t_stop, 6), "log": False, "final": True,
                     "stop-seconds": round(t_paused - t_stop, 6),
                     "encode-seconds": round(t_encoded - t_paused, 6),
                     "send-seconds": round(t_sent - t_encoded, 6)}
            self.passes.append(final)
            self.remaining_pages = 0
            peer.check()
            _check_reply(await peer.next_line("confirm loading the state"), MSG_LOADED)
            final["destination-seconds"] = round(time.monotonic() - t_sent, 6)
            await peer.send(MSG_RUN if self._was_running else MSG_STOP)
            self.downtime = time.monotonic() - t_stop
            self.t_end = time.monotonic()
            vm.set_runstate("postmigrate")
            self._paused_here = False             # the guest is the destination's now
            self._set_status("completed")
            log.info("migration completed: %d passes, %d bytes, downtime %.1f ms",
                     len(self.passes), self.transferred, 1e3 * self.downtime)

    async def _cleanup(self) -> None:
        vm, tracker = self.vm, self._tracker
        if self._peer is not None:
            await self._peer.aclose()
        if tracker is not None and vm.vcpu is not None and vm.vcpu.ended is None:
            try:
                if vm.vcpu.parked:
                    tracker.stop()
                else:
                    await vm.vcpu.run_on_cpu(tracker.stop)
            except Exception:                       # pragma: no cover - defensive
                log.exception("migration: could not stop dirty tracking")

    async def _destination_ready(self) -> bool:
        """Has the destination said READY (its machine is built)? Waits a little; raises
        MigrationFailed if it refused or hung up, or stays unready too long."""
        peer = self._peer
        peer.check()
        if not peer.ready:
            await peer.wait_change(0.05)
            peer.check()
            if not peer.ready:
                if time.monotonic() - self.t_setup > peer.timeout:
                    raise MigrationFailed(f"the destination was not ready within "
                                          f"{peer.timeout:g} s")
                return False
        return True

    def _estimate(self, npages: int) -> float:
        """Seconds to send ``npages`` at the last pass's rate."""
        if not npages:
            return 0.0
        per_page = (self.transferred / self.pages) if self.pages else PAGE_SIZE
        rate = self.bandwidth or 100e6
        return npages * per_page / rate

    def _count(self, items) -> None:
        self.pages += len(items)
        self.zero_pages += sum(1 for _pn, raw in items if raw is None)

    @staticmethod
    def _final(tracker: DirtyTracker, saver, f, sink, w, m, regions, candidates):
        """Worker thread, vCPU parked: the last pages, END, cpu, process, end marker."""
        items = tracker.scan(candidates or (), regions if candidates is None else None)
        data = tracker.encode(saver, f, sink, regions, items, final=True)
        state = capture_without_memory(m)
        w.full("cpu", 0, V.VMSTATE_CPU.version, V.VMSTATE_CPU.encode(state.cpu))
        w.full("process", 0, V.VMSTATE_PROCESS.version,
               V.VMSTATE_PROCESS.encode(state.process))
        w.finish()
        return data + sink.take(), items

    async def _send(self, data: bytes) -> None:
        if data:
            await self._peer.send(data)
            self.transferred += len(data)

    def _recover(self) -> None:
        """Give the guest back as the migration found it (QEMU: a failed migration resumes
        the source if it was running)."""
        vm = self.vm
        if not self._paused_here or vm.done.done() or vm.vcpu is None \
                or vm.vcpu.ended is not None:
            return
        self._paused_here = False
        if self._was_running:
            if vm.runstate == "running":          # the stop timed out: it never took
                vm.vcpu.resume()
            else:
                vm._resume_vcpu()
        else:
            vm.set_runstate(self._prev_state)

    def _fail(self, why: str) -> None:
        self.error = one_line(why) or "failed"
        self.t_end = time.monotonic()
        log.warning("migration to %s failed: %s", self.addr, self.error)
        self._recover()
        if not self.vm.done.done():
            self._set_status("failed")

    def _task_done(self, task: asyncio.Task) -> None:
        """Last line of defence: a task that ended without a final status failed."""
        if self.status not in ("setup", "active") or self.vm.done.done():
            return
        if task.cancelled():                      # cancelled before it started
            self.error = "cancelled"
            self.t_end = time.monotonic()
            self._set_status("cancelled")
        else:
            self._fail("internal error: the migration ended without a result")


def _reply_error(line: bytes) -> MigrationFailed:
    why = one_line(line[len(MSG_ERROR):].decode("utf-8", "replace"))
    return MigrationFailed(f"the destination refused the state: {why}")


def _check_reply(line: bytes, want: bytes) -> None:
    """The destination's reply must be ``want``; otherwise say what it said."""
    if line == want:
        return
    if line.startswith(MSG_ERROR):
        raise _reply_error(line)
    if not line:
        raise MigrationFailed("the destination closed the connection")
    raise MigrationFailed(f"unexpected reply from the destination: {line[:80]!r}")


def _mapped_only(pages: set[int], mapped: list[int]) -> list[int]:
    m = set(mapped)
    return sorted(p for p in pages if p in m)


async def start_outgoing(vm, uri: str) -> None:
    """QMP migrate: check, then start the migration coroutine (returns at once)."""
    vm.check_alive()
    if vm.outgoing is not None and vm.outgoing.status in ("setup", "active"):
        raise VMError("migrate: a migration is already in progress")
    if vm.runstate not in ("running", "paused", "prelaunch"):
        raise VMError(f"migrate: not possible in runstate {vm.runstate}")
    addr = parse_address(uri, "migrate: uri")
    # QEMU's migration blockers: refuse before starting what cannot be completed
    await vm.on_cpu(lambda: V.capture_process(vm.machine.proc))
    if vm.outgoing is not None and vm.outgoing.status in ("setup", "active"):
        raise VMError("migrate: a migration is already in progress")   # started meanwhile
    mig = OutgoingMigration(vm, addr, vm.migration_params)
    vm.outgoing = mig
    mig._set_status("setup")
    mig.task = vm.spawn(mig.run())
    mig.task.add_done_callback(mig._task_done)


def cancel_outgoing(vm) -> None:
    """QMP migrate_cancel (nothing to do when no migration is in progress)."""
    mig = vm.outgoing
    if mig is not None and mig.task is not None and not mig.task.done():
        mig.task.cancel()


# ---- the destination -------------------------------------------------------------------------------
class _Feed:
    """A VMFile back end fed by the loop's coroutine and read by the parser thread."""

    name = "migration socket"

    def __init__(self) -> None:
        import queue
        import threading
        self.q: "queue.Queue[bytes]" = queue.Queue()
        self.pending = b""
        self.eof = False
        self.queued = 0                # bytes put and not yet taken by the parser
        self._lock = threading.Lock()

    def put(self, data: bytes) -> None:
        with self._lock:
            self.queued += len(data)
        self.q.put(data)

    def read(self, n: int) -> bytes:
        if not self.pending:
            if self.eof:
                return b""
            self.pending = self.q.get()
            with self._lock:
                self.queued -= len(self.pending)
            if not self.pending:
                self.eof = True
                return b""
        out, self.pending = self.pending[:n], self.pending[n:]
        return out

    def write(self, data: bytes) -> None:
        raise OSError("migration stream is read-only")

    def at_end(self):
        return None

    def close(self) -> None:
        pass


_SEC = struct.Struct(">BI")
_U32 = struct.Struct(">I")


def peek_program(head: bytes) -> dict | None | bool:
    """The program section at the start of a stream: its state, None if more bytes are
    needed, False if the stream does not start that way (the parser will say why)."""
    base = len(V.MAGIC) + 4
    if len(head) < base + _SEC.size + 1:
        return None
    if head[:len(V.MAGIC)] != V.MAGIC:
        return False
    kind, _sid = _SEC.unpack_from(head, base)
    nlen = head[base + _SEC.size]
    p = base + _SEC.size + 1
    if kind != V.SEC_FULL:
        return False
    if len(head) < p + nlen + 12:
        return None
    name = head[p:p + nlen]
    _inst, version, plen = struct.unpack_from(">III", head, p + nlen)
    if name != b"program" or plen > V.MAX_PAYLOAD:
        return False
    start = p + nlen + 12
    if len(head) < start + plen:
        return None if plen <= 1 << 20 else False
    try:
        return V.decode_section("program", bytes(head[start:start + plen]), version)
    except V.SnapshotError:                     # not a program section we can read
        return False


def _warm_up(accel: str | None) -> None:
    """Import what building the machine needs (~0.2 s for llvm) and numpy (the page
    scans), before the stream arrives rather than during the downtime."""
    import importlib
    names = ["numpy"] + (["dbtlab.runtime.machine", f"dbtlab.runtime.accel.{accel}"]
                         if accel else [])
    for name in names:
        try:
            importlib.import_module(name)
        except ImportError:                       # pragma: no cover - numpy is optional
            pass


def _prebuild(program: dict, config):
    """The destination machine, built from the program section while RAM streams in."""
    from dbtlab.runtime.machine import Machine
    import os
    head = V.VMSnapshot(program, {}, {}, V.MemoryImage([], {}))
    path = program["path"]
    if not os.path.exists(path):
        raise V.ProgramMismatch(f"the migrated program {path} does not exist here (the "
                                "destination needs the exact ELF)")
    V.check_program(head, path)
    return Machine(path, config=config, start=head.start_config(), stdin=0, stdout=1,
                   stderr=2)


def _restore_into(machine, snap: V.VMSnapshot) -> None:
    # nothing is translated yet: no flush (an llvm flush costs ~50 ms of downtime)
    V.restore(machine, snap, stdio=(0, 1, 2), program_checked=True, fresh=True)


class IncomingMigration:
    """The destination's side: listens, receives one migration, starts the guest."""

    def __init__(self, vm, addr: Address) -> None:
        self.vm = vm
        self.addr = addr
        self.status = "setup"
        self.error = ""
        self.received = 0
        self.t_start = None
        self.t_ready = None
        self.t_end = None
        self.busy = False
        self.server = None
        self.stream_error = ""       # why the stream stopped arriving (it then looks cut)

    def info(self) -> dict:
        d = {"status": self.status}
        if self.t_start is not None:
            d["total-time"] = int(1e3 * ((self.t_end or time.monotonic()) - self.t_start))
        d["ram"] = {"transferred": self.received}
        d["x-incoming"] = True
        if self.error:
            d["error-desc"] = self.error
        return d

    def _set_status(self, status: str) -> None:
        self.status = status
        self.vm.emit("MIGRATION", {"status": status})

    @property
    def timeout(self) -> float:
        """x-timeout as set now (the destination's monitor may lower it while waiting)."""
        params = self.vm.migration_params
        return params.timeout if params is not None else TIMEOUT

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.busy:                        # one migration per destination
            try:
                writer.write(MSG_ERROR + b"a migration is already arriving here\n")
            finally:
                writer.close()
            return
        self.busy = True
        task = asyncio.current_task()
        self.vm.tasks.add(task)
        try:
            await self._receive(reader, writer)
        except asyncio.CancelledError:
            pass
        except Exception as e:                     # pragma: no cover - _receive catches all
            log.exception("incoming migration")
            self.vm.fatal(f"incoming migration failed: internal error: {one_line(str(e))}")
        finally:
            self.vm.tasks.discard(task)
            writer.close()
            if self.server is not None:
                self.server.close()

    async def _receive(self, reader, writer) -> None:
        vm = self.vm
        loop = vm.loop
        self.t_start = time.monotonic()
        self._set_status("active")
        feed = _Feed()
        f = V.VMFile(feed, False)
        parse = loop.run_in_executor(None, functools.partial(V.read_stream, f,
                                                             expect_end=False))
        parse.add_done_callback(lambda p: p.cancelled() or p.exception())  # (reported or moot)
        peeked: asyncio.Future = loop.create_future()   # the program section, or None

        async def feeder() -> None:
            """Owns the socket: what arrives goes to the parser thread. A source that
            sends nothing for x-timeout, or a broken connection, ends the stream (the
            parser then finds it cut) and says why."""
            head: bytearray | None = bytearray()
            try:
                while True:
                    t = self.timeout
                    try:
                        data = await asyncio.wait_for(reader.read(1 << 16), t)
                    except asyncio.TimeoutError:
                        if getattr(reader, "_buffer", None):   # it came with the deadline
                            continue
                        self.stream_error = (
                            f"the source sent nothing for {t:g} s" if not self.received else
                            f"the stream stopped after {self.received} bytes: nothing more "
                            f"for {t:g} s")
                        return
                    feed.put(data)
                    self.received += len(data)
                    if not data:
                        return
                    while feed.queued > FEED_LIMIT:    # the parser is behind: stop reading
                        await asyncio.sleep(0.005)
                    if head is not None:
                        head += data
                        prog = peek_program(head)
                        if prog is not None:
                            head = None
                            _settle(peeked, prog or None)
            except (ConnectionError, OSError) as e:
                self.stream_error = f"connection lost after {self.received} bytes: " \
                                    f"{_os_why(e)}"
            finally:
                feed.put(b"")
                _settle(peeked, None)

        async def build():
            """The machine, built while RAM streams in; READY tells the source it may
            stop the guest. None: built after the stream (unknown program section)."""
            prog = await peeked
            machine = None
            if prog is not None:
                try:
                    machine = await loop.run_in_executor(
                        None, functools.partial(_prebuild, prog, vm.config))
                except (V.SnapshotError, DbtError, OSError, ValueError) as e:
                    raise MigrationFailed(str(e)) from None
            self.t_ready = time.monotonic()
            if not self.error:                    # (failed meanwhile: ERROR says it all)
                writer.write(MSG_READY)
                await asyncio.wait_for(writer.drain(), self.timeout)
            return machine, prog

        ftask = loop.create_task(feeder())
        btask = loop.create_task(build())
        machine = None
        try:
            try:
                await asyncio.wait({parse, btask}, return_when=asyncio.FIRST_EXCEPTION)
                if btask.done() and btask.exception() is not None:
                    raise btask.exception()
                snap = await parse
            except V.SnapshotError as e:
                # a stream that stopped arriving is reported as such, not as "truncated"
                raise MigrationFailed(self.stream_error or str(e)) from None
            finally:
                ftask.cancel()
            t_parsed = time.monotonic()
            machine, prog = await btask
            if machine is not None and prog != snap.program:
                machine.close()
                machine = None
            try:
                if machine is not None:
                    await loop.run_in_executor(None, _restore_into, machine, snap)
                else:
                    machine = await loop.run_in_executor(
                        None, functools.partial(V.instantiate, snap, config=vm.config))
            except (V.SnapshotError, DbtError, OSError, ValueError) as e:
                raise MigrationFailed(str(e)) from None
            log.info("incoming: %d bytes; machine ready at %.1f ms, stream checked at "
                     "%.1f ms, state restored at %.1f ms", self.received,
                     1e3 * (self.t_ready - self.t_start), 1e3 * (t_parsed - self.t_start),
                     1e3 * (time.monotonic() - self.t_start))
            writer.write(MSG_LOADED)
            await asyncio.wait_for(writer.drain(), self.timeout)
            go = await _read_line(reader, self.timeout)
            vm.attach(machine)
            machine = None
            self.t_end = time.monotonic()
            self._set_status("completed")
            if go == MSG_RUN and not vm.options.paused:
                vm._resume_vcpu()
            else:
                if go not in (MSG_RUN, MSG_STOP):
                    log.warning("incoming migration: the source did not say whether to run; "
                                "staying paused")
                vm.set_runstate("paused")
        except asyncio.CancelledError:
            raise
        except BaseException as e:
            if isinstance(e, (MigrationFailed, ConnectionError, OSError)):
                why = str(e) or type(e).__name__
            elif isinstance(e, asyncio.TimeoutError):
                why = f"the source accepted no data for {self.timeout:g} s"
            elif isinstance(e, Exception):         # a bug: fail cleanly all the same
                log.exception("incoming migration: internal error")
                why = f"internal error: {type(e).__name__}: {e}"
            else:
                raise
            await self._failed(one_line(why), writer, btask, machine)
        finally:
            if not btask.done():
                btask.cancel()
            elif not btask.cancelled():
                btask.exception()                 # retrieved: it was reported, or moot

    async def _failed(self, why: str, writer, btask, machine) -> None:
        """Tell the source why (one line), and end this process with exit status 1."""
        self.error = why
        self.t_end = time.monotonic()
        if not btask.done():                      # let the build end: no READY after
            await asyncio.wait({btask}, timeout=self.timeout)     # ERROR, no machine lost
        if machine is None and btask.done() and not btask.cancelled() \
                and btask.exception() is None:
            machine = btask.result()[0]
        if machine is not None:
            machine.close()
        try:
            writer.write(MSG_ERROR + why.encode("utf-8", "replace") + b"\n")
            await asyncio.wait_for(writer.drain(), 1.0)
        except (ConnectionError, OSError, asyncio.TimeoutError):
            pass
        self._set_status("failed")
        self.vm.fatal(f"incoming migration failed: {why}")


async def _read_line(reader: asyncio.StreamReader, timeout: float) -> bytes:
    """One line of at most MAX_LINE bytes, or b"" (hang-up, silence, a longer line)."""
    try:
        line = await asyncio.wait_for(reader.readuntil(b"\n"), timeout)
    except (asyncio.TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
            ValueError, ConnectionError, OSError):
        return b""
    return line if len(line) <= MAX_LINE else b""


async def listen_incoming(vm, addr: Address) -> None:
    """Start listening for the migration stream (``--incoming``)."""
    inc = IncomingMigration(vm, addr)
    vm.incoming = inc
    server, bound = await start_listener(addr, inc.handle)
    inc.server = server
    vm.servers.append(server)
    # what QEMU's destination has done before it listens: everything but the guest
    await vm.loop.run_in_executor(None, _warm_up, vm.config.accel)
    vm.options.announce(f"waiting for an incoming migration on {bound}")
