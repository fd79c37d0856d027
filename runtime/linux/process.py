"""The Linux process state every accelerator shares: files, memory layout, clocks, signals.

One ``Process`` per guest program. The syscall layer (``dbtlab.runtime.linux.syscalls``) reads and
changes it; the Machine looks at ``exit_status`` / ``killed_by`` after each syscall.

Deterministic choices (documented here once):

* identity: pid = tid = 1000, ppid = 999, process group and session 1000; uid/gid come from
  the ``StartConfig`` (the host's by default).
* ``time_mode="virtual"``: every clock is a function of the retired-instruction count,
  ``instret * ns_per_insn`` (1 ns per instruction by default) plus the time the guest asked
  to sleep. CLOCK_REALTIME starts at 2026-01-01T00:00:00Z, CLOCK_MONOTONIC/BOOTTIME at
  1000 s of "uptime", the CPU-time clocks at 0. nanosleep then returns at once. The same
  program therefore sees the same times under every accelerator and on every run.
  ``time_mode="host"`` uses the host's clocks and really sleeps.
* ``random_mode="seeded"`` (default): getrandom returns a SHA-256 counter stream seeded from
  the AT_RANDOM bytes; ``"host"`` uses os.urandom.
* the mmap area grows down from ``StartConfig.mmap_top`` (Linux's no-randomisation
  mmap_base), first fit from the top, never below 64 KiB (mmap_min_addr); the brk heap
  starts at the page after the program's highest segment.
* one CPU (sched_getaffinity), a fixed sysinfo, the uname in ``syscalls/info.py``.

Signals: dispositions and the blocked mask are recorded; a signal sent to the process
(kill/tkill/tgkill with our pid, SIGPIPE on a broken pipe) is acted on when not blocked:
ignored, or — for the default action of a fatal signal — ``killed_by`` is set and the
Machine stops. Running guest signal handlers is not supported: such a signal is dropped
with a warning (so abort() still dies, because it resets SIGABRT to SIG_DFL and retries).
"""

from __future__ import annotations

import bisect
import hashlib
import logging
import os
import sys
import time
from dataclasses import dataclass
from typing import Callable, TextIO

from dbtlab.runtime.linux.loader import LoadedProgram, StartConfig
from dbtlab.runtime.linux.memory import ADDR_LIMIT, GuestMemory, page_align_up

log = logging.getLogger(__name__)

PID = 1000
PPID = 999
MMAP_MIN_ADDR = 0x10000

VIRTUAL_REALTIME_START_NS = 1767225600 * 10**9     # 2026-01-01T00:00:00Z
VIRTUAL_MONOTONIC_START_NS = 1000 * 10**9

RLIM_INFINITY = (1 << 64) - 1
RLIMIT_CPU, RLIMIT_FSIZE, RLIMIT_DATA, RLIMIT_STACK, RLIMIT_CORE = 0, 1, 2, 3, 4
RLIMIT_NOFILE, RLIMIT_AS = 7, 9
RLIMIT_NLIMITS = 16

# signals (generic numbering, as on x86-64)
SIGHUP, SIGINT, SIGQUIT, SIGILL, SIGTRAP, SIGABRT, SIGBUS, SIGFPE = 1, 2, 3, 4, 5, 6, 7, 8
SIGKILL, SIGUSR1, SIGSEGV, SIGUSR2, SIGPIPE, SIGALRM, SIGTERM = 9, 10, 11, 12, 13, 14, 15
SIGCHLD, SIGCONT, SIGSTOP, SIGTSTP, SIGTTIN, SIGTTOU, SIGURG, SIGWINCH = 17, 18, 19, 20, 21, 22, 23, 28
NSIG = 64
SIG_DFL, SIG_IGN = 0, 1
_DEFAULT_IGNORE = {SIGCHLD, SIGCONT, SIGURG, SIGWINCH}
_DEFAULT_STOP = {SIGSTOP, SIGTSTP, SIGTTIN, SIGTTOU}
SIGNAL_NAMES = {1: "SIGHUP", 2: "SIGINT", 3: "SIGQUIT", 4: "SIGILL", 5: "SIGTRAP",
                6: "SIGABRT", 7: "SIGBUS", 8: "SIGFPE", 9: "SIGKILL", 10: "SIGUSR1",
                11: "SIGSEGV", 12: "SIGUSR2", 13: "SIGPIPE", 14: "SIGALRM", 15: "SIGTERM",
                16: "SIGSTKFLT", 17: "SIGCHLD", 18: "SIGCONT", 19: "SIGSTOP", 20: "SIGTSTP",
                21: "SIGTTIN", 22: "SIGTTOU", 23: "SIGURG", 24: "SIGXCPU", 25: "SIGXFSZ",
                26: "SIGVTALRM", 27: "SIGPROF", 28: "SIGWINCH", 29: "SIGIO", 30: "SIGPWR",
                31: "SIGSYS"}


def signal_name(sig: int) -> str:
    if sig in SIGNAL_NAMES:
        return SIGNAL_NAMES[sig]
    if 32 <= sig <= NSIG:
        return f"SIGRT{sig - 32}" if sig < 34 else f"SIGRTMIN+{sig - 34}"
    return str(sig)


class SyscallError(Exception):
    """Raised by syscall helpers: the syscall returns -errno."""

    def __init__(self, errno_: int) -> None:
        super().__init__(errno_)
        self.errno = errno_


@dataclass
class FileDesc:
    """One open guest file descriptor.

    ``host_fd`` is the host descriptor doing the work (the host tracks offsets). A
    descriptor without one is synthesized by dbtlab: ``data`` holds the bytes of a
    synthesized file (``/proc/self/maps``), read with ``pos``; ``special`` names one whose
    contents are made on each access: ``"mem"`` (``/proc/self/mem``: ``pos`` is a guest
    address) or ``"dir"`` (a synthesized directory such as ``/proc/self/fd``: ``entries``
    lists its (name, d_type) and ``pos`` counts the entries already returned). The guest
    only ever names descriptors through this table: a host descriptor that is not behind
    one of its FileDescs cannot be reached. ``owned`` is False for the host stdio
    descriptors the process was given: closing the guest fd never closes them."""

    host_fd: int | None
    path: str
    flags: int                    # guest open flags (asm-generic values)
    owned: bool = True
    cloexec: bool = False
    data: bytes | None = None
    pos: int = 0
    is_dir: bool = False
    special: str = ""
    entries: tuple[tuple[str, int], ...] = ()

    @property
    def synthetic(self) -> bool:
        """True for a descriptor dbtlab makes up (no host descriptor behind it)."""
        return self.host_fd is None

    def close(self) -> None:
        if self.owned and self.host_fd is not None:
            try:
                os.close(self.host_fd)
            except OSError:
                pass
            self.host_fd = None


class RangeSet:
    """Sorted disjoint [start, end) ranges, merged when adjacent: the mapped address space,
    kept in step with GuestMemory through its map listeners (for fast free-range search)."""

    def __init__(self) -> None:
        self.starts: list[int] = []
        self.ends: list[int] = []

    def add(self, a: int, b: int) -> None:
        i = bisect.bisect_left(self.ends, a)          # first range ending at/after a
        j = bisect.bisect_right(self.starts, b)       # ranges starting at/before b
        if i < j:
            a = min(a, self.starts[i])
            b = max(b, self.ends[j - 1])
        self.starts[i:j] = [a]
        self.ends[i:j] = [b]

    def remove(self, a: int, b: int) -> None:
        i = bisect.bisect_right(self.ends, a)         # first range ending after a
        j = bisect.bisect_left(self.starts, b)        # ranges starting before b
        if i >= j:
            return
        new_s, new_e = [], []
        if self.starts[i] < a:
            new_s.append(self.starts[i])
            new_e.append(a)
        if self.ends[j - 1] > b:
            new_s.append(b)
            new_e.append(self.ends[j - 1])
        self.starts[i:j] = new_s
        self.ends[i:j] = new_e

    def overlaps(self, a: int, b: int) -> bool:
        i = bisect.bisect_right(self.ends, a)
        return i < len(self.starts) and self.starts[i] < b

    def find_top_down(self, size: int, low: int, high: int) -> int | None:
        """Highest start s with [s, s+size) free and inside [low, high)."""
        end = high
        i = bisect.bisect_left(self.starts, high) - 1
        while i >= 0:
            s, e = self.starts[i], self.ends[i]
            if e <= end:
                if end - e >= size and end - size >= low:
                    return end - size
            end = min(end, s)
            if end - size < low:
                return None
            i -= 1
        return end - size if end - size >= low else None

    def __iter__(self):
        return iter(zip(self.starts, self.ends))


class Process:
    """The guest process: the state behind every syscall."""

    def __init__(self, mem: GuestMemory, program: LoadedProgram, cfg: StartConfig | None = None,
                 *, stdin: int = 0, stdout: int = 1, stderr: int = 2, strace: bool = False,
                 strace_stream: TextIO | None = None, time_mode: str = "host",
                 ns_per_insn: float = 1.0, random_mode: str = "seeded",
                 cwd: str | None = None) -> None:
        if time_mode not in ("host", "virtual"):
            raise ValueError(f"time_mode must be 'host' or 'virtual', not {time_mode!r}")
        if random_mode not in ("seeded", "host"):
            raise ValueError(f"random_mode must be 'seeded' or 'host', not {random_mode!r}")
        self.mem = mem
        self.program = program
        self.cfg = cfg = cfg or StartConfig()
        self.pid = self.tid = PID
        self.ppid = PPID
        self.uid = self.euid = cfg.uid
        self.gid = self.egid = cfg.gid
        self.argv = list(program.argv)
        self.envp = list(program.env)
        self.auxv = list(program.auxv)
        self.exe_path = program.exe_path or os.path.realpath(program.path)
        self.cwd = os.path.realpath(cwd) if cwd else os.getcwd()
        self.umask = 0o022
        self.comm = os.path.basename(program.execfn or program.path)[:15]

        # files
        self.fds: dict[int, FileDesc] = {}
        for gfd, hfd, name in ((0, stdin, "<stdin>"), (1, stdout, "<stdout>"),
                               (2, stderr, "<stderr>")):
            if hfd is not None and hfd >= 0:
                self.fds[gfd] = FileDesc(hfd, name, 2 if gfd else 0, owned=False)

        # memory layout
        self.brk_start = self.brk = program.brk_start
        self.mmap_top = cfg.mmap_top
        self.mmap_min = MMAP_MIN_ADDR
        self.mapped = RangeSet()
        for start, end, *_ in mem.regions():
            self.mapped.add(start, end)
        self._listener = self._on_map
        mem.map_listeners.append(self._listener)

        # exit
        self.exit_status: int | None = None
        self.killed_by: int | None = None

        # clocks
        self.time_mode = time_mode
        self.ns_per_insn = ns_per_insn
        self.instret_source: Callable[[], int] = lambda: 0
        self.slept_ns = 0
        self.random_mode = random_mode
        self._rand_counter = 0

        # threads / signals
        self.clear_child_tid = 0
        self.robust_list = (0, 0)
        self.sigactions: dict[int, tuple[int, int, int]] = {}   # sig -> (handler, flags, mask)
        self.sigmask = 0
        self.pending: set[int] = set()
        self.sigaltstack = (0, 2, 0)                             # (sp, flags=SS_DISABLE, size)
        self.rlimits: dict[int, tuple[int, int]] = {
            RLIMIT_STACK: (cfg.stack_size, RLIM_INFINITY),
            RLIMIT_NOFILE: (1024, 1048576),
            RLIMIT_CORE: (0, RLIM_INFINITY),
        }

        # tracing and hooks
        self.strace = strace
        self.strace_stream = strace_stream
        #: called with (start, end) by riscv_flush_icache: the Machine drops translations
        self.icache_flush: Callable[[int, int], None] | None = None
        self.warned: set = set()

    # ---- lifecycle ------------------------------------------------------------------------
    @property
    def done(self) -> bool:
        """True once the process exited or was killed."""
        return self.exit_status is not None or self.killed_by is not None

    def close(self) -> None:
        """Close every host descriptor the guest opened (not the given stdio)."""
        for d in self.fds.values():
            d.close()
        self.fds.clear()
        if self._listener in self.mem.map_listeners:
            self.mem.map_listeners.remove(self._listener)

    def warn_once(self, key, msg: str, *args) -> None:
        if key not in self.warned:
            self.warned.add(key)
            log.warning(msg, *args)

    @property
    def trace_stream(self) -> TextIO:
        return self.strace_stream if self.strace_stream is not None else sys.stderr

    # ---- files ----------------------------------------------------------------------------
    def get_fd(self, fd: int) -> FileDesc:
        d = self.fds.get(fd)
        if d is None:
            raise SyscallError(9)      # EBADF
        return d

    def alloc_fd(self, desc: FileDesc, lowest: int = 0) -> int:
        """Install desc at the lowest free guest fd >= lowest (EMFILE past RLIMIT_NOFILE)."""
        limit = self.rlimits[RLIMIT_NOFILE][0]
        fd = lowest
        while fd in self.fds:
            fd += 1
        if fd >= limit:
            desc.close()
            raise SyscallError(24)     # EMFILE
        self.fds[fd] = desc
        return fd

    # ---- memory layout --------------------------------------------------------------------
    def _on_map(self, event: str, addr: int, size: int, prot: int, host: int) -> None:
        if event == "map":
            self.mapped.add(addr, addr + size)
        elif event == "unmap":
            self.mapped.remove(addr, addr + size)

    def is_free(self, addr: int, size: int) -> bool:
        return 0 <= addr and addr + size <= ADDR_LIMIT and not self.mapped.overlaps(addr, addr + size)

    def find_free(self, size: int, hint: int = 0) -> int | None:
        """Where a non-fixed mmap of ``size`` bytes goes: the hint (page-aligned up) if that
        range is free, else the highest free range below mmap_top, else the highest one
        anywhere below the stack (Linux's top-down allocator, no randomisation)."""
        if hint:
            a = page_align_up(hint)
            if a >= self.mmap_min and a + size <= ADDR_LIMIT and self.is_free(a, size):
                return a
        a = self.mapped.find_top_down(size, self.mmap_min, self.mmap_top)
        if a is None:
            a = self.mapped.find_top_down(size, self.mmap_min, self.program.stack_range[0]
                                          or ADDR_LIMIT)
        return a

    # ---- clocks ---------------------------------------------------------------------------
    def virtual_ns(self) -> int:
        """Nanoseconds of guest time elapsed since start (virtual mode)."""
        return int(self.instret_source() * self.ns_per_insn) + self.slept_ns

    def cpu_ns(self) -> int:
        if self.time_mode == "virtual":
            return int(self.instret_source() * self.ns_per_insn)
        return time.process_time_ns()

    def clock_ns(self, clock: int) -> int:
        """The value of a Linux clock (CLOCK_* number) in ns; raises EINVAL if unknown."""
        if clock in (2, 3):                                       # process / thread CPU time
            return self.cpu_ns()
        if clock not in (0, 1, 4, 5, 6, 7, 8, 9, 11):
            raise SyscallError(22)
        if self.time_mode == "virtual":
            base = VIRTUAL_REALTIME_START_NS if clock in (0, 5, 8, 11) else VIRTUAL_MONOTONIC_START_NS
            return base + self.virtual_ns()
        host = {0: time.CLOCK_REALTIME, 5: time.CLOCK_REALTIME, 8: time.CLOCK_REALTIME,
                11: getattr(time, "CLOCK_TAI", time.CLOCK_REALTIME),
                1: time.CLOCK_MONOTONIC, 6: time.CLOCK_MONOTONIC,
                4: getattr(time, "CLOCK_MONOTONIC_RAW", time.CLOCK_MONOTONIC),
                7: getattr(time, "CLOCK_BOOTTIME", time.CLOCK_MONOTONIC),
                9: getattr(time, "CLOCK_BOOTTIME", time.CLOCK_MONOTONIC)}[clock]
        return time.clock_gettime_ns(host)

    def sleep_ns(self, ns: int) -> None:
        """Let ns of guest time pass: really (host mode) or by advancing virtual time."""
        if ns <= 0:
            return
        if self.time_mode == "virtual":
            self.slept_ns += ns
        else:
            time.sleep(ns / 1e9)

    # ---- randomness -----------------------------------------------------------------------
    def random_bytes(self, n: int) -> bytes:
        if self.random_mode == "host":
            return os.urandom(n)
        out = bytearray()
        seed = self.cfg.random_bytes + b"dbtlab-getrandom"
        while len(out) < n:
            out += hashlib.sha256(seed + self._rand_counter.to_bytes(8, "little")).digest()
            self._rand_counter += 1
        return bytes(out[:n])

    # ---- signals --------------------------------------------------------------------------
    def send_signal(self, sig: int) -> None:
        """A signal sent to this process: acted on now unless blocked (then pending)."""
        if sig == 0 or self.done:
            return
        if sig not in (SIGKILL, SIGSTOP) and self.sigmask & (1 << (sig - 1)):
            self.pending.add(sig)
            return
        self._act(sig)

    def deliver_pending(self) -> None:
        """Act on pending signals the mask no longer blocks (after sigprocmask etc.)."""
        for sig in sorted(self.pending):
            if not self.sigmask & (1 << (sig - 1)):
                self.pending.discard(sig)
                self._act(sig)
                if self.done:
                    return

    def _act(self, sig: int) -> None:
        handler = self.sigactions.get(sig, (SIG_DFL, 0, 0))[0]
        if sig in (SIGKILL, SIGSTOP):
            handler = SIG_DFL
        if handler == SIG_IGN:
            return
        if handler == SIG_DFL:
            if sig in _DEFAULT_IGNORE:
                return
            if sig in _DEFAULT_STOP:
                self.warn_once(("stop", sig), "%s would stop the process; ignored",
                               signal_name(sig))
                return
            self.killed_by = sig
            log.debug("process killed by %s", signal_name(sig))
            return
        self.warn_once(("handler", sig), "%s: running guest signal handlers is not "
                       "supported; handler at %#x not run, signal dropped",
                       signal_name(sig), handler)
