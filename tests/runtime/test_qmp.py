"""The main loop and the QMP monitor, driven by the real ``qemu.qmp`` client (and by hand
for input no client would send): stop/cont/savevm/loadvm/delvm/quit on a running guest,
events, several sessions, malformed input of many kinds, the translation-cache and profile
queries, and how promptly a guest spinning in a tight loop stops."""

from __future__ import annotations

import asyncio
import json
import random
import signal
import socket
import statistics
import struct
import time

import pytest

from dbtlab.runtime.monitor.mainloop import parse_address
from dbtlab.runtime.monitor.qmp import COMMANDS, JSONStreamer, ParseError
from tests.conftest import GUESTS
from tests.runtime.mainloop_kit import (SPIN, Dbtlab, EventLog, RawQMP, connect, disconnect,
                                        run_plain, sock_path, wait_socket)

pytest.importorskip("qemu.qmp", reason="the tests speak QMP through qemu.qmp (test extra)")
from qemu.qmp import ExecuteError  # noqa: E402


def monitored(tmp_path, *args, name="qmp.sock", stdout_path=None):
    """dbtlab run --qmp unix:SOCK ARGS; returns (process, socket path)."""
    path = sock_path(tmp_path, name)
    p = Dbtlab("run", "--qmp", f"unix:{path}", *args, stdout_path=stdout_path)
    wait_socket(path, p)
    return p, path


# ---- stopping a tight loop ------------------------------------------------------------------
@pytest.mark.parametrize("accel", ["llvm", "interp", "unicorn"])
def test_vcpu_stops_a_tight_loop_within_milliseconds(accel):
    """The vCPU thread leaves a store loop that never makes a syscall (spin 0) promptly:
    llvm and unicorn at the next block entry, interp after the current instruction (an
    accelerator without request_exit would stop at the end of a bounded chunk). run_on_cpu
    runs between two instructions."""
    from dbtlab.runtime.config import RunConfig
    from dbtlab.runtime.machine import Machine
    from dbtlab.runtime.monitor.mainloop import VCPU

    async def main():
        m = Machine(SPIN, [SPIN, "0", "64"], config=RunConfig(accel=accel))
        ended = []
        v = VCPU(m, asyncio.get_running_loop(), ended.append)
        v.resume()
        lat, n0 = [], 0
        for _ in range(7):
            await ran_past(v, m, n0)          # it runs between the stops
            t = time.perf_counter()
            await v.pause()
            lat.append(time.perf_counter() - t)
            n1 = m.instret
            assert n1 > n0
            await asyncio.sleep(0.02)
            assert m.instret == n1            # and not while paused
            n0 = n1
            v.resume()
            got = await v.run_on_cpu(lambda: m.instret)
            assert got >= n1
        assert await v.close()
        m.close()
        assert not ended                      # spin 0 never ends by itself
        return lat

    lat = asyncio.run(main())
    med = statistics.median(lat)
    print(f"{accel}: stop latency median {1e3 * med:.2f} ms, max {1e3 * max(lat):.2f} ms")
    assert med < 0.25, lat         # measured: 0.3-0.6 ms on every accelerator when idle


async def ran_past(v, m, n: int, deadline: float = 60) -> None:
    """Wait until the guest of vCPU ``v`` has run past instruction ``n`` (a loaded machine
    may not schedule its thread for a while)."""
    end = time.monotonic() + deadline
    while await v.run_on_cpu(lambda: m.instret) <= n:
        assert time.monotonic() < end, "the vCPU does not run"
        await asyncio.sleep(0.01)


def test_accelerator_without_exit_request_runs_in_chunks():
    """An accelerator that cannot be asked to exit runs in bounded chunks; a stop lands at
    the end of one and the guest goes on exactly from there."""
    from dbtlab.runtime.config import RunConfig
    from dbtlab.runtime.machine import Machine
    from dbtlab.runtime.monitor.mainloop import CHUNK_INSNS, VCPU, can_request_exit

    class NoExit:
        def __init__(self, accel):
            self._a = accel

        def __getattr__(self, name):
            return getattr(self._a, name)

        def request_exit(self):
            raise NotImplementedError

    async def main():
        m = Machine(SPIN, [SPIN, "0", "4"], config=RunConfig(accel="interp"))
        real = m.accel
        m.accel = NoExit(real)
        v = VCPU(m, asyncio.get_running_loop(), lambda r: None, chunk=20_000)
        assert v.chunk == 20_000 and can_request_exit(real)
        v.resume()
        end = time.monotonic() + 60
        while m.instret < 20_000:             # the first chunk is done
            assert time.monotonic() < end, "the vCPU does not run"
            await asyncio.sleep(0.01)
        await v.pause(timeout=60)
        n = m.instret
        assert n > 0 and n % 20_000 == 0      # stopped at a chunk boundary
        assert await v.close()
        m.accel = real
        m.close()
        assert CHUNK_INSNS > 0

    asyncio.run(main())


def test_machine_request_stop_is_sticky_and_resumable():
    """Machine.request_stop before run() stops the next run before it executes anything;
    the run after that goes on exactly where it stopped."""
    from dbtlab.runtime.config import RunConfig
    from dbtlab.runtime.machine import Machine
    with Machine(SPIN, [SPIN, "2", "4"], config=RunConfig(accel="llvm"),
                 stdout=2) as m:
        m.run(stop_at=1000)
        m.request_stop()
        r = m.run()
        assert r.stopped and m.instret == 1000 and "on request" in r.message
        r = m.run()
        assert not r.stopped and r.status == 0


# ---- a qemu.qmp session on a running guest ------------------------------------------------------
def test_qemu_qmp_session_drives_stop_cont_savevm_loadvm_quit(tmp_path):
    store = tmp_path / "snaps.db"
    # the guest's output goes to a file: all it printed is there when "stop" returns
    p, path = monitored(tmp_path, "--snapshot-store", str(store), SPIN, "100000", "64", "2",
                        "15", stdout_path=str(tmp_path / "guest.out"))

    async def main():
        q = await connect(path, "a")
        b = await connect(path, "b")              # a second session, all along
        ev, evb = EventLog(q), EventLog(b)
        try:
            assert q.greeting.QMP.capabilities == []
            assert q.greeting.QMP.version["package"].startswith("dbtlab ")
            ver = await q.execute("query-version")
            assert set(ver["qemu"]) == {"major", "minor", "micro"}
            assert {c["name"] for c in await q.execute("query-commands")} == set(COMMANDS)
            st = await q.execute("query-status")
            assert st["status"] == "running" and st["running"] is True
            p.wait_lines(3)

            await q.execute("stop")
            assert (await b.execute("query-status"))["status"] == "paused"
            await ev.wait_for("STOP")
            await evb.wait_for("STOP")            # every session gets the events
            before = p.stdout.decode().splitlines()
            k = len(before)
            n_stopped = (await q.execute("query-status"))["x-instret"]
            time.sleep(0.2)
            assert p.stdout.decode().count("\n") == k   # nothing runs while paused

            info = await q.execute("savevm", {"name": "s1"})
            assert info["name"] == "s1" and info["icount"] == n_stopped
            snaps = await b.execute("query-snapshots")
            assert [s["name"] for s in snaps] == ["s1"]
            assert snaps[0]["vm-state-size"] > 0 and snaps[0]["icount"] == n_stopped
            assert (await q.execute("query-status"))["status"] == "paused"

            await q.execute("cont")
            await ev.wait_for("RESUME")
            p.wait_lines(k + 3)

            # savevm while running: QEMU stops and resumes around it
            n_ev = len(ev.events)
            await q.execute("savevm", {"name": "s2"})
            await ev.wait_for("RESUME", lambda e: ev.events.index(e) >= n_ev)
            assert ev.names()[n_ev:n_ev + 2] == ["STOP", "RESUME"]
            assert (await q.execute("query-status"))["status"] == "running"
            await q.execute("delvm", {"name": "s2"})
            assert [s["name"] for s in await q.execute("query-snapshots")] == ["s1"]

            await q.execute("stop")
            await q.execute("loadvm", {"name": "s1"})
            st = await q.execute("query-status")
            assert st["status"] == "paused" and st["x-instret"] == n_stopped
            mark = p.stdout.decode().count("\n")
            await q.execute("cont")
            p.wait_lines(mark + 2)

            with pytest.raises(ExecuteError) as e:
                await q.execute("loadvm", {"name": "nope"})
            assert e.value.error.error.class_ == "GenericError" and "nope" in e.value.error.error.desc
            assert (await q.execute("query-status"))["status"] == "running"

            await q.execute("quit")
            sd = await evb.wait_for("SHUTDOWN")
            assert sd["data"] == {"guest": False, "reason": "host-qmp-quit"}
            assert set(sd["timestamp"]) == {"seconds", "microseconds"}
        finally:
            ev.close()
            evb.close()
            await disconnect(q)
            await disconnect(b)
        return before, mark

    try:
        before, mark = asyncio.run(main())
        assert p.wait() == 0
        lines = p.stdout.decode().splitlines()
        k = len(before)
        assert lines[:k] == before
        # after loadvm the guest went on from the snapshot: round k+1 again, the same sum
        assert lines[mark].startswith(f"round {k + 1} ") and lines[mark] == lines[k]
        assert lines[mark + 1] == lines[k + 1]
        assert "Traceback" not in p.stderr
    finally:
        p.close()


def test_tcp_monitor_paused_start_and_guest_shutdown():
    """--qmp tcp:HOST:0 (port announced), --paused: prelaunch until cont; the guest's own
    exit is a SHUTDOWN event with guest: true and becomes dbtlab's exit status."""
    ref = run_plain("run", SPIN, "3", "16")
    p = Dbtlab("run", "--paused", "--qmp", "tcp:127.0.0.1:0", SPIN, "3", "16")
    try:
        import re
        port = int(p.wait_output(lambda o, e: re.search(r"listening on tcp:[^:]+:(\d+)", e))
                   .group(1))

        async def main():
            q = await connect(("127.0.0.1", port))
            ev = EventLog(q)
            st = await q.execute("query-status")
            assert st["status"] == "prelaunch" and st["running"] is False
            time.sleep(0.2)
            assert p.stdout == b""
            await q.execute("cont")
            sd = await ev.wait_for("SHUTDOWN")
            assert sd["data"] == {"guest": True, "reason": "guest-shutdown"}
            assert "RESUME" in ev.names()
            ev.close()
            await disconnect(q)

        asyncio.run(main())
        assert p.wait() == 0
        assert p.stdout == ref.stdout
    finally:
        p.close()


def test_guest_signal_death_under_the_monitor(tmp_path):
    p, _path = monitored(tmp_path, str(GUESTS / "bin" / "segv"))
    try:
        assert p.wait() == -signal.SIGSEGV
        assert "guest killed by SIGSEGV" in p.stderr
    finally:
        p.close()


# ---- bad input ----------------------------------------------------------------------------------
def test_bad_qmp_input_gets_error_replies_and_the_session_goes_on(tmp_path):
    p, path = monitored(tmp_path, SPIN, "0", "64")
    r = RawQMP(path)
    try:
        g = r.greeting["QMP"]
        assert g["capabilities"] == [] and "qemu" in g["version"]

        def err(reply, cls="GenericError", *, id_=..., desc=""):
            assert "error" in reply, reply
            assert reply["error"]["class"] == cls, reply
            assert desc in reply["error"]["desc"], reply
            if id_ is ...:
                assert "id" not in reply, reply
            else:
                assert reply["id"] == id_, reply

        # before negotiation only qmp_capabilities works
        err(r.execute("query-status", id_=1), "CommandNotFound", id_=1,
            desc="Expecting capabilities negotiation with 'qmp_capabilities'")
        err(r.execute("qmp_capabilities", {"enable": ["oob"]}), desc="'oob' not available")
        err(r.execute("qmp_capabilities", {"enable": "oob"}),
            desc="Invalid parameter type for 'enable'")
        assert r.execute("qmp_capabilities", id_="neg") == {"return": {}, "id": "neg"}
        err(r.execute("qmp_capabilities"), "CommandNotFound", desc="already complete")

        # malformed JSON and non-requests
        err(r.reply(b'{"execute": }\n'), desc="JSON parse error")
        err(r.reply(b'{"execute": "query-status" ]\n'), desc="JSON parse error")
        err(r.reply(b"}\n"), desc="JSON parse error")
        err(r.reply(b"nonsense\n"), desc="JSON parse error")
        err(r.reply(b'{"execute": "query-status", "id": NaN}\n'), desc="JSON parse error")
        err(r.reply(b'{"execute": "q\xc3("}\n'), desc="invalid UTF-8")
        err(r.reply(b"[" * 2000 + b"]" * 2000 + b"\n"), desc="nesting")
        for text in (b"[1, 2]", b"42", b'"query-status"', b"null", b"true"):
            err(r.reply(text + b"\n"), desc="must be a JSON object")
        err(r.reply(b'{"id": 5}'), id_=5, desc="lacks member 'execute'")
        err(r.reply(b'{"execute": 3, "id": [1]}'), id_=[1],
            desc="'execute' must be a string")
        err(r.reply(b'{"execute": "stop", "arguments": [], "id": {"a": 1}}'),
            id_={"a": 1}, desc="'arguments' must be an object")
        err(r.reply(b'{"execute": "stop", "argumnets": {}}'),
            desc="member 'argumnets' is unexpected")
        err(r.reply(b'{"exec-oob": "stop", "id": 2}'), id_=2, desc="oob")

        # commands and their arguments
        err(r.execute("no-such-command", id_=7), "CommandNotFound", id_=7,
            desc="The command no-such-command has not been found")
        err(r.execute("loadvm", {}), desc="Parameter 'name' is missing")
        err(r.execute("loadvm", {"name": 5}),
            desc="Invalid parameter type for 'name', expected: string")
        err(r.execute("stop", {"force": True}), desc="Parameter 'force' is unexpected")
        err(r.execute("x-query-profile", {"top": True}), desc="expected: integer")
        err(r.execute("x-query-profile", {"top": 0}), desc="at least 1")
        err(r.execute("migrate", {"uri": "ftp://x"}), desc="tcp:HOST:PORT")
        err(r.execute("migrate-set-parameters", {"x-dirty-sync": "psychic"}),
            desc="one of auto, log, compare")
        err(r.execute("migrate-set-parameters", {"compress-level": 12}), desc="0 and 9")
        err(r.execute("savevm", {"name": "x"}), desc="--snapshot-store")
        err(r.execute("query-snapshots"), desc="--snapshot-store")
        err(r.execute("x-query-profile"), desc="--profile")

        # framing: split across writes, several per write, a 0xFF reset, CRLF
        r.send(b'{"execute": "query-')
        time.sleep(0.05)
        r.send(b'status", "id": "split"}')
        assert r.next_reply()["id"] == "split"
        r.send(b'{"execute":"query-version","id":1}{"execute":"query-status","id":2}\r\n')
        a, b = r.next_reply(), r.next_reply()
        assert (a["id"], b["id"]) == (1, 2) and b["return"]["status"] == "running"
        err(r.reply(b'{"execute": "query-status", \xff'), desc="0xff")
        assert r.execute("query-status", id_=3)["return"]["running"] is True

        # the guest kept running through all of it; another client is unaffected
        r2 = RawQMP(path)
        r2.execute("qmp_capabilities")
        assert r2.execute("query-status")["return"]["status"] == "running"
        r2.close()
        assert r.execute("quit") == {"return": {}}
        assert r.recv()["event"] == "SHUTDOWN"
        assert p.wait() == 0
    finally:
        r.close()
        p.close()


def test_qemu_qmp_client_sees_error_classes(tmp_path):
    p, path = monitored(tmp_path, SPIN, "0", "64")

    async def main():
        q = await connect(path)
        try:
            with pytest.raises(ExecuteError) as e:
                await q.execute("query-cpus-fast")
            assert e.value.error.error.class_ == "CommandNotFound"
            with pytest.raises(ExecuteError) as e:
                await q.execute("loadvm", {"name": ["a"]})
            assert e.value.error.error.class_ == "GenericError"
            with pytest.raises(ExecuteError) as e:
                await q.execute("cont", {"now": 1})
            assert "unexpected" in e.value.error.error.desc
            assert (await q.execute("query-status"))["running"] is True
            await q.execute("quit")
        finally:
            await disconnect(q)

    try:
        asyncio.run(main())
        assert p.wait() == 0
    finally:
        p.close()


def test_json_streamer_units():
    s = JSONStreamer()
    assert s.feed(b'{"a": "}{\\"" }') == [{"a": '}{"'}]
    assert s.feed(b' [1,') == [] and s.feed(b' {"x": [2]}]') == [[1, {"x": [2]}]]
    out = s.feed(b'tru')
    assert out == []
    out = s.feed(b'e {"b": 1}')
    assert out == [True, {"b": 1}]
    # an error inside a message drops the rest of its line, then parsing resumes
    out = s.feed(b'{"a": [} {"dropped": 1}')
    assert len(out) == 1 and isinstance(out[0], ParseError)
    assert "unexpected '}'" in out[0].desc
    assert s.feed(b' still dropped\n{"c": "\xe2\x82\xac"}') == [{"c": "\u20ac"}]
    out = s.feed(b'{"partial": \xff{"d": 2}')        # 0xFF: discard, no line skipped
    assert isinstance(out[0], ParseError) and out[1:] == [{"d": 2}]


def test_addresses():
    assert str(parse_address("tcp:127.0.0.1:4444")) == "tcp:127.0.0.1:4444"
    assert str(parse_address("tcp:[::1]:5")) == "tcp:[::1]:5"
    assert parse_address("unix:/tmp/x.sock").path == "/tmp/x.sock"
    for bad in ("tcp:host", "tcp:host:http", "unix:", "udp:1.2.3.4:5", "tcp:h:70000"):
        with pytest.raises(Exception, match="expected|needs"):
            parse_address(bad)


# ---- translation cache and profile ---------------------------------------------------------------
def test_x_query_blocks_and_profile(tmp_path):
    prof = tmp_path / "p.json"
    p, path = monitored(tmp_path, "--profile", str(prof), SPIN, "0", "64")
    p2, path2 = monitored(tmp_path, "--accel", "interp", SPIN, "0", "16", name="i.sock")

    async def main():
        q = await connect(path)
        q2 = await connect(path2)
        try:
            deadline = time.monotonic() + 60
            while True:                          # until something was translated and chained
                b = await q.execute("x-query-blocks")
                if (b["live-chain-links"] > 0 and b["compile-seconds"] > 0) \
                        or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.05)
            assert b["accel"] == "llvm" and b["translates"] is True
            assert b["blocks"] > 0 and b["live-blocks"] > 0 and b["compile-seconds"] > 0
            assert b["chain-links"] > 0 and b["live-chain-links"] > 0
            deadline = time.monotonic() + 60    # at region threshold 1, start-up compiles
            while True:                          # its loops at O2 before main runs
                pr = await q.execute("x-query-profile", {"top": 3})
                hot = pr["hot-blocks"]
                if (hot and hot[0]["function"] == "main" and hot[0]["count"] > 1000) \
                        or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.1)
            assert 1 <= len(hot) <= 3 and pr["blocks"] >= len(hot)
            assert hot[0]["function"] == "main" and hot[0]["count"] > 1000
            assert hot[0]["insns-executed"] >= hot[-1]["insns-executed"]
            deadline = time.monotonic() + 60
            while True:                          # until its vCPU thread got to run
                b2 = await q2.execute("x-query-blocks")
                if b2["runs"] >= 1 or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.05)
            assert b2["accel"] == "interp" and b2["translates"] is False
            assert b2["blocks"] == 0 and b2["runs"] >= 1
            with pytest.raises(ExecuteError) as e:
                await q2.execute("x-query-profile")
            assert "--profile" in e.value.error.error.desc
            await q.execute("quit")
            await q2.execute("quit")
        finally:
            await disconnect(q)
            await disconnect(q2)

    try:
        asyncio.run(main())
        assert p.wait() == 0 and p2.wait() == 0
        doc = json.loads(prof.read_text())
        assert doc["format"] == "dbtlab-profile" and doc["blocks"]
    finally:
        p.close()
        p2.close()


# ---- the command line ------------------------------------------------------------------------------
@pytest.mark.parametrize("args,msg", [
    (["--qmp", "nonsense", SPIN], "expected unix:PATH or tcp:HOST:PORT"),
    (["--paused", SPIN], "--paused needs --qmp"),
    (["--incoming", "tcp:127.0.0.1:0", SPIN], "give no PROGRAM"),
    (["--incoming", "tcp:127.0.0.1:0", "--env", "A=1"], "--env cannot be used"),
    (["--qmp", "unix:/nonexistent-dir/x.sock", SPIN], "cannot listen on"),
    (["--qmp", "unix:/tmp/dbt-x.sock", "--savevm-at", "5", SPIN], "use the monitor"),
])
def test_cli_errors_are_one_line(args, msg):
    r = run_plain("run", *args)
    assert r.returncode == 1, r
    err = r.stderr.decode().strip().splitlines()
    assert len(err) == 1 and msg in err[0] and err[0].startswith("dbtlab: "), err


# ---- fuzz: hostile clients ------------------------------------------------------------------------
#: valid values (to fill the other required arguments) and wrong ones, per argument type
_VALID = {"str": "x", "int": 1, "bool": False, "[str]": [], "number": 1}
_WRONG = {"str": [1, True, None, [], {}, 1.5, ["x"]],
          "int": ["1", True, None, 1.5, [], {}, [1]],
          "number": ["1", True, None, [], {}],
          "bool": [0, 1, "true", None, [], {}],
          "[str]": ["a", [1], [None], {}, 1, [["a"]]]}


def _hostile_string(rng: random.Random, path: str) -> str:
    return rng.choice([
        lambda: "",
        lambda: "x" * rng.choice((1, 300, 70_000)),
        lambda: "\ud800" + "a" * rng.randrange(5),             # lone surrogates
        lambda: "a\udfff\ud800b",
        lambda: "\x00\n\r\t\x7f",
        lambda: "".join(chr(rng.randrange(0x20, 0x3000)) for _ in range(rng.randrange(20))),
        lambda: rng.choice(["tcp:127.0.0.1:1", f"unix:{path}", "unix:\ud800", "tcp:[::1]:0",
                            "tcp:\udcff:1", "unix:", "tcp::", "unix:" + "d/" * 200]),
        lambda: rng.choice(["auto", "log", "compare", "s1", "query-status"]),
    ])()


def _hostile_value(rng: random.Random, path: str, depth: int = 0):
    kind = rng.choice(["int", "big", "float", "str", "str", "bool", "null", "list", "dict"]
                      if depth < 4 else ["int", "str", "null"])
    if kind == "int":
        return rng.choice((0, 1, -1, 12, 1 << 31, (1 << 63) - 1, 1 << 63, -(1 << 63)))
    if kind == "big":
        return rng.choice((10 ** 30, -(10 ** 200), 10 ** 4000))
    if kind == "float":
        return rng.choice((0.5, -0.0, 1e308, 1e-320))
    if kind == "str":
        return _hostile_string(rng, path)
    if kind == "bool":
        return rng.random() < 0.5
    if kind == "null":
        return None
    if kind == "list":
        return [_hostile_value(rng, path, depth + 1) for _ in range(rng.randrange(4))]
    return {_hostile_string(rng, path): _hostile_value(rng, path, depth + 1)
            for _ in range(rng.randrange(4))}


def _hostile_request(rng: random.Random, path: str) -> dict:
    names = sorted(COMMANDS)
    name = rng.choice(names) if rng.random() < 0.9 else _hostile_string(rng, path)
    msg: dict = {"execute": name}
    cmd = COMMANDS.get(name)
    if rng.random() < 0.8:
        args = {}
        params = list(cmd.params.items()) if cmd else []
        for arg, (t, _req) in params:
            r = rng.random()
            if r < 0.5:
                args[arg] = _VALID[t] if rng.random() < 0.3 else _hostile_value(rng, path)
            elif r < 0.7 and t == "str":
                args[arg] = _hostile_string(rng, path)
        if rng.random() < 0.2:
            args[_hostile_string(rng, path)] = _hostile_value(rng, path)
        msg["arguments"] = args if rng.random() < 0.95 else _hostile_value(rng, path)
    if rng.random() < 0.7:
        msg["id"] = _hostile_value(rng, path)
    if rng.random() < 0.05:
        msg[_hostile_string(rng, path)] = 1
    if msg.get("execute") == "quit" and not msg.get("arguments"):
        msg["execute"] = "query-status"             # the one request that would end it
    return msg


def _hostile_message(rng: random.Random, path: str) -> bytes:
    kind = rng.choice(["request"] * 6 + ["value", "deep", "huge", "utf8", "bytes", "split"])
    if kind == "request":
        return json.dumps(_hostile_request(rng, path)).encode()
    if kind == "value":
        return json.dumps(_hostile_value(rng, path)).encode()
    if kind == "deep":
        d = rng.choice((100, 900, 1023, 1024, 1025, 5000))
        if rng.random() < 0.5:
            return b"[" * d + b"]" * d
        return b'{"execute": "migrate", "arguments": {"uri": ' + b"[" * d + b"]" * d + b"}}"
    if kind == "huge":
        return b'{"execute": "loadvm", "arguments": {"name": "' + \
            b"z" * rng.choice((900_000, 1_100_000, 3_000_000)) + b'"}, "id": 1}'
    if kind == "utf8":
        bad = bytes(rng.randrange(0x80, 0x100) for _ in range(rng.randrange(1, 6)))
        return b'{"execute": "savevm", "arguments": {"name": "' + bad + b'"}, "id": 2}'
    if kind == "bytes":
        return bytes(rng.randrange(256) for _ in range(rng.randrange(1, 400)))
    text = json.dumps(_hostile_request(rng, path)).encode()     # "split": in pieces
    return text


def _check_message(msg) -> None:
    assert isinstance(msg, dict), msg
    if "event" in msg:
        return
    assert ("return" in msg) != ("error" in msg), msg
    assert set(msg) <= {"return", "error", "id"}, msg
    if "error" in msg:
        err = msg["error"]
        assert err["class"] in ("GenericError", "CommandNotFound"), msg
        assert err["desc"] and "internal error" not in err["desc"], msg


def _fuzz_monitor(tmp_path, cases: int, seed: int) -> None:
    rng = random.Random(seed)
    p, path = monitored(tmp_path, "--accel", "interp", "--snapshot-store",
                        str(tmp_path / "snaps.db"), SPIN, "0", "16")
    r = RawQMP(path, timeout=60)
    try:
        # every argument of every command, with every wrong type (the others valid);
        # qmp_capabilities first, while it is the only command there is
        for name, cmd in sorted(COMMANDS.items(), key=lambda c: c[0] != "qmp_capabilities"):
            if name != "qmp_capabilities" and not cmd.params:
                continue
            if name != "qmp_capabilities" and "negotiated" not in r.__dict__:
                assert r.execute("qmp_capabilities") == {"return": {}}
                r.negotiated = True
            for arg, (t, _req) in cmd.params.items():
                for v in _WRONG[t]:
                    args = {k: _VALID[tk] for k, (tk, req) in cmd.params.items() if req}
                    args[arg] = v
                    rep = r.execute(name, args, id_=name)
                    assert rep["id"] == name and rep["error"]["desc"] == \
                        f"Invalid parameter type for '{arg}', expected: " \
                        f"{_TYPE_NAMES[t]}", rep
        for k in range(cases):
            data = _hostile_message(rng, path)
            if rng.random() < 0.1:          # a client that goes away mid-message
                c = RawQMP(path, timeout=60)
                c.send(data[:rng.randrange(len(data) + 1)])
                if rng.random() < 0.5:
                    c.s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                   struct.pack("ii", 1, 0))
                c.close()
            else:
                cut = rng.randrange(len(data) + 1)
                r.send(data[:cut])
                r.send(data[cut:])
            # resynchronise (0xFF drops a partial message, newline ends a dropped line),
            # then a well-behaved request must get its answer
            r.send(b"\xff\n" + json.dumps({"execute": "query-status",
                                           "id": f"probe-{k}"}).encode())
            while True:
                msg = r.recv()
                _check_message(msg)
                if msg.get("id") == f"probe-{k}":
                    assert msg["return"]["status"] in ("running", "paused"), msg
                    break
            assert p.proc.poll() is None, (k, data[:200])
        # the monitor still serves a real client
        async def main():
            q = await connect(path)
            try:
                await q.execute("cont")
                assert (await q.execute("query-status"))["status"] == "running"
                await q.execute("quit")
            finally:
                await disconnect(q)

        asyncio.run(main())
        assert p.wait() == 0
        assert "Traceback" not in p.stderr, p.stderr[-3000:]
    finally:
        r.close()
        p.close()


_TYPE_NAMES = {"str": "string", "int": "integer", "number": "number", "bool": "boolean",
               "[str]": "array of strings"}


def test_fuzz_hostile_clients(tmp_path):
    _fuzz_monitor(tmp_path, 300, seed=11)


@pytest.mark.slow
def test_fuzz_hostile_clients_long(tmp_path):
    _fuzz_monitor(tmp_path, 20_000, seed=12)
