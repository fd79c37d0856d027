"""Helpers for the monitor and migration tests: dbtlab processes whose output is collected
as it comes, QMP clients (the real ``qemu.qmp``) and raw QMP sockets, always cleaned up."""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time

from tests.conftest import ROOT

SPIN = str(ROOT / "tests" / "fixtures" / "spin")


def run_plain(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """``dbtlab ARGS`` to completion (the reference runs)."""
    return subprocess.run([sys.executable, "-m", "dbtlab.runtime.cli", *args],
                          capture_output=True, timeout=timeout)


#: how long the helpers wait for anything (a loaded 2-core machine is many times slower
#: than an idle one; nothing here waits that long unless something is wrong)
DEADLINE = 60.0


class Dbtlab:
    """A ``dbtlab`` process; stdout and stderr are read by threads as they arrive.
    ``stdout_path``: the guest's output goes to that file instead, so that what it printed
    before a stop is all there the moment the stop returns (a pipe's reader may lag)."""

    def __init__(self, *args: str, env: dict | None = None,
                 stdout_path: str | None = None) -> None:
        e = dict(os.environ)
        e.update(env or {})
        self.args = args
        self.stdout_path = stdout_path
        out = open(stdout_path, "wb") if stdout_path else subprocess.PIPE
        try:
            self.proc = subprocess.Popen([sys.executable, "-m", "dbtlab.runtime.cli", *args],
                                         stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=subprocess.PIPE, env=e)
        finally:
            if stdout_path:
                out.close()
        self.out = bytearray()
        self.err = bytearray()
        self._cv = threading.Condition()
        streams = [(self.proc.stderr, self.err)]
        if not stdout_path:
            streams.append((self.proc.stdout, self.out))
        self._threads = [threading.Thread(target=self._pump, args=(s, b), daemon=True)
                         for s, b in streams]
        for t in self._threads:
            t.start()

    def _out(self) -> bytes:
        if self.stdout_path:
            with open(self.stdout_path, "rb") as f:
                return f.read()
        return bytes(self.out)

    def _pump(self, stream, buf: bytearray) -> None:
        while True:
            data = stream.read1(65536)
            with self._cv:
                if not data:
                    self._cv.notify_all()
                    return
                buf += data
                self._cv.notify_all()

    def wait_output(self, pred, timeout: float = DEADLINE, what: str = "output"):
        """Wait until ``pred(stdout_text, stderr_text)`` is truthy; returns its value."""
        deadline = time.monotonic() + timeout
        with self._cv:
            while True:
                ended = self.proc.poll() is not None and not \
                    any(t.is_alive() for t in self._threads)
                out = self._out()
                v = pred(out.decode(errors="replace"), self.err.decode(errors="replace"))
                if v:
                    return v
                left = deadline - time.monotonic()
                if left <= 0 or ended:
                    raise AssertionError(f"no {what} from dbtlab {' '.join(self.args)}; "
                                         f"stdout {out[-400:]!r}, "
                                         f"stderr {bytes(self.err[-2000:])!r}")
                self._cv.wait(min(left, 0.05 if self.stdout_path else 0.2))

    def wait_lines(self, n: int, timeout: float = DEADLINE) -> list[str]:
        return self.wait_output(lambda o, e: o.splitlines() if o.count("\n") >= n else None,
                                timeout, f"{n} lines of output")

    def port(self, timeout: float = DEADLINE) -> int:
        """The port of ``--incoming tcp:HOST:0`` (announced on stderr)."""
        m = self.wait_output(lambda o, e: re.search(r"incoming migration on tcp:[^:]+:(\d+)",
                                                    e), timeout, "incoming port")
        return int(m.group(1))

    def wait(self, timeout: float = DEADLINE) -> int:
        rc = self.proc.wait(timeout)
        for t in self._threads:
            t.join(5)
        return rc

    @property
    def stdout(self) -> bytes:
        with self._cv:
            return self._out()

    @property
    def stderr(self) -> str:
        with self._cv:
            return self.err.decode(errors="replace")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:      # pragma: no cover
            pass
        for t in self._threads:
            t.join(5)


def sock_path(tmp_path, name: str) -> str:
    """A unix socket path short enough for sun_path (pytest's tmp paths may not be)."""
    p = os.path.join(str(tmp_path), name)
    if len(p) < 100:
        return p
    d = tempfile.mkdtemp(prefix="dbt-")
    return os.path.join(d, name)


def wait_socket(path: str, proc: Dbtlab, timeout: float = DEADLINE) -> None:
    proc.wait_output(lambda o, e: "QMP monitor listening" in e and os.path.exists(path),
                     timeout, "QMP socket")


async def connect(path: str, name: str = "test"):
    """A negotiated qemu.qmp client. (qemu.qmp's asynchronous client has no timeouts of
    its own; it hangs up when the server does — a source whose guest ended during a
    migration — or when it gets an error reply without an id.)"""
    from qemu.qmp import QMPClient
    q = QMPClient(name)
    await q.connect(path)
    return q


async def disconnect(q) -> None:
    """Disconnect; after ``quit`` the server hangs up first (EOF), as QEMU does."""
    try:
        await q.disconnect()
    except (EOFError, ConnectionError):
        pass


class EventLog:
    """Collects a qemu.qmp client's events in the background."""

    def __init__(self, q) -> None:
        from qemu.qmp import EventListener
        self.listener = EventListener()
        q.register_listener(self.listener)
        self.events: list[dict] = []
        self.task = asyncio.get_running_loop().create_task(self._collect())

    async def _collect(self) -> None:
        async for ev in self.listener:
            self.events.append(dict(ev))

    def names(self) -> list[str]:
        return [e["event"] for e in self.events]

    async def wait_for(self, name: str, pred=lambda e: True, timeout: float = DEADLINE) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for e in self.events:
                if e["event"] == name and pred(e):
                    return e
            await asyncio.sleep(0.01)
        raise AssertionError(f"no {name} event; got {self.names()}")

    def close(self) -> None:
        self.task.cancel()


class RawQMP:
    """A QMP connection spoken by hand (for input no real client would send)."""

    def __init__(self, path: str, timeout: float = DEADLINE) -> None:
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.s.settimeout(timeout)
        self.s.connect(path)
        self.buf = b""
        self.greeting = self.recv()

    def send(self, data: bytes | str) -> None:
        self.s.sendall(data.encode() if isinstance(data, str) else data)

    def recv(self) -> dict:
        while b"\n" not in self.buf:
            chunk = self.s.recv(65536)
            if not chunk:
                raise EOFError(f"connection closed; pending {self.buf!r}")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def reply(self, data: bytes | str) -> dict:
        """Send, and return the next message that is not an event."""
        self.send(data)
        return self.next_reply()

    def next_reply(self) -> dict:
        while True:
            msg = self.recv()
            if "event" not in msg:
                return msg

    def execute(self, cmd: str, args: dict | None = None, id_=None) -> dict:
        msg = {"execute": cmd}
        if args is not None:
            msg["arguments"] = args
        if id_ is not None:
            msg["id"] = id_
        return self.reply(json.dumps(msg))

    def close(self) -> None:
        self.s.close()
