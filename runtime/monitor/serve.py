"""The main loop's entry point: build the VM, start the QMP listeners and the incoming
migration, run until an outcome, clean up. It sits above ``mainloop`` (the VM and its vCPU),
``qmp`` (the monitor protocol) and ``vm.migration``, which all know the VM and nothing of
each other's start-up."""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import signal
import sys
import time
from typing import Any, Callable

from dbtlab.runtime.errors import DbtError
from dbtlab.runtime.monitor import qmp
from dbtlab.runtime.monitor.mainloop import (SWITCH_INTERVAL, VM, Options, Outcome, parse_address,
                                             start_listener)
from dbtlab.runtime.vm import migration

log = logging.getLogger(__name__)


async def serve(config, options: Options,
                make_machine: Callable[[], Any] | None) -> tuple[Outcome, VM]:
    """Run the main loop until the guest ends, ``quit``, a signal, or a fatal error.

    ``make_machine`` builds the machine (None with ``options.incoming``: the machine
    arrives with the migration stream). Returns the outcome and the VM (whose ``machine``
    is still open unless its vCPU thread could not be stopped)."""
    # a vCPU running Python (the interpreter, syscalls) holds the GIL for up to the switch
    # interval whenever the loop wants it (5 ms by default, several times per command);
    # an idle loop asks for nothing, so a shorter interval costs the guest nothing
    sys.setswitchinterval(min(sys.getswitchinterval(), SWITCH_INTERVAL))
    vm = VM(config, options)
    vm.migration_params = migration.Parameters()
    loop = vm.loop
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        loop.add_signal_handler(sig, functools.partial(
            vm.shutdown, guest=False, reason="host-signal",
            outcome=Outcome(128 + sig, None, f"terminated by {signal.Signals(sig).name}")))
    try:
        try:
            addrs = [parse_address(text, "--qmp") for text in options.qmp]
            incoming = parse_address(options.incoming, "--incoming") \
                if options.incoming else None
            if incoming is None:                  # the machine exists before any monitor
                vm.attach(await loop.run_in_executor(None, make_machine))
            else:
                vm.set_runstate("inmigrate")
            for addr in addrs:
                server, bound = await start_listener(addr,
                                                     functools.partial(qmp.serve_client, vm))
                vm.servers.append(server)
                options.announce(f"QMP monitor listening on {bound}")
            if incoming is not None:
                await migration.listen_incoming(vm, incoming)
            elif not options.paused:
                vm.vcpu.resume()
                vm.set_runstate("running")
        except DbtError as e:
            vm.fatal(str(e))
        outcome = await vm.done
    finally:
        await _cleanup(vm)
    return outcome, vm


#: how long clients get to hang up by themselves after SHUTDOWN (a client that reads
#: "quit"'s reply and then disconnects should not find the connection reset under it)
CLIENT_GRACE = 0.5


async def _cleanup(vm: VM) -> None:
    for t in list(vm.tasks):
        t.cancel()
    if vm.tasks:
        await asyncio.gather(*vm.tasks, return_exceptions=True)
    deadline = time.monotonic() + CLIENT_GRACE
    while vm.sessions and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    for s in list(vm.sessions):
        await s.close()
    for server in vm.servers:
        server.close()
    if vm.vcpu is not None:
        if not await vm.vcpu.close():
            log.warning("the vCPU thread is still in a host system call; leaving it")
            vm.machine = None        # never close memory under a running thread
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        vm.loop.remove_signal_handler(sig)
    for text in vm.options.qmp:
        if text.startswith("unix:"):
            try:
                os.unlink(text[5:])
            except OSError:
                pass


def run(config, options: Options, make_machine: Callable[[], Any] | None) -> tuple[Outcome, Any]:
    """Run the main loop on a fresh event loop; returns the outcome and the machine (still
    open, for statistics and profiles: the caller closes it), or None if there is none."""
    outcome, vm = asyncio.run(serve(config, options, make_machine))
    return outcome, vm.machine
