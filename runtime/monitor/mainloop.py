"""The main loop: an asyncio event loop owns every descriptor, the guest runs in a vCPU thread.

Used only when ``dbtlab run`` is given ``--qmp`` or ``--incoming`` (a plain run calls
``Machine.run`` directly and pays nothing for any of this). The design is QEMU's:

* **One main loop** (asyncio here, QEMU's AioContext/glib loop there) serves the QMP monitors,
  the migration sockets and the process's signals. Long transfers are coroutines — the
  incoming migration stream is read by one, as QEMU's ``process_incoming_migration_co`` —
  so a monitor keeps answering while megabytes move. CPU-heavy steps that would stall the
  loop (compressing pages, parsing the stream, writing a snapshot store) run in worker
  threads, as QEMU's multifd threads do.
* **One vCPU thread** (``VCPU``) runs ``Machine.run``. The loop talks to it with QEMU's
  primitives: *pause* (``vm_stop``: the vCPU leaves translated code at the next block
  entry through ``Machine.request_stop`` → ``accel.request_exit``, then parks), *resume*
  (``vm_start``) and *run_on_cpu* (execute a function on the vCPU thread between two guest
  instructions: how migration samples the memory map and the dirty log without a visible
  stop). Accelerators without ``request_exit`` are run in bounded chunks instead.
* **Run states** follow QEMU's names: ``prelaunch`` (``--paused``), ``running``, ``paused``,
  ``inmigrate`` (a destination waiting for its state), ``finish-migrate`` (the source's
  stop-and-copy), ``postmigrate`` (the source after the destination took over),
  ``save-vm``, ``restore-vm``, ``shutdown``. Every change between running and not running
  emits QMP's STOP / RESUME events.

The process ends when the guest ends (SHUTDOWN, ``guest: true``), on QMP ``quit`` or on
SIGINT/SIGTERM; ``monitor.serve`` then returns an ``Outcome`` the CLI turns into an exit status.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from dbtlab.runtime.errors import DbtError

log = logging.getLogger(__name__)

#: instructions per ``Machine.run`` for accelerators that cannot be asked to exit
#: (bounds the stop latency to about this many instructions)
CHUNK_INSNS = 2_000_000
#: first delay before a stop request is repeated (a request that arrives between two
#: accelerator runs of the interpreter can be lost; repeating it is QEMU's qemu_cpu_kick)
KICK_RETRY = 0.002
#: how long ``stop`` waits for the vCPU (a guest blocked in a host syscall, e.g. reading a
#: terminal, only stops when the syscall returns)
STOP_TIMEOUT = 5.0

#: the GIL switch interval under the main loop (see monitor.serve)
SWITCH_INTERVAL = 0.0005


class VMError(DbtError):
    """A monitor request that cannot be carried out now (reported as a QMP GenericError)."""


def _settle(fut: asyncio.Future, value: Any = None, exc: BaseException | None = None) -> None:
    if not fut.done():
        if exc is not None:
            fut.set_exception(exc)
        else:
            fut.set_result(value)


def can_request_exit(accel) -> bool:
    """Does this accelerator implement ``request_exit`` (else it runs in chunks)?"""
    from dbtlab.runtime.accel.base import Accelerator
    return type(accel).request_exit is not Accelerator.request_exit


# ---- the vCPU thread ---------------------------------------------------------------------------
class VCPU:
    """The guest CPU in its own thread. Methods are called from the loop's thread only;
    ``on_end(result)`` is called there when the guest exits, dies or hits ``--max-insns``."""

    def __init__(self, machine, loop: asyncio.AbstractEventLoop,
                 on_end: Callable[[Any], None], *, chunk: int | None = None) -> None:
        self.machine = machine
        self.loop = loop
        self.on_end = on_end
        if chunk is None and not can_request_exit(machine.accel):
            chunk = CHUNK_INSNS
        self.chunk = chunk
        self._cv = threading.Condition()
        self._want_run = False
        self._busy = True          # told to do something, or doing it (False: parked)
        self._work: list[tuple[Callable[[], Any], asyncio.Future]] = []
        self._parked_waiters: list[asyncio.Future] = []
        self._closing = False
        self.ended = None          # the RunResult once the guest ended
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="dbtlab-vcpu", daemon=True)
        self._thread.start()

    # ---- the thread ----
    def _main(self) -> None:
        m = self.machine
        while True:
            with self._cv:
                while True:
                    if self._work:
                        work, self._work = self._work, []
                        break
                    if self._closing:
                        self._park_locked()
                        return
                    if self._want_run and self.ended is None:
                        work = None
                        break
                    self._park_locked()
                    self._cv.wait()
                self._busy = True
            if work:
                for fn, fut in work:
                    try:
                        r = fn()
                    except BaseException as e:       # reported to the waiting coroutine
                        self.loop.call_soon_threadsafe(_settle, fut, None, e)
                    else:
                        self.loop.call_soon_threadsafe(_settle, fut, r)
                continue
            stop_at = None if self.chunk is None else m.instret + self.chunk
            try:
                res = m.run(stop_at=stop_at)
            except BaseException as e:              # an accelerator bug: end the guest
                log.exception("vCPU: the accelerator failed")
                self.error = e
                res = None
            if res is not None and res.stopped:
                limit = m.config.max_insns
                if limit is None or m.instret < limit:
                    continue                        # a stop request or a chunk: re-check
            with self._cv:
                self.ended = res if res is not None else self.error
            self.loop.call_soon_threadsafe(self.on_end, self.ended)

    def _park_locked(self) -> None:
        self._busy = False
        waiters, self._parked_waiters = self._parked_waiters, []
        for f in waiters:
            self.loop.call_soon_threadsafe(_settle, f, True)

    # ---- the loop's side ----
    @property
    def parked(self) -> bool:
        with self._cv:
            return not self._busy

    @property
    def running(self) -> bool:
        """Told to run guest code (and the guest has not ended)."""
        return self._want_run and self.ended is None

    def resume(self) -> None:
        with self._cv:
            self._want_run = True
            if self.ended is None:
                self._busy = True
            self._cv.notify()

    async def pause(self, timeout: float | None = None) -> None:
        """Park the vCPU (QEMU's vm_stop): returns once no guest code runs. Raises
        TimeoutError (and leaves the vCPU asked to stop) after ``timeout`` seconds."""
        with self._cv:
            self._want_run = False
            if not self._busy:
                return
            fut = self.loop.create_future()
            self._parked_waiters.append(fut)
        await self._kick_until(fut, timeout)

    async def run_on_cpu(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn()`` on the vCPU thread between two guest instructions and return its
        result (QEMU's run_on_cpu); inline if the vCPU is parked."""
        with self._cv:
            if not self._busy:
                inline = True
            else:
                inline = False
                fut = self.loop.create_future()
                self._work.append((fn, fut))
                self._cv.notify()
        if inline:
            return fn()
        return await self._kick_until(fut, None)

    async def _kick_until(self, fut: asyncio.Future, timeout: float | None):
        deadline = None if timeout is None else time.monotonic() + timeout
        delay = KICK_RETRY
        self.machine.request_stop()
        while True:
            done, _ = await asyncio.wait({fut}, timeout=delay)
            if done:
                return fut.result()
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError
            self.machine.request_stop()
            delay = min(delay * 2, 0.05)

    async def close(self, timeout: float = 5.0) -> bool:
        """Stop the thread; False if it did not finish (blocked in a host syscall)."""
        with self._cv:
            self._closing = True
            self._want_run = False
            self._cv.notify()
        self.machine.request_stop()
        deadline = time.monotonic() + timeout
        while self._thread.is_alive() and time.monotonic() < deadline:
            self.machine.request_stop()
            await asyncio.sleep(0.005)
        return not self._thread.is_alive()


# ---- addresses -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Address:
    """``unix:PATH`` or ``tcp:HOST:PORT`` (QEMU's socket address syntax)."""

    kind: str
    host: str = ""
    port: int = 0
    path: str = ""

    def __str__(self) -> str:
        if self.kind == "unix":
            text = f"unix:{self.path}"
        else:
            host = f"[{self.host}]" if ":" in self.host else self.host
            text = f"tcp:{host}:{self.port}"
        # printable in messages and logs whatever the address held (a lone surrogate from
        # an undecodable QMP argument cannot be encoded anywhere)
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def parse_address(text: str, what: str = "address") -> Address:
    """Parse ``unix:PATH`` or ``tcp:HOST:PORT`` (HOST may be ``[v6]``; PORT 0 = any free
    port, reported once bound). Raises DbtError with a one-line explanation."""
    if not isinstance(text, str):
        raise DbtError(f"{what}: expected a string")
    if text.startswith("unix:"):
        path = text[5:]
        if not path:
            raise DbtError(f"{what} {text!r}: unix: needs a socket path")
        return Address("unix", path=path)
    if text.startswith("tcp:"):
        rest = text[4:]
        if rest.startswith("["):
            host, sep, port = rest[1:].partition("]:")
        else:
            host, sep, port = rest.rpartition(":")
        if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise DbtError(f"{what} {text!r}: expected tcp:HOST:PORT")
        return Address("tcp", host=host or "127.0.0.1", port=int(port))
    raise DbtError(f"{what} {text!r}: expected unix:PATH or tcp:HOST:PORT")


async def start_listener(addr: Address, handler) -> tuple[asyncio.AbstractServer, Address]:
    """Listen on ``addr``; returns the server and the bound address (real port)."""
    try:
        if addr.kind == "unix":
            if os.path.exists(addr.path):
                import stat
                if stat.S_ISSOCK(os.stat(addr.path).st_mode):
                    os.unlink(addr.path)        # a stale socket from an earlier run
            server = await asyncio.start_unix_server(handler, addr.path)
            return server, addr
        server = await asyncio.start_server(handler, addr.host, addr.port)
    except OSError as e:
        raise DbtError(f"cannot listen on {addr}: {e.strerror or e}") from None
    port = server.sockets[0].getsockname()[1]
    return server, Address("tcp", host=addr.host, port=port)


# ---- the VM ------------------------------------------------------------------------------------
@dataclass
class Outcome:
    """How the main loop ended: what the CLI reports and exits with."""

    exit_code: int = 0
    signal: int | None = None       # the guest died by this signal (CLI re-raises it)
    message: str = ""               # one line for stderr ("" = nothing to say)
    result: Any = None              # the guest's RunResult, if it ran to its end


@dataclass
class Options:
    """What ``dbtlab run`` asked of the main loop."""

    qmp: list[str] = field(default_factory=list)
    incoming: str | None = None
    paused: bool = False
    snapshot_store: str | None = None
    announce: Callable[[str], None] = lambda msg: None   # one line for the user (stderr)


class VM:
    """The machine as the monitor sees it: run state, vCPU, events, snapshots, migration."""

    def __init__(self, config, options: Options) -> None:
        self.config = config
        self.options = options
        self.loop = asyncio.get_running_loop()
        self.machine = None
        self.vcpu: VCPU | None = None
        self.runstate = "prelaunch"
        self.sessions: set = set()            # QMP sessions (for events)
        self.servers: list[asyncio.AbstractServer] = []
        self.outgoing = None                  # migration.OutgoingMigration (latest)
        self.incoming = None                  # migration.IncomingMigration
        self.migration_params = None          # migration.Parameters (set by serve)
        self.done: asyncio.Future = self.loop.create_future()
        self.lock = asyncio.Lock()            # serialises run-state changes (QEMU's BQL)
        self.tasks: set[asyncio.Task] = set()
        self.t0 = time.monotonic()

    # ---- events ----
    def emit(self, event: str, data: dict | None = None) -> None:
        """Broadcast a QMP event to every negotiated session."""
        t = time.time()
        msg = {"event": event, "timestamp": {"seconds": int(t),
                                              "microseconds": int((t % 1) * 1e6)}}
        if data is not None:
            msg["data"] = data
        log.info("event %s %s", event, data or "")
        for s in list(self.sessions):
            s.send_event(msg)

    def spawn(self, coro) -> asyncio.Task:
        """A background task of the VM (cancelled at shutdown)."""
        t = self.loop.create_task(coro)
        self.tasks.add(t)
        t.add_done_callback(self.tasks.discard)
        return t

    # ---- the machine ----
    def attach(self, machine) -> None:
        """Take ``machine`` (a new one, or the one an incoming migration built); its vCPU
        starts parked."""
        self.machine = machine
        self.vcpu = VCPU(machine, self.loop, self._guest_ended)

    @property
    def running(self) -> bool:
        return self.runstate == "running"

    def set_runstate(self, state: str) -> None:
        if state != self.runstate:
            log.debug("runstate %s -> %s", self.runstate, state)
            self.runstate = state

    async def _pause_vcpu(self, new_state: str, timeout: float | None = None) -> bool:
        """Stop guest execution; emit STOP if it was running. Returns whether it was.
        A stop that does not take within ``timeout`` (default ``STOP_TIMEOUT``) is taken
        back: the guest runs on, and VMError says why."""
        timeout = STOP_TIMEOUT if timeout is None else timeout
        was = self.running
        if self.vcpu is not None:
            try:
                await self.vcpu.pause(timeout)
            except TimeoutError:
                if was:                         # the stop did not take: take it back
                    self.vcpu.resume()
                raise VMError(f"the vCPU did not stop within {timeout:g} s (the guest is "
                              "blocked in a host system call); try again") from None
        self.set_runstate(new_state)
        if was:
            self.emit("STOP")
        return was

    def _resume_vcpu(self) -> None:
        self.vcpu.resume()
        self.set_runstate("running")
        self.emit("RESUME")

    def check_alive(self) -> None:
        if self.runstate == "shutdown":
            raise VMError("the guest has shut down")
        if self.machine is None:
            raise VMError("there is no guest yet: waiting for an incoming migration "
                          "(runstate inmigrate)")

    async def stop(self) -> None:
        """QMP stop: pause the guest (nothing to do if it is not running)."""
        async with self.lock:
            if self.running:
                await self._pause_vcpu("paused")

    async def cont(self) -> None:
        """QMP cont: resume the guest."""
        async with self.lock:
            if self.runstate == "running":
                return
            if self.runstate == "inmigrate":
                raise VMError("the guest is waiting for an incoming migration; it starts "
                              "when the migration completes")
            if self.runstate == "postmigrate":
                raise VMError("the guest was migrated away: its state now lives on the "
                              "destination")
            if self.runstate == "shutdown":
                raise VMError("the guest has shut down")
            if self.runstate == "finish-migrate" or (
                    self.outgoing is not None and self.outgoing.status in ("setup", "active")):
                raise VMError("a migration is in progress")
            self.check_alive()
            self._resume_vcpu()

    # ---- snapshots ----
    def _store_path(self) -> str:
        if not self.options.snapshot_store:
            raise VMError("no snapshot store: start dbtlab run with --snapshot-store FILE")
        return self.options.snapshot_store

    def _no_migration(self, what: str) -> None:
        if self.outgoing is not None and self.outgoing.status in ("setup", "active"):
            raise VMError(f"{what}: a migration is in progress")
        if self.runstate in ("inmigrate", "postmigrate", "finish-migrate"):
            raise VMError(f"{what}: not possible in runstate {self.runstate}")

    async def savevm(self, name: str | None) -> dict:
        """Save the machine into the snapshot store (stops it meanwhile, as QEMU does)."""
        path = self._store_path()
        async with self.lock:
            self.check_alive()
            self._no_migration("savevm")
            prev = self.runstate
            was = await self._pause_vcpu("save-vm")
            try:
                m = self.machine
                tag = name or f"{os.path.basename(m.program.path)}-{m.instret}"
                info = await self.loop.run_in_executor(
                    None, functools.partial(_save_snapshot, path, m, tag))
            finally:
                if was:
                    self._resume_vcpu()
                else:
                    self.set_runstate(prev)
            return _snapshot_dict(info, 0)

    async def loadvm(self, name: str) -> None:
        """Put the machine into the state of snapshot ``name`` (all or nothing)."""
        path = self._store_path()
        async with self.lock:
            self.check_alive()
            self._no_migration("loadvm")
            prev = self.runstate
            was = await self._pause_vcpu("restore-vm")
            try:
                await self.loop.run_in_executor(
                    None, functools.partial(_load_snapshot, path, self.machine, name))
            finally:
                if was:
                    self._resume_vcpu()
                else:
                    self.set_runstate(prev)

    async def delvm(self, name: str) -> None:
        path = self._store_path()
        await self.loop.run_in_executor(None, functools.partial(_delete_snapshot, path, name))

    async def snapshots(self) -> list[dict]:
        if not self.options.snapshot_store:
            raise VMError("no snapshot store: start dbtlab run with --snapshot-store FILE")
        if not os.path.exists(self.options.snapshot_store):
            return []
        infos = await self.loop.run_in_executor(
            None, functools.partial(_list_snapshots, self.options.snapshot_store))
        return [_snapshot_dict(i, n + 1) for n, i in enumerate(infos)]

    # ---- queries that read the accelerator (on the vCPU thread, so nothing moves) ----
    async def on_cpu(self, fn: Callable[[], Any]) -> Any:
        self.check_alive()
        if self.vcpu.ended is not None:
            return fn()
        return await self.vcpu.run_on_cpu(fn)

    # ---- the end ----
    def _guest_ended(self, res) -> None:
        """The vCPU thread reports the guest's end (in the loop's thread)."""
        from dbtlab.runtime.machine import RunResult
        if not isinstance(res, RunResult):
            self.shutdown(guest=True, reason="guest-panicked",
                          outcome=Outcome(1, message=f"internal error in the accelerator: "
                                                     f"{res!r}"))
            return
        if res.signal is not None:
            out = Outcome(128 + res.signal, res.signal, res.message, res)
        elif res.stopped:
            out = Outcome(0, None, res.message, res)
        else:
            out = Outcome(res.status or 0, None, "", res)
        data_extra = {"x-signal": res.signal} if res.signal is not None else {}
        self.shutdown(guest=True, reason="guest-shutdown", outcome=out, **data_extra)

    def shutdown(self, *, guest: bool, reason: str, outcome: Outcome, **extra) -> None:
        """End the main loop (once): SHUTDOWN event, then ``serve`` returns ``outcome``."""
        if self.done.done():
            return
        self.set_runstate("shutdown")
        self.emit("SHUTDOWN", {"guest": guest, "reason": reason, **extra})
        self.done.set_result(outcome)

    def fatal(self, message: str, code: int = 1) -> None:
        """End the process with an error (a destination whose migration failed, as QEMU's
        does)."""
        if self.done.done():
            return
        self.set_runstate("shutdown")
        self.emit("SHUTDOWN", {"guest": False, "reason": "host-error"})
        self.done.set_result(Outcome(code, None, message))


# ---- snapshot helpers (worker threads: each opens its own store connection) --------------------
def _save_snapshot(path: str, machine, tag: str):
    from dbtlab.runtime.vm.snapshots import SnapshotStore
    with SnapshotStore(path) as st:
        return st.savevm(machine, tag)


def _load_snapshot(path: str, machine, tag: str) -> None:
    from dbtlab.runtime.vm import vmstate as V
    from dbtlab.runtime.vm.snapshots import SnapshotStore
    with SnapshotStore(path, create=False) as st:
        snap = st.load(tag)
    V.restore(machine, snap)


def _delete_snapshot(path: str, tag: str) -> int:
    from dbtlab.runtime.vm.snapshots import SnapshotStore
    with SnapshotStore(path, create=False) as st:
        return st.delete(tag)


def _list_snapshots(path: str):
    from dbtlab.runtime.vm.snapshots import SnapshotStore
    with SnapshotStore(path, create=False) as st:
        return st.list()


def _snapshot_dict(info, n: int) -> dict:
    """QEMU's SnapshotInfo (id, name, vm-state-size, date, vm clock, icount) plus ours."""
    sec = int(info.created)
    d = {"id": str(n) if n else "", "name": info.tag, "vm-state-size": info.size,
         "date-sec": sec, "date-nsec": int((info.created - sec) * 1e9),
         "vm-clock-sec": 0, "vm-clock-nsec": 0, "icount": info.instret,
         "x-program": info.program_path, "x-accel": info.accel, "x-pages": info.pages}
    if not n:
        del d["id"]
    return d
