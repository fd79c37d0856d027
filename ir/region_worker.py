"""Worker processes that compile second-tier regions off the executing process.

llvmlite serialises compilation inside one process, so optimising a region (10-30 ms) in
the executing process would stall the guest. Instead each worker is a separate Python
process (``python -m dbtlab.ir.region_worker``) that receives LLVM IR and returns object
code over a pipe; the executing process links the object in when it is ready (see
``runtime/accel/llvm.py``). Plain pipes rather than ``multiprocessing``: nothing here can
re-run the user's ``__main__`` (as multiprocessing's spawn does) or fork a process holding
LLVM state and a signal handler.

Messages are length-prefixed pickles: request ``(job, ir_text, opt_level, codegen_opt)``,
reply ``(job, object_bytes or None, error or None)``.
"""

from __future__ import annotations

import logging
import pickle
import queue
import struct
import subprocess
import sys
import threading
from typing import Callable

log = logging.getLogger(__name__)
_LEN = struct.Struct("<Q")


def _send(f, obj) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    f.write(_LEN.pack(len(data)) + data)
    f.flush()


def _recv(f):
    head = f.read(_LEN.size)
    if len(head) < _LEN.size:
        return None
    n = _LEN.unpack(head)[0]
    data = f.read(n)
    if len(data) < n:
        return None
    return pickle.loads(data)


def main() -> int:
    """Worker loop: compile requests until stdin closes."""
    from dbtlab.ir.jit import compile_object
    inp, out = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr          # nothing else may write to the reply pipe
    while True:
        msg = _recv(inp)
        if msg is None:
            return 0
        job, text, opt, cg = msg
        try:
            _send(out, (job, compile_object(text, opt, cg), None))
        except Exception as e:       # noqa: BLE001 - the error travels back to the caller
            _send(out, (job, None, f"{type(e).__name__}: {e}"))


class _Worker:
    def __init__(self, on_reply: Callable) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "dbtlab.ir.region_worker"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self._jobs: set = set()          # submitted, not answered (under _lock)
        self.alive = True
        self._on_reply = on_reply
        self._lock = threading.Lock()
        self.thread = threading.Thread(target=self._read, daemon=True,
                                       name="dbtlab-region-worker")
        self.thread.start()
        # requests go through a thread of their own: a region's IR is larger than a pipe's
        # buffer, and writing it while the worker compiles the previous one would block
        # the guest until that compile ends
        self._out: queue.SimpleQueue = queue.SimpleQueue()
        self._writer = threading.Thread(target=self._write, daemon=True,
                                        name="dbtlab-region-worker-send")
        self._writer.start()

    def _write(self) -> None:
        while True:
            msg = self._out.get()
            if msg is None:
                break
            try:
                _send(self.proc.stdin, msg)
            except OSError:              # the worker is gone: the reader reports it
                return
        try:
            self.proc.stdin.close()
        except OSError:
            pass

    def _read(self) -> None:
        while True:
            try:
                msg = _recv(self.proc.stdout)
            except Exception:            # noqa: BLE001 - the pipe broke: worker is gone
                msg = None
            if msg is None:
                # every job it had is answered (with an error), so that none waits forever
                with self._lock:
                    self.alive = False
                    lost, self._jobs = self._jobs, set()
                for job in sorted(lost):
                    self._on_reply(job, None, "worker exited")
                self._on_reply(None, None, "worker exited")
                return
            job, obj, err = msg
            with self._lock:
                self._jobs.discard(job)
            self._on_reply(job, obj, err)

    @property
    def pending(self) -> int:
        return len(self._jobs)

    def submit(self, job, text: str, opt: int, cg: int) -> None:
        with self._lock:
            alive = self.alive
            if alive:
                self._jobs.add(job)
        if not alive:                    # died after the pool chose it
            self._on_reply(job, None, "worker exited")
            return
        self._out.put((job, text, opt, cg))

    def close(self) -> None:
        """Stop now: a compile in progress is not waited for (its result is unwanted)."""
        self._out.put(None)
        self.proc.kill()
        self.proc.wait()
        self._writer.join(timeout=2)


class WorkerPool:
    """``n`` compile workers, started on first use; ``submit`` never blocks on a compile.
    ``callback(job, object_bytes or None, error or None)`` runs in a reader thread.

    Threads: ``submit`` and ``close`` may come from different threads (the worker list and
    ``closed`` are under ``_lock``); each worker's unanswered jobs and its ``alive`` flag
    are under the worker's lock (its reader thread answers them); requests reach a worker's
    pipe only through its writer thread's queue, replies only through its reader thread.
    A worker that dies answers each of its jobs with an error and is replaced by the next
    ``submit``."""

    def __init__(self, n: int, callback: Callable) -> None:
        self.n = n
        self.callback = callback
        self.workers: list[_Worker] = []
        self._lock = threading.Lock()
        self.closed = False

    def _reply(self, job, obj, err) -> None:
        if self.closed:               # killed on purpose: nobody waits for these
            return
        if job is None:
            log.warning("a region compile worker exited: %s", err)
            return
        self.callback(job, obj, err)

    def submit(self, job, text: str, opt: int, cg: int) -> None:
        with self._lock:
            if self.closed:           # closing: the job is never answered
                return
            dead = [w for w in self.workers if not w.alive]
            if dead:                  # a worker that died is replaced
                self.workers = [w for w in self.workers if w.alive]
            if len(self.workers) < self.n:
                self.workers.append(_Worker(self._reply))
            w = min(self.workers, key=lambda w: w.pending)
        for d in dead:
            d.close()
        w.submit(job, text, opt, cg)

    def close(self) -> None:
        with self._lock:              # submit() may run on another thread
            self.closed = True
            workers, self.workers = self.workers, []
        for w in workers:
            w.close()


if __name__ == "__main__":
    sys.exit(main())
