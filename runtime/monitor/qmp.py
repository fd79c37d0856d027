"""The QMP monitor: QEMU's machine protocol, spoken to real QMP clients (``qemu.qmp``).

``dbtlab run --qmp unix:PATH`` (or ``tcp:HOST:PORT``) serves it from the main loop
(``runtime.mainloop``); every connection is its own session. The wire protocol is QEMU's
(docs/interop/qmp-spec in QEMU):

* the server greets: ``{"QMP": {"version": {"qemu": {"major", "minor", "micro"},
  "package": "dbtlab X"}, "capabilities": []}}`` (no optional capability such as ``oob`` is
  offered);
* the session starts in capabilities-negotiation mode: only ``qmp_capabilities`` is
  accepted (anything else: ``CommandNotFound``, "Expecting capabilities negotiation");
  after it, every command, and events are delivered;
* ``{"execute": NAME, "arguments": {...}, "id": ANY}`` gets ``{"return": ..., "id": ...}``
  or ``{"error": {"class": CLASS, "desc": TEXT}, "id": ...}``; the id is echoed whenever
  the request had one;
* events: ``{"event": NAME, "data": {...}, "timestamp": {"seconds", "microseconds"}}`` —
  STOP, RESUME, SHUTDOWN, MIGRATION, MIGRATION_PASS.

Input is a stream of JSON texts (not lines: a message may span lines, several may share
one). Malformed JSON, a non-object, a missing or non-string ``execute``, non-object
``arguments``, unknown members, unknown commands, missing, unexpected or mistyped
arguments each get an error reply (parse errors have no id, as in QEMU) and the session
carries on. After a malformed message the rest of its line is dropped; a byte 0xFF
discards a partial message (QEMU's resynchronisation). Error
classes are QEMU's: ``GenericError`` for everything except ``CommandNotFound``.

Commands (QEMU's names and argument names where QEMU has the command):

=========================  ==========================================================
qmp_capabilities           leave negotiation mode (``enable``: capabilities; none exist)
query-version              dbtlab's version in QEMU's VersionInfo shape
query-commands             the commands below
query-status               ``status`` (runstate), ``running``; ``x-accel``, ``x-instret``
stop / cont                pause / resume the vCPU (events STOP / RESUME)
quit                       reply, SHUTDOWN (``host-qmp-quit``), exit status 0
savevm / loadvm / delvm    ``name``: the snapshot store of ``--snapshot-store``
query-snapshots            its snapshots (QEMU's SnapshotInfo fields plus ``x-``)
x-query-blocks             translation cache: blocks, live blocks, chain links, compile
                           time, invalidations, flushes (zero for non-translating engines)
x-query-profile            hottest blocks (``top``, default 10); an error unless the run
                           profiles (``--profile FILE`` with ``--accel llvm``)
migrate / migrate_cancel   ``uri`` (``tcp:HOST:PORT`` or ``unix:PATH``): live migration
query-migrate              status, rounds, bytes, dirty rate, downtime (see migration)
migrate-set-parameters     ``downtime-limit``, ``max-bandwidth``, ``compress-level``,
query-migrate-parameters   ``x-max-rounds``, ``x-dirty-sync`` (auto, log, compare),
                           ``x-timeout`` (ms without progress from the peer)
=========================  ==========================================================
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

import dbtlab
from dbtlab.runtime.errors import DbtError

log = logging.getLogger(__name__)

GENERIC_ERROR = "GenericError"
COMMAND_NOT_FOUND = "CommandNotFound"

#: largest message accepted, and deepest nesting (QEMU: 64 MiB and 1024)
MAX_MESSAGE = 1 << 20
MAX_DEPTH = 1024
#: a client whose unread output exceeds this is disconnected (it stopped reading)
MAX_BACKLOG = 16 << 20


class QMPError(Exception):
    """An error reply: ``desc`` for humans, ``cls`` a QMP error class."""

    def __init__(self, desc: str, cls: str = GENERIC_ERROR) -> None:
        super().__init__(desc)
        self.desc = desc
        self.cls = cls


# ---- the JSON stream ---------------------------------------------------------------------------
@dataclass
class ParseError:
    """A malformed text in the input (answered with an id-less error)."""

    desc: str


_OUTSIDE = re.compile(rb'[{}\[\]"\xff]')       # what matters inside a container
_INSIDE = re.compile(rb'["\\\xff]')           # ... inside a string
_BARE_END = re.compile(rb'[\s{}\[\]",:\xff]')  # end of a top-level scalar token
_WS = b" \t\r\n"


def _reject_constant(name: str):
    raise ValueError(f"invalid literal {name}")


class JSONStreamer:
    """Splits a byte stream into JSON texts as QEMU's json-streamer does: by bracket
    depth, outside strings, so a message may span reads and lines and several may arrive
    in one read. ``feed`` returns parsed values and ``ParseError``\\ s in order."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.buf = bytearray()
        self.stack: list[int] = []
        self.in_str = False
        self.esc = False
        self.bare = False
        self.skip = False          # after an error inside a message: drop the rest of its line

    def _finish(self, out: list) -> None:
        raw = bytes(self.buf)
        self.reset()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            out.append(ParseError("JSON parse error, invalid UTF-8 sequence in input"))
            return
        try:
            out.append(json.loads(text, parse_constant=_reject_constant))
        except ValueError as e:
            msg = getattr(e, "msg", str(e))
            if len(raw) <= 40 and not raw.startswith((b"{", b"[")):
                msg = f"invalid token '{text}'" if not text.startswith('"') else msg
            out.append(ParseError(f"JSON parse error, {msg}"))
        except RecursionError:
            out.append(ParseError("JSON parse error, nesting too deep"))

    def _fail(self, out: list, desc: str, *, resync: bool = True) -> None:
        self.reset()
        self.skip = resync
        out.append(ParseError(f"JSON parse error, {desc}"))

    def _copy_to(self, stop, data: bytes, i: int, out: list) -> tuple[int, int | None]:
        """Copy input from i up to and including the next byte the pattern ``stop``
        finds; returns the next index and that byte — None when the input ran out, or
        when it was a stray 0xFF, which discards the partial message."""
        m = stop.search(data, i)
        if m is None:
            self.buf += data[i:]
            return len(data), None
        j = m.start()
        if data[j] == 0xFF:
            self._fail(out, "stray byte 0xff: partial input discarded", resync=False)
            return j + 1, None
        self.buf += data[i:j + 1]
        return j + 1, data[j]

    def feed(self, data: bytes) -> list:
        out: list = []
        i, n = 0, len(data)
        while i < n:
            if self.skip:                          # resynchronise at the next line or 0xFF
                j = min((k for k in (data.find(b"\n", i), data.find(b"\xff", i)) if k >= 0),
                        default=-1)
                if j < 0:
                    return out
                self.skip = False
                i = j + 1
                continue
            if self.esc:                           # the byte after a backslash
                self.buf.append(data[i])
                self.esc = False
                i += 1
                continue
            if self.in_str:
                i, c = self._copy_to(_INSIDE, data, i, out)
                if c == 0x5C:                      # backslash
                    self.esc = True
                elif c is not None:                # the closing quote
                    self.in_str = False
                    if not self.stack:             # a top-level string is complete
                        self._finish(out)
            elif self.bare:
                m = _BARE_END.search(data, i)
                if m is None:
                    self.buf += data[i:]
                    i = n
                else:
                    self.buf += data[i:m.start()]
                    i = m.start()
                    self._finish(out)
            elif self.stack:
                i, c = self._copy_to(_OUTSIDE, data, i, out)
                if c is None:                      # input ran out, or a stray 0xFF
                    pass
                elif c == 0x22:
                    self.in_str = True
                elif c in b"{[":
                    self.stack.append(c)
                    if len(self.stack) > MAX_DEPTH:
                        self._fail(out, f"nesting deeper than {MAX_DEPTH}")
                        continue
                else:                              # a closing bracket
                    want = 0x7D if self.stack[-1] == 0x7B else 0x5D
                    if c != want:
                        self._fail(out, f"unexpected '{chr(c)}' (expected "
                                        f"'{chr(want)}')")
                        continue
                    self.stack.pop()
                    if not self.stack:
                        self._finish(out)
            else:                                  # between messages
                c = data[i]
                if c in _WS:
                    i += 1
                    continue
                if c in b"{[":
                    self.stack.append(c)
                    self.buf.append(c)
                elif c == 0x22:
                    self.in_str = True
                    self.buf.append(c)
                elif c == 0xFF:
                    pass                           # a reset request between messages
                elif c in b"}],:":
                    out.append(ParseError(f"JSON parse error, unexpected '{chr(c)}'"))
                else:
                    self.bare = True
                    self.buf.append(c)
                i += 1
            if len(self.buf) > MAX_MESSAGE:
                self._fail(out, f"message longer than {MAX_MESSAGE} bytes")
        return out


# ---- commands ----------------------------------------------------------------------------------
_TYPES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "str": (lambda v: isinstance(v, str), "string"),
    "int": (lambda v: isinstance(v, int) and not isinstance(v, bool), "integer"),
    "number": (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool), "number"),
    "bool": (lambda v: isinstance(v, bool), "boolean"),
    "[str]": (lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v),
              "array of strings"),
}


@dataclass
class Command:
    name: str
    handler: Callable[..., Awaitable[Any]]
    params: dict[str, tuple[str, bool]]     # argument name -> (type, required)
    doc: str = ""


COMMANDS: dict[str, Command] = {}


def command(cmd_name: str, /, **params: str):
    """Register a command; params: ``arg="str"`` (required) or ``arg="str?"`` (optional);
    argument names use ``_`` for QMP's ``-``."""
    def deco(fn):
        spec = {k.replace("_", "-"): (t.rstrip("?"), not t.endswith("?"))
                for k, t in params.items()}
        COMMANDS[cmd_name] = Command(cmd_name, fn, spec,
                                     (fn.__doc__ or "").strip().split("\n")[0])
        return fn
    return deco


def check_request(obj: Any) -> tuple[str, dict]:
    """The command name and arguments of a request, or QMPError (QEMU's wording)."""
    if not isinstance(obj, dict):
        raise QMPError("QMP input must be a JSON object")
    for k in obj:
        if k == "exec-oob":
            raise QMPError("QMP input member 'exec-oob' is not supported: this server offers "
                           "no 'oob' capability")
        if k not in ("execute", "arguments", "id"):
            raise QMPError(f"QMP input member '{k}' is unexpected")
    if "execute" not in obj:
        raise QMPError("QMP input lacks member 'execute'")
    name = obj["execute"]
    if not isinstance(name, str):
        raise QMPError("QMP input member 'execute' must be a string")
    args = obj.get("arguments", {})
    if not isinstance(args, dict):
        raise QMPError("QMP input member 'arguments' must be an object")
    return name, args


def check_arguments(cmd: Command, args: dict) -> dict:
    """Keyword arguments for the handler, or QMPError naming the first bad parameter."""
    for k in args:
        if k not in cmd.params:
            raise QMPError(f"Parameter '{k}' is unexpected")
    out = {}
    for k, (t, required) in cmd.params.items():
        if k not in args:
            if required:
                raise QMPError(f"Parameter '{k}' is missing")
            continue
        ok, tname = _TYPES[t]
        if not ok(args[k]):
            raise QMPError(f"Invalid parameter type for '{k}', expected: {tname}")
        out[k.replace("-", "_")] = args[k]
    return out


def version_info() -> dict:
    """dbtlab's version in QEMU's VersionInfo shape."""
    parts = [int(p) if p.isdigit() else 0 for p in
             re.split(r"[.+-]", dbtlab.__version__)[:3]] + [0, 0, 0]
    return {"qemu": {"major": parts[0], "minor": parts[1], "micro": parts[2]},
            "package": f"dbtlab {dbtlab.__version__}"}


# ---- sessions ------------------------------------------------------------------------------------
class QMPSession:
    """One client connection."""

    def __init__(self, vm, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.vm = vm
        self.reader = reader
        self.writer = writer
        self.negotiated = False
        self.after_reply: Callable[[], None] | None = None
        self.closed = False

    def send(self, msg: dict) -> None:
        if self.closed or self.writer.is_closing():
            return
        if self.writer.transport.get_write_buffer_size() > MAX_BACKLOG:
            log.warning("QMP client does not read its replies: disconnecting it")
            self.closed = True
            self.writer.transport.abort()
            return
        self.writer.write(json.dumps(msg, ensure_ascii=True).encode() + b"\r\n")

    def send_event(self, msg: dict) -> None:
        if self.negotiated:
            self.send(msg)

    async def run(self) -> None:
        self.send({"QMP": {"version": version_info(), "capabilities": []}})
        streamer = JSONStreamer()
        while not self.closed:
            try:
                data = await self.reader.read(65536)
            except (ConnectionError, OSError):
                break
            if not data:
                break
            for item in streamer.feed(data):
                if isinstance(item, ParseError):
                    self.send({"error": {"class": GENERIC_ERROR, "desc": item.desc}})
                else:
                    await self.handle(item)
                try:
                    await self.writer.drain()
                except (ConnectionError, OSError):
                    return
                if self.after_reply is not None:
                    act, self.after_reply = self.after_reply, None
                    act()

    async def handle(self, obj: Any) -> None:
        has_id = isinstance(obj, dict) and "id" in obj
        try:
            name, args = check_request(obj)
            cmd = COMMANDS.get(name)
            if cmd is None:
                raise QMPError(f"The command {name} has not been found", COMMAND_NOT_FOUND)
            if not self.negotiated and name != "qmp_capabilities":
                raise QMPError(f"Expecting capabilities negotiation with 'qmp_capabilities' "
                               f"before command '{name}'", COMMAND_NOT_FOUND)
            if self.negotiated and name == "qmp_capabilities":
                raise QMPError("Capabilities negotiation is already complete, command "
                               "'qmp_capabilities' ignored", COMMAND_NOT_FOUND)
            kwargs = check_arguments(cmd, args)
            result = await cmd.handler(self, **kwargs)
            reply: dict = {"return": {} if result is None else result}
        except QMPError as e:
            reply = {"error": {"class": e.cls, "desc": e.desc}}
        except DbtError as e:
            reply = {"error": {"class": GENERIC_ERROR, "desc": str(e)}}
        except asyncio.CancelledError:
            raise
        except Exception as e:                     # a bug: say so, keep the session
            log.exception("QMP command failed")
            reply = {"error": {"class": GENERIC_ERROR,
                               "desc": f"internal error: {type(e).__name__}: {e}"}}
        if has_id:
            reply["id"] = obj["id"]
        self.send(reply)

    async def close(self) -> None:
        self.closed = True
        try:
            if not self.writer.is_closing():
                await asyncio.wait_for(self.writer.drain(), 1.0)
            self.writer.close()
            await asyncio.wait_for(self.writer.wait_closed(), 1.0)
        except (asyncio.TimeoutError, ConnectionError, OSError, RuntimeError):
            pass


async def serve_client(vm, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """The main loop's handler for one monitor connection."""
    s = QMPSession(vm, reader, writer)
    vm.sessions.add(s)
    try:
        await s.run()
    except asyncio.CancelledError:
        pass
    finally:
        vm.sessions.discard(s)
        await s.close()


# ---- the command set -----------------------------------------------------------------------------
@command("qmp_capabilities", enable="[str]?")
async def cmd_qmp_capabilities(s: QMPSession, enable: list[str] | None = None) -> dict:
    """Leave capabilities negotiation mode."""
    for cap in enable or ():
        raise QMPError(f"Capability '{cap}' not available")
    s.negotiated = True
    return {}


@command("query-version")
async def cmd_query_version(s: QMPSession) -> dict:
    """dbtlab's version."""
    return version_info()


@command("query-commands")
async def cmd_query_commands(s: QMPSession) -> list:
    """The commands this server knows."""
    return [{"name": n} for n in sorted(COMMANDS)]


@command("query-status")
async def cmd_query_status(s: QMPSession) -> dict:
    """The run state."""
    vm = s.vm
    d = {"status": vm.runstate, "running": vm.running}
    m = vm.machine
    if m is not None:
        d["x-accel"] = m.accel.name
        if vm.vcpu is not None and vm.vcpu.parked:
            d["x-instret"] = m.instret          # exact only while nothing runs
    return d


@command("stop")
async def cmd_stop(s: QMPSession) -> None:
    """Pause the guest."""
    await s.vm.stop()


@command("cont")
async def cmd_cont(s: QMPSession) -> None:
    """Resume the guest."""
    await s.vm.cont()


@command("quit")
async def cmd_quit(s: QMPSession) -> None:
    """End dbtlab (after this reply)."""
    from dbtlab.runtime.monitor.mainloop import Outcome
    s.after_reply = lambda: s.vm.shutdown(guest=False, reason="host-qmp-quit",
                                          outcome=Outcome(0))


@command("savevm", name="str?")
async def cmd_savevm(s: QMPSession, name: str | None = None) -> dict:
    """Save a snapshot into the snapshot store (default name PROGRAM-INSTRET)."""
    return await s.vm.savevm(name)


@command("loadvm", name="str")
async def cmd_loadvm(s: QMPSession, name: str) -> None:
    """Load a snapshot from the snapshot store."""
    await s.vm.loadvm(name)


@command("delvm", name="str")
async def cmd_delvm(s: QMPSession, name: str) -> None:
    """Delete a snapshot from the snapshot store."""
    await s.vm.delvm(name)


@command("query-snapshots")
async def cmd_query_snapshots(s: QMPSession) -> list:
    """The snapshots in the snapshot store."""
    return await s.vm.snapshots()


def _blocks(m) -> dict:
    a = m.accel
    st = a.stats.as_dict()
    d = {"accel": a.name, "translates": a.name == "llvm", "blocks": 0, "live-blocks": 0,
         "chain-links": 0, "live-chain-links": 0, "compile-seconds": 0.0,
         "invalidated": 0, "flushes": 0, "runs": st.get("runs", 0),
         "exits": dict(st.get("exits", {}))}
    cache = getattr(a, "cache", None)
    if a.name == "llvm" and cache is not None:
        d.update({"blocks": st["blocks"], "live-blocks": len(cache.blocks),
                  "chain-links": getattr(cache, "links", st["links"]),   # made, all told
                  "live-chain-links": sum(1 for r in cache.slots.values()
                                          if r.linked is not None),
                  "compile-seconds": st["compile_seconds"] + st["emit_seconds"],
                  "invalidated": st["invalidated"], "flushes": st["flushes"]})
        for k, v in st.items():
            if k not in ("exits", "runs"):
                d.setdefault("x-" + k.replace("_", "-"), v)
    return d


@command("x-query-blocks")
async def cmd_x_query_blocks(s: QMPSession) -> dict:
    """The translation cache."""
    return await s.vm.on_cpu(lambda: _blocks(s.vm.machine))


def _profile(m, top: int) -> dict:
    prof = getattr(m.accel, "profiler", None)
    if prof is None:
        raise QMPError("x-query-profile: this run does not profile; start dbtlab run with "
                       "--profile FILE and --accel llvm")
    rows = []
    for bid, rec in list(prof.blocks.items()):
        n = rec["count"] + prof.counts[bid]
        rows.append((n * rec["insns"], n, rec))
    rows.sort(key=lambda r: (-r[0], r[2]["pc"]))
    total = sum(r[0] for r in rows) or 1
    hot = [{"pc": r["pc"], "end": r["end"], "insns": r["insns"], "count": n,
            "insns-executed": ex, "share": ex / total, "function": r["function"],
            "offset": r["offset"], "tier": r["tier"],
            "live": r["invalidated_at"] is None}
           for ex, n, r in rows[:top]]
    return {"instret": m.instret, "blocks": len(rows), "hot-blocks": hot}


@command("x-query-profile", top="int?")
async def cmd_x_query_profile(s: QMPSession, top: int = 10) -> dict:
    """The hottest translated blocks by instructions executed."""
    if top < 1:
        raise QMPError("Parameter 'top' must be at least 1")
    return await s.vm.on_cpu(lambda: _profile(s.vm.machine, top))


@command("migrate", uri="str", detach="bool?", resume="bool?")
async def cmd_migrate(s: QMPSession, uri: str, detach: bool = True,
                      resume: bool = False) -> None:
    """Start a live migration to ``uri`` (the reply comes at once; watch MIGRATION events
    or query-migrate)."""
    from dbtlab.runtime.vm import migration
    if resume:
        raise QMPError("migrate: 'resume' (postcopy recovery) is not supported")
    await migration.start_outgoing(s.vm, uri)


@command("migrate_cancel")
async def cmd_migrate_cancel(s: QMPSession) -> None:
    """Cancel the migration in progress (the guest keeps running here)."""
    from dbtlab.runtime.vm import migration
    migration.cancel_outgoing(s.vm)


@command("query-migrate")
async def cmd_query_migrate(s: QMPSession) -> dict:
    """The migration's status and statistics ({} before any migration)."""
    vm = s.vm
    if vm.incoming is not None and vm.outgoing is None:
        return vm.incoming.info()
    return vm.outgoing.info() if vm.outgoing is not None else {}


@command("migrate-set-parameters", downtime_limit="int?", max_bandwidth="int?",
         compress_level="int?", x_max_rounds="int?", x_dirty_sync="str?", x_timeout="int?")
async def cmd_migrate_set_parameters(s: QMPSession, **kw) -> None:
    """Tune migration: downtime-limit (ms), max-bandwidth (bytes/s, 0 = unlimited),
    compress-level (0-9), x-max-rounds, x-dirty-sync (auto, log, compare), x-timeout (ms
    either side waits for the other before the migration fails; also on a destination)."""
    s.vm.migration_params.update(**kw)


@command("query-migrate-parameters")
async def cmd_query_migrate_parameters(s: QMPSession) -> dict:
    """The migration parameters."""
    return s.vm.migration_params.info()
