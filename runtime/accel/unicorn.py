"""``--accel unicorn``: unicorn 2.1.4 (QEMU 5's RISC-V TCG as a library) executes the guest.

This module is the only place in dbtlab that imports unicorn. Unicorn runs on the machine's
own memory and reports exits exactly as the interpreter does (reason, pc, fault kind and
address, illegal word, instructions retired), so it serves as an independent oracle for the
difftest and the fuzzer, and as a third engine for whole programs.

Design
------
*Privilege: user mode (PRIV = 0).* Unicorn starts in machine mode, where ``mret`` jumps to
``mepc``, ``wfi`` silently ends the emulation and ``csrrw mstatus`` succeeds (and could turn
the FPU off under us). A Linux process must see all of these, and every access to a machine
or supervisor CSR, as illegal instructions: in U-mode QEMU's own privilege checks do exactly
that, with nothing to detect or emulate here. Nothing is lost: there are no PMP rules and
``satp`` is 0, so every access is allowed, and exceptions are not vectored anyway (they reach
our hooks). The one machine CSR we need, ``mstatus.FS``, is written once at start-up in
M-mode (quirk 2) before dropping to U.

*Memory: zero copy, kept in sync.* Every guest mapping is mapped into unicorn with
``uc_mem_map_ptr`` on the machine's read-write host view (``mem.host_base + addr``) with the
guest permissions. ``mem.map_listeners`` follow map, unmap and protect (split against
unicorn's regions, so partial unmaps and protects work). Python writes (syscalls filling
buffers, the loader, tests) are visible to unicorn at once; executable pages are marked as
code in ``GuestMemory`` so that a Python write there reaches ``code_write_listeners``, which
drop unicorn's translations of that page (``UC_CTL_TB_REMOVE_CACHE``, quirk 12). Guest
stores into code are handled by unicorn itself (QEMU's dirty-page tracking): they take
effect at the next block, and ``fence.i`` ends the block (see deviations).

*Counting: a native block hook.* ``executed`` must equal the interpreter's exactly.
Unicorn offers no instruction counter; a Python code hook runs at ~3 M insn/s, a Python
block hook ~10x slower than none, and ``uc_emu_start``'s ``count`` adds a C call per
instruction. Instead unicorn calls a small LLVM function (compiled once per process with
llvmlite, ~20 ms) at every block entry. It adds the block's instruction count to a counter
and remembers the block. The count comes from a direct-mapped cache keyed by address and
size and validated by a 64-bit hash of the block's bytes in the host view (code rewritten
by the guest or from Python is recounted from the instructions' length bits). Measured
(process CPU time, sha256 1000000 20 = 1.5 G instructions): unicorn with no hook 1.3-1.6
s, with this hook 1.85-2.1 s (+30%); counting by scanning every block execution 5.0 s;
``count`` mode 8.0 s. On qsort (1.4 G, store-bound) +16% vs 65% for ``count``.
When a run ends inside a block (ecall, fault, illegal, ebreak) the instructions from the
stopping one to the block's end are subtracted: the stopping pc is exact (quirks 3, 5, 6)
and only instructions inside the reported block are subtracted (quirk 8). The hook also
enforces the budget: when a block would take the count past it, it calls ``uc_emu_stop``
before the block runs, and the last partial block runs with ``count``. A budget below
``COUNT_MODE_BUDGET`` (``--max-insns``, single steps, the difftest) goes to
``uc_emu_start`` as ``count`` directly, exact to the instruction. Switching ``count`` on or
off drops all translations (quirk 10), so alternating tiny and unlimited budgets is slow;
the machine never does.

*State: one batch call each way.* ``machine.cpu`` is imported before and exported after
every run with a single ``uc_reg_write_batch`` / ``uc_reg_read_batch`` (x, f, pc, fflags,
frm) on pointers straight into the ``CPUState`` (~1 µs each; the Python binding costs
~50 µs for the same). The LR/SC reservation has no register: it is exchanged through
``uc_context_save``/``restore`` at offsets probed and verified once per process (0.3 µs;
restored only when ``machine.cpu``'s reservation changed since the last export). Measured
per-run overhead (import, ``uc_emu_start``, one instruction and an ecall, export): ~7-9 µs
(interp ~16-24 µs, llvm ~4-6 µs on the same loaded 2-core machine).

*Exit requests and the write log.* ``request_exit`` (any thread) sets the block hook's
limit to 0: the run stops before its next block, which is then neither run nor counted.
While ``mem.write_log`` is on (difftest, fuzzer, migration) a second native hook
(``UC_HOOK_MEM_WRITE``, installed only then) logs the pages unicorn stores to, with a
256-entry duplicate filter, into a ring drained into ``mem.write_log`` after every run; a
ring overflow (``WLOG_PAGES`` distinct pages in one run) counts every writable page.

Quirks of unicorn 2.1.4 absorbed here (each pinned by a test in tests/runtime/test_unicorn.py)
----------------------------------------------------------------------------------------------
1. FP is disabled at reset (``mstatus.FS`` = 0: every FP instruction is illegal): we set
   FS = initial.
2. ``reg_write`` of an M-mode CSR is silently ignored unless the privilege is M (and a read
   returns garbage): FS is written in M-mode, then the privilege is dropped to U.
3. ``ecall`` reaches ``UC_HOOK_INTR`` with cause 8 in every privilege, with the pc already
   advanced by 4. Every exception delivered through the hook shows pc + 4, also for a
   2-byte instruction (an illegal compressed one shows + 4, not + 2): the stopping pc is
   always hook pc - 4. We report the ecall's own pc, as the interpreter does.
4. Illegal instructions (reserved compressed encodings, ``0x0000``, ``0xFFFFFFFF``, ``mret``,
   ``sret``, ``wfi``, ``sfence.vma`` and machine/supervisor CSR accesses, made illegal by
   U-mode, invalid rounding modes) arrive as cause 2 through that hook: ``EXIT_ILLEGAL``
   with the instruction word read from memory.
5. ``ebreak`` / ``c.ebreak`` never reach the hook: ``uc_emu_start`` fails with
   ``UC_ERR_INSN_INVALID`` at the exact pc: ``EXIT_EBREAK``.
6. Unmapped or protected accesses make ``uc_emu_start`` fail at the exact pc; the
   ``UC_HOOK_MEM_INVALID`` hook gives the access and the address: ``FAULT_LOAD`` /
   ``FAULT_STORE`` / ``FAULT_FETCH``.
7. A misaligned AMO or LR raises cause 4 through the hook (pc + 4 again) and unicorn never
   exposes the address (``mtval`` is written only when a trap is taken, which unicorn never
   does): we decode the instruction and report ``FAULT_MISALIGNED`` at ``x[rs1]`` (atomics
   have no offset and fault before writing rd), as Linux's SIGBUS and the interpreter do.
8. The block hook's size includes the stopping instruction for some illegal encodings and
   not for others (``0x0000`` ends the previous block, ``0xFFFFFFFF`` is inside it); the
   count correction only subtracts instructions inside the reported block.
9. An AMO (or SC) on unmapped memory is reported as a *read* of unmapped memory (its load
   half faults first); RISC-V raises a store/AMO fault, as the interpreter does: a load
   fault at an AMO/SC is reported as ``FAULT_STORE`` at the same address.
10. ``uc_emu_start(count=N)`` installs its counting hook without dropping blocks translated
    without it, which then run uncounted: we flush the translation cache when switching
    ``count`` on (unicorn flushes itself when switching it off).
11. A store straddling into a page it may not write is split into byte stores: the
    accessible bytes are written and the invalid-memory hook runs once per refused byte;
    we keep the first, which is the interpreter's fault address (the partial write is a
    deviation, below).
12. ``UC_CTL_TB_REMOVE_CACHE`` fills TLB entries for the range that ignore the pages'
    permissions (a page made unreadable becomes readable again): every removal is
    followed by a TLB flush.
13. A load refused because the page is not readable leaves a TLB entry that lets the
    next load through: the TLB is flushed after every memory fault.
14. An odd pc is fetched as if it were aligned (a pc of 1 reports a fetch fault at 1, an
    odd pc in code runs the halfwords there). The spec raises instruction-address-
    misaligned: ``run`` reports ``FAULT_FETCH_MISALIGNED`` at the pc before starting
    (no RV64GC control transfer can make the pc odd, so the start is the only place).

Known deviations (unicorn is not our truth; comparisons must list these exactly)
------------------------------------------------------------------------------
* FP bugs (FACTS.md): fmin/fmax with one signalling NaN return the canonical NaN; single
  results are not NaN-boxed (upper 32 bits zero; ``fmv.w.x`` copies all 64 bits of the
  integer register); improperly boxed single inputs are not treated as the canonical NaN;
  fma(inf, 0, qNaN) does not raise NV. Not "fixed" here.
* Some reserved compressed encodings run as no-ops: quadrant 0 with funct3 = 100, and the
  c.subw/c.addw row's funct2 = 10/11 slots (``w & 0xE003 == 0x8000`` or ``w & 0xFC63`` in
  0x9C41, 0x9C61; found by the fuzzer); the spec and the interpreter make them illegal.
* ``cycle``/``instret`` read the host time-stamp counter, not the instruction count our
  engines return; ``time`` (``rdtime``) is an illegal instruction (QEMU implements it
  only with a CLINT, which unicorn lacks).
* ``csrrs``/``csrrc`` with ``rs1`` != x0 holding 0 on a read-only counter is executed as a
  read (QEMU 5 looks at the write mask, not at rs1); the spec makes it illegal.
* A misaligned ``sc`` without a reservation just fails (rd = 1); the spec and the
  interpreter raise address-misaligned (SIGBUS).
* A store straddling into an unmapped or read-only page writes its accessible bytes before
  faulting (the interpreter writes nothing; same fault address, quirk 11).
* A store into the block that is executing takes effect only from the next block (QEMU has
  no precise SMC on RISC-V); RISC-V guarantees it only after ``fence.i``, which works.
* Reservation: when unicorn drops a reservation it forgets the address (``load_res`` = -1),
  so ``res_addr`` is then left as it was imported: compare ``res_addr`` only while
  ``res_valid`` is 1 (``res_val`` is kept by both). If the context probe fails (another
  unicorn build), the reservation is not exchanged at all and a warning is logged.
"""

from __future__ import annotations

import ctypes
import logging
import threading
from dataclasses import dataclass

from unicorn import Uc, UcError
from unicorn import unicorn_const as UC
from unicorn import riscv_const as R
from unicorn.unicorn_py3.unicorn import uclib

from dbtlab.ir.state import (EXIT_BUDGET, EXIT_EBREAK, EXIT_ECALL, EXIT_FAULT, EXIT_ILLEGAL,
                             FAULT_FETCH, FAULT_FETCH_MISALIGNED, FAULT_LOAD, FAULT_MISALIGNED,
                             FAULT_STORE, CPUState)
from dbtlab.runtime.accel.base import AccelStats, Accelerator, Exit
from dbtlab.runtime.linux.memory import PAGE_SHIFT, PAGE_SIZE, PROT_EXEC, PROT_WRITE
from dbtlab.translator.decode import decode

log = logging.getLogger(__name__)

#: budgets below this go to ``uc_emu_start`` as ``count`` (exact, a C hook per instruction);
#: larger ones are "until something happens" and are enforced by the native block hook
COUNT_MODE_BUDGET = 1 << 40
#: ``until`` address: odd, so never a guest pc (0 would stop a jump to address 0 silently)
_UNTIL = 1
_MAX64 = (1 << 64) - 1
_MSTATUS_FS_INITIAL = 0x2000
_PRIV_U, _PRIV_M = 0, 3
_CAUSE_ILLEGAL, _CAUSE_LOAD_MISALIGNED, _CAUSE_STORE_MISALIGNED, _CAUSE_ECALL = 2, 4, 6, 8

_MEM_FAULT_KIND = {
    UC.UC_MEM_READ_UNMAPPED: FAULT_LOAD, UC.UC_MEM_READ_PROT: FAULT_LOAD,
    UC.UC_MEM_WRITE_UNMAPPED: FAULT_STORE, UC.UC_MEM_WRITE_PROT: FAULT_STORE,
    UC.UC_MEM_FETCH_UNMAPPED: FAULT_FETCH, UC.UC_MEM_FETCH_PROT: FAULT_FETCH,
}

# ---- the native block hook ------------------------------------------------------------
# st: [0] count, [1] last block address, [2] last block size, [3] host base,
#     [4] limit (count may not exceed it), [5] set when the hook stopped the run,
#     [6] address of uc_emu_stop, [7] unused; then the block cache: _CACHE_ENTRIES
#     entries of {address, size | instructions << 32, hash of the block's bytes}
_ST_COUNT, _ST_ADDR, _ST_SIZE, _ST_BASE, _ST_LIMIT, _ST_STOPPED, _ST_STOPFN = range(7)
_CACHE_ENTRIES = 4096
_ST_WORDS = 8 + 3 * _CACHE_ENTRIES
#: the write log (while ``mem.write_log`` is on): pages per run before it overflows (then
#: every writable page counts as written), and the size of its duplicate filter
WLOG_PAGES = 8192
_WLOG_RECENT = 256

# Counting a block's instructions by their length bits is a data-dependent loop per block
# execution (it made unicorn ~3x slower on sha256). Instead a direct-mapped cache keyed by
# address and size gives the count, validated by a 64-bit hash of the block's bytes, so
# code rewritten by the guest or from Python is recounted. The hash reads only inside
# [address, address + size): 8-byte words (summed with a distinct odd multiplier each, so
# the products are independent and any one-word change alters the sum), a final mixed
# word ending at the block's end, or mixed halfwords for blocks shorter than 8 bytes.
_BLOCK_HOOK_IR = r"""
define internal i64 @mix(i64 %h, i64 %w) alwaysinline {
  %x = xor i64 %h, %w
  %m = mul i64 %x, -7046029254386353131
  %r = lshr i64 %m, 29
  %y = xor i64 %m, %r
  ret i64 %y
}

define void @dbt_uc_block(ptr %uc, i64 %addr, i32 %size, ptr %st) nounwind {
entry:
  %pbase = getelementptr i64, ptr %st, i64 3
  %base = load i64, ptr %pbase
  %sz = zext i32 %size to i64
  %start = add i64 %base, %addr
  %h0 = call i64 @mix(i64 %sz, i64 %addr)
  %big = icmp uge i64 %sz, 8
  br i1 %big, label %wloop, label %hloop
wloop:
  %j = phi i64 [0, %entry], [%jn, %wloop]
  %hw = phi i64 [%h0, %entry], [%hwn, %wloop]
  %wp = add i64 %start, %j
  %wptr = inttoptr i64 %wp to ptr
  %w = load i64, ptr %wptr, align 1
  %cj0 = or i64 %j, 1
  %cj = mul i64 %cj0, -7046029254386353131
  %pw = mul i64 %w, %cj
  %hwn = add i64 %hw, %pw
  %jn = add i64 %j, 8
  %jend = add i64 %jn, 8
  %wmore = icmp ule i64 %jend, %sz
  br i1 %wmore, label %wloop, label %wlast
wlast:
  %lp0 = add i64 %start, %sz
  %lp = sub i64 %lp0, 8
  %lptr = inttoptr i64 %lp to ptr
  %lw = load i64, ptr %lptr, align 1
  %hl = call i64 @mix(i64 %hwn, i64 %lw)
  br label %lookup
hloop:
  %k = phi i64 [0, %entry], [%kn, %hbody]
  %hh = phi i64 [%h0, %entry], [%hhn, %hbody]
  %hmore = icmp ult i64 %k, %sz
  br i1 %hmore, label %hbody, label %lookup
hbody:
  %hp = add i64 %start, %k
  %hptr = inttoptr i64 %hp to ptr
  %half = load i16, ptr %hptr, align 1
  %halfx = zext i16 %half to i64
  %hhn = call i64 @mix(i64 %hh, i64 %halfx)
  %kn = add i64 %k, 2
  br label %hloop
lookup:
  %h = phi i64 [%hl, %wlast], [%hh, %hloop]
  %key0 = lshr i64 %addr, 1
  %key = and i64 %key0, CACHE_MASK
  %eoff0 = mul i64 %key, 3
  %eoff = add i64 %eoff0, 8
  %pe = getelementptr i64, ptr %st, i64 %eoff
  %ea = load i64, ptr %pe
  %pesc = getelementptr i64, ptr %pe, i64 1
  %esc = load i64, ptr %pesc
  %peh = getelementptr i64, ptr %pe, i64 2
  %eh = load i64, ptr %peh
  %okaddr = icmp eq i64 %ea, %addr
  %esz = and i64 %esc, 4294967295
  %oksz = icmp eq i64 %esz, %sz
  %okh = icmp eq i64 %eh, %h
  %ok1 = and i1 %okaddr, %oksz
  %ok = and i1 %ok1, %okh
  br i1 %ok, label %hit, label %scan
hit:
  %nc = lshr i64 %esc, 32
  br label %count
scan:
  %i = phi i64 [0, %lookup], [%inext, %sbody]
  %n = phi i64 [0, %lookup], [%nnext, %sbody]
  %more = icmp ult i64 %i, %sz
  br i1 %more, label %sbody, label %fill
sbody:
  %a = add i64 %start, %i
  %ptr = inttoptr i64 %a to ptr
  %b = load i8, ptr %ptr
  %lo = and i8 %b, 3
  %is32 = icmp eq i8 %lo, 3
  %len = select i1 %is32, i64 4, i64 2
  %inext = add i64 %i, %len
  %nnext = add i64 %n, 1
  br label %scan
fill:
  store i64 %addr, ptr %pe
  %nsh = shl i64 %n, 32
  %scv = or i64 %nsh, %sz
  store i64 %scv, ptr %pesc
  store i64 %h, ptr %peh
  br label %count
count:
  %cnt = phi i64 [%nc, %hit], [%n, %fill]
  %c = load i64, ptr %st
  %c2 = add i64 %c, %cnt
  %plim = getelementptr i64, ptr %st, i64 4
  %lim = load i64, ptr %plim
  %over = icmp ugt i64 %c2, %lim
  br i1 %over, label %stop, label %ok2
ok2:
  store i64 %c2, ptr %st
  %p1 = getelementptr i64, ptr %st, i64 1
  store i64 %addr, ptr %p1
  %p2 = getelementptr i64, ptr %st, i64 2
  store i64 %sz, ptr %p2
  ret void
stop:
  %pflag = getelementptr i64, ptr %st, i64 5
  store i64 1, ptr %pflag
  %pfn = getelementptr i64, ptr %st, i64 6
  %fn = load ptr, ptr %pfn
  %r = call i32 %fn(ptr %uc)
  ret void
}

; the write log: wl = [0] entries, [1] capacity, [2] overflowed, [3] unused,
; [4 .. 4+RECENT) recently logged page + 1 (direct-mapped filter), then the entries
define internal void @log_page(ptr %wl, i64 %p) alwaysinline {
entry:
  %slot0 = and i64 %p, RECENT_MASK
  %slot = add i64 %slot0, 4
  %ps = getelementptr i64, ptr %wl, i64 %slot
  %seen = load i64, ptr %ps
  %p1 = add i64 %p, 1
  %dup = icmp eq i64 %seen, %p1
  br i1 %dup, label %done, label %add
add:
  store i64 %p1, ptr %ps
  %n = load i64, ptr %wl
  %pcap = getelementptr i64, ptr %wl, i64 1
  %cap = load i64, ptr %pcap
  %full = icmp uge i64 %n, %cap
  br i1 %full, label %over, label %put
put:
  %e0 = add i64 %n, RECENT_END
  %pe = getelementptr i64, ptr %wl, i64 %e0
  store i64 %p, ptr %pe
  %n1 = add i64 %n, 1
  store i64 %n1, ptr %wl
  br label %done
over:
  %pov = getelementptr i64, ptr %wl, i64 2
  store i64 1, ptr %pov
  br label %done
done:
  ret void
}

define void @dbt_uc_write(ptr %uc, i32 %type, i64 %addr, i32 %size, i64 %value,
                          ptr %wl) nounwind {
entry:
  %p0 = lshr i64 %addr, 12
  call void @log_page(ptr %wl, i64 %p0)
  %sz = sext i32 %size to i64
  %last0 = add i64 %addr, %sz
  %last = sub i64 %last0, 1
  %p1 = lshr i64 %last, 12
  %two = icmp ne i64 %p1, %p0
  br i1 %two, label %second, label %done
second:
  call void @log_page(ptr %wl, i64 %p1)
  br label %done
done:
  ret void
}
""".replace("CACHE_MASK", str(_CACHE_ENTRIES - 1)).replace(
    "RECENT_MASK", str(_WLOG_RECENT - 1)).replace("RECENT_END", str(4 + _WLOG_RECENT))

_native_lock = threading.Lock()
_native: dict = {}


def _native_hooks() -> tuple[int, int]:
    """Compile the block and write hooks once per process (llvmlite MCJIT, ~20 ms)."""
    with _native_lock:
        if "block" not in _native:
            import llvmlite.binding as llvm
            llvm.initialize_native_target()
            llvm.initialize_native_asmprinter()
            tm = llvm.Target.from_default_triple().create_target_machine(opt=2)
            mod = llvm.parse_assembly(_BLOCK_HOOK_IR)
            mod.triple = llvm.get_process_triple()
            mod.verify()
            pto = llvm.create_pipeline_tuning_options(speed_level=2)
            pb = llvm.create_pass_builder(tm, pto)
            pb.getModulePassManager().run(mod, pb)      # inline @mix
            ee = llvm.create_mcjit_compiler(mod, tm)
            ee.finalize_object()
            _native["ee"] = ee          # keeps the code alive for the process
            _native["block"] = ee.get_function_address("dbt_uc_block")
            _native["write"] = ee.get_function_address("dbt_uc_write")
        return _native["block"], _native["write"]


# ---- raw library calls (the Python binding costs ~20 µs per 32 registers) ------------
_HOOK_INTR = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_uint32, ctypes.c_void_p)
_HOOK_MEM_INVALID = ctypes.CFUNCTYPE(ctypes.c_bool, ctypes.c_void_p, ctypes.c_int,
                                     ctypes.c_uint64, ctypes.c_int, ctypes.c_int64,
                                     ctypes.c_void_p)
_uc_emu_start = uclib.uc_emu_start
_uc_emu_stop = uclib.uc_emu_stop
_uc_reg_read = uclib.uc_reg_read
_uc_read_batch = uclib.uc_reg_read_batch
_uc_write_batch = uclib.uc_reg_write_batch
_uc_hook_add = uclib.uc_hook_add
_uc_context_save = uclib.uc_context_save
_uc_context_restore = uclib.uc_context_restore

#: registers exchanged every run, in ``CPUState`` order: x0..x31 f0..f31 pc fflags frm
_REGS = ([R.UC_RISCV_REG_X0 + i for i in range(32)] + [R.UC_RISCV_REG_F0 + i for i in range(32)]
         + [R.UC_RISCV_REG_PC, R.UC_RISCV_REG_FFLAGS, R.UC_RISCV_REG_FRM])
_N_REGS = len(_REGS)
assert [CPUState.pc.offset, CPUState.fflags.offset, CPUState.frm.offset] == [8 * 64, 8 * 65,
                                                                           8 * 66]


@dataclass
class _ContextLayout:
    """Where unicorn's saved CPU context keeps what its register API does not expose."""

    data: int          # offset of gpr[0] from the uc_context pointer
    load_res: int      # offsets of env->load_res / env->load_val from the context pointer
    load_val: int


_layout_cache: dict = {}


def _probe_context_layout() -> _ContextLayout | None:
    """Find ``load_res``/``load_val`` in a saved context and prove that writing them
    changes what ``sc`` does. Runs once per process on a throwaway engine (~2 ms)."""
    with _native_lock:
        if "layout" in _layout_cache:
            return _layout_cache["layout"]
        layout = None
        try:
            layout = _do_probe()
        except Exception as e:          # pragma: no cover - depends on the unicorn build
            log.warning("unicorn: context probe failed (%s)", e)
        if layout is None:
            log.warning("unicorn: LR/SC reservation is not exchanged with machine.cpu "
                        "(unknown context layout)")
        _layout_cache["layout"] = layout
        return layout


def _do_probe() -> _ContextLayout | None:
    page = 0x7A5C3000
    addr, value = page + 0xA48, 0x5EED1234DEADBEEF
    x1, x2 = 0x0123456789ABCDEF, 0x7766554433221100
    lr = 0x1005B52F         # lr.d a0, (a1)
    sc = 0x18C5B62F         # sc.d a2, a2, (a1)
    uc = Uc(UC.UC_ARCH_RISCV, UC.UC_MODE_RISCV64)
    uc.mem_map(page, PAGE_SIZE, UC.UC_PROT_ALL)
    uc.mem_write(page, lr.to_bytes(4, "little") + sc.to_bytes(4, "little"))
    uc.mem_write(addr, value.to_bytes(8, "little"))
    ctx = ctypes.c_void_p()
    if uclib.uc_context_alloc(uc._uch, ctypes.byref(ctx)) != UC.UC_ERR_OK:
        return None
    try:
        size = uclib.uc_context_size(uc._uch)
        raw = (ctypes.c_uint8 * size).from_address(ctx.value)

        def find(v: int) -> list[int]:
            b = bytes(raw)
            pat = v.to_bytes(8, "little")
            out, i = [], b.find(pat)
            while i >= 0:
                out.append(i)
                i = b.find(pat, i + 1)
            return out

        uc.reg_write(R.UC_RISCV_REG_X1, x1)
        uc.reg_write(R.UC_RISCV_REG_X2, x2)
        _uc_context_save(uc._uch, ctx)
        hits = find(x1)
        if len(hits) != 1 or find(x2) != [hits[0] + 8]:
            return None
        data = hits[0] - 8
        uc.reg_write(R.UC_RISCV_REG_X11, addr)
        uc.emu_start(page, _UNTIL, 0, 1)                    # lr.d a0, (a1)
        if uc.reg_read(R.UC_RISCV_REG_X10) != value:
            return None
        uc.reg_write(R.UC_RISCV_REG_X10, 0)
        uc.reg_write(R.UC_RISCV_REG_X11, 0)
        _uc_context_save(uc._uch, ctx)
        res_hits, val_hits = find(addr), find(value)
        if len(res_hits) != 1 or len(val_hits) != 1:
            return None
        lay = _ContextLayout(data, res_hits[0], val_hits[0])
        word = lambda off: ctypes.c_uint64.from_address(ctx.value + off)  # noqa: E731

        def try_sc(res: int) -> int:
            uc.reg_write(R.UC_RISCV_REG_X11, addr)
            uc.reg_write(R.UC_RISCV_REG_X12, 7)
            _uc_context_save(uc._uch, ctx)
            word(lay.load_res).value = res
            word(lay.load_val).value = value
            _uc_context_restore(uc._uch, ctx)
            uc.emu_start(page + 4, _UNTIL, 0, 1)            # sc.d a2, a2, (a1)
            return uc.reg_read(R.UC_RISCV_REG_X12)

        if try_sc(_MAX64) != 1 or try_sc(addr) != 0:
            return None
        return lay
    finally:
        uclib.uc_context_free(ctx)


@dataclass
class UnicornStats(AccelStats):
    invalidations: int = 0        # translation ranges dropped after Python wrote code
    count_mode_runs: int = 0      # runs with a finite budget passed as uc's count
    mappings: int = 0             # map/unmap/protect events applied to unicorn
    tb_flushes: int = 0           # whole translation cache dropped (count mode switches)
    exit_requests: int = 0        # runs ended by request_exit
    write_log_overflows: int = 0  # runs whose stores overflowed the write log

    def as_dict(self) -> dict:
        d = super().as_dict()
        d.update(invalidations=self.invalidations, count_mode_runs=self.count_mode_runs,
                 mappings=self.mappings, tb_flushes=self.tb_flushes,
                 exit_requests=self.exit_requests,
                 write_log_overflows=self.write_log_overflows)
        return d


class UnicornAccel(Accelerator):
    name = "unicorn"

    def __init__(self, machine) -> None:
        super().__init__(machine)
        self.stats = UnicornStats()
        self.mem = machine.mem
        self.uc = Uc(UC.UC_ARCH_RISCV, UC.UC_MODE_RISCV64)
        self._h = self.uc._uch
        # quirks 1 and 2: FS can only be written in M-mode; then the guest runs in U-mode
        self.uc.reg_write(R.UC_RISCV_REG_PRIV, _PRIV_M)
        self.uc.reg_write(R.UC_RISCV_REG_MSTATUS, _MSTATUS_FS_INITIAL)
        if self.uc.reg_read(R.UC_RISCV_REG_MSTATUS) & 0x6000 == 0:
            raise RuntimeError("unicorn: could not enable the FPU (mstatus.FS)")
        self.uc.reg_write(R.UC_RISCV_REG_PRIV, _PRIV_U)

        # hooks: exceptions and invalid memory go to Python (rare); blocks to native code
        self._st = (ctypes.c_uint64 * _ST_WORDS)()
        self._st[_ST_BASE] = self.mem.host_base
        self._st[_ST_STOPFN] = ctypes.cast(_uc_emu_stop, ctypes.c_void_p).value
        self._event: tuple | None = None
        self._cb_intr = _HOOK_INTR(self._on_intr)
        self._cb_mem = _HOOK_MEM_INVALID(self._on_mem_invalid)
        self._hooks = []
        self._add_hook(UC.UC_HOOK_INTR, ctypes.cast(self._cb_intr, ctypes.c_void_p), None)
        self._add_hook(UC.UC_HOOK_MEM_INVALID, ctypes.cast(self._cb_mem, ctypes.c_void_p), None)
        block_fn, self._write_fn = _native_hooks()
        self._add_hook(UC.UC_HOOK_BLOCK, ctypes.c_void_p(block_fn),
                       ctypes.cast(self._st, ctypes.c_void_p))
        self._exit_req = False
        self._wlog = None               # the native write log while mem.write_log is on
        self._wlog_hook = None

        # register exchange: one batch call each way, straight into machine.cpu
        self._reg_ids = (ctypes.c_int * _N_REGS)(*_REGS)
        self._cpu_bound: CPUState | None = None
        self._ptrs_read = (ctypes.c_void_p * _N_REGS)()
        self._ptrs_write = (ctypes.c_void_p * (_N_REGS - 1))()
        self._reg_ids_write = (ctypes.c_int * (_N_REGS - 1))(*_REGS[1:])   # never x0
        self._pc_buf = ctypes.c_uint64()

        # the reservation, through the saved context (quirk: no register for it)
        self._layout = _probe_context_layout()
        self._ctx = ctypes.c_void_p()
        if self._layout is not None:
            if uclib.uc_context_alloc(self._h, ctypes.byref(self._ctx)) != UC.UC_ERR_OK:
                self._layout = None
            else:
                self._load_res = ctypes.c_uint64.from_address(
                    self._ctx.value + self._layout.load_res)
                self._load_val = ctypes.c_uint64.from_address(
                    self._ctx.value + self._layout.load_val)
        self._res_seen: tuple | None = None     # (valid, addr, val) unicorn holds
        self._count_on = False                  # unicorn's count hook is installed

        # memory: everything mapped now, then follow the machine's changes
        for start, end, prot, _name, host in self.mem.regions():
            self._on_map("map", start, end - start, prot, host)
        self.mem.map_listeners.append(self._on_map)
        self.mem.code_write_listeners.append(self._on_code_write)

    def _add_hook(self, kind: int, fn: ctypes.c_void_p, user) -> int:
        h = ctypes.c_size_t()
        err = _uc_hook_add(self._h, ctypes.byref(h), kind, fn, user, ctypes.c_uint64(1),
                           ctypes.c_uint64(0))
        if err != UC.UC_ERR_OK:
            raise UcError(err)
        self._hooks.append(h.value)
        return h.value

    # ---- the write log -----------------------------------------------------------------
    def _sync_write_log(self) -> None:
        """Log unicorn's stores (a native UC_HOOK_MEM_WRITE) exactly while the memory's
        write log is on (the difftest and migration turn it on and off)."""
        on = self.mem.write_log is not None
        if on and self._wlog_hook is None:
            self._wlog = (ctypes.c_uint64 * (4 + _WLOG_RECENT + WLOG_PAGES))()
            self._wlog[1] = WLOG_PAGES
            self._wlog_hook = self._add_hook(UC.UC_HOOK_MEM_WRITE,
                                             ctypes.c_void_p(self._write_fn),
                                             ctypes.cast(self._wlog, ctypes.c_void_p))
        elif not on and self._wlog_hook is not None:
            err = uclib.uc_hook_del(self._h, ctypes.c_size_t(self._wlog_hook))
            if err != UC.UC_ERR_OK:
                raise UcError(err)
            self._hooks.remove(self._wlog_hook)
            self._wlog_hook = self._wlog = None

    def _drain_write_log(self) -> None:
        wl, log = self._wlog, self.mem.write_log
        if wl is None or log is None:
            return
        n = wl[0]
        log.update(wl[4 + _WLOG_RECENT:4 + _WLOG_RECENT + n])
        if wl[2]:                       # overflowed: every writable page may have been
            self.stats.write_log_overflows += 1
            log.update(pn for pn, p in self.mem.pages.items() if p.prot & PROT_WRITE)
        ctypes.memset(wl, 0, 8 * (4 + _WLOG_RECENT))
        wl[1] = WLOG_PAGES

    def enable_write_log(self) -> None:
        super().enable_write_log()
        self._sync_write_log()

    def request_exit(self) -> None:
        """Make a run in progress return EXIT_BUDGET before its next block (any thread):
        the block hook's limit drops to 0, so it stops the run before counting that block."""
        self._exit_req = True
        self._st[_ST_LIMIT] = 0

    # ---- memory ----------------------------------------------------------------------
    def _overlaps(self, addr: int, size: int):
        end = addr + size
        for begin, last, _perms in list(self.uc.mem_regions()):
            lo, hi = max(begin, addr), min(last + 1, end)
            if lo < hi:
                yield lo, hi - lo

    def _on_map(self, event: str, addr: int, size: int, prot: int, host: int) -> None:
        self.stats.mappings += 1
        if event == "map":
            self.uc.mem_map_ptr(addr, size, prot, host)
        elif event == "unmap":
            for lo, n in list(self._overlaps(addr, size)):
                self.uc.mem_unmap(lo, n)
        elif event == "protect":
            for lo, n in list(self._overlaps(addr, size)):
                self.uc.mem_protect(lo, n, prot)
        if event != "unmap" and prot & PROT_EXEC:
            for pn in range(addr >> PAGE_SHIFT, (addr + size) >> PAGE_SHIFT):
                self.mem.mark_code(pn)      # so Python writes there reach _on_code_write
        self._drop_translations(addr, addr + size)

    def _on_code_write(self, pn: int) -> None:
        self.stats.invalidations += 1
        self._drop_translations(pn << PAGE_SHIFT, (pn + 1) << PAGE_SHIFT)
        self.mem.mark_code(pn)

    def _drop_translations(self, lo: int, hi: int) -> None:
        self.uc.ctl_remove_cache(lo, hi)
        # quirk 12: removing the cache fills TLB entries for the range that ignore the
        # pages' permissions; drop them
        self.uc.ctl(UC.UC_CTL_TLB_FLUSH, UC.UC_CTL_IO_WRITE)

    def invalidate_all(self) -> None:
        self.uc.ctl_flush_tb()

    # ---- hooks (called from inside uc_emu_start) -------------------------------------
    def _on_intr(self, uc, intno: int, user) -> None:
        _uc_reg_read(self._h, R.UC_RISCV_REG_PC, ctypes.byref(self._pc_buf))
        self._event = ("intr", intno, (self._pc_buf.value - 4) & _MAX64)   # quirk 3
        _uc_emu_stop(self._h)

    def _on_mem_invalid(self, uc, access: int, addr: int, size: int, value: int,
                        user) -> bool:
        if self._event is None:      # quirk 11: a split store calls once per bad byte
            self._event = ("mem", access, addr & _MAX64)
        return False

    # ---- state exchange --------------------------------------------------------------
    def _bind(self, cpu: CPUState) -> None:
        base = ctypes.addressof(cpu)
        for i in range(_N_REGS):
            self._ptrs_read[i] = base + 8 * i
        for i in range(_N_REGS - 1):
            self._ptrs_write[i] = base + 8 * (i + 1)
        self._cpu_bound = cpu

    def _import(self, cpu: CPUState) -> None:
        if self._layout is not None:
            res = (cpu.res_valid != 0, cpu.res_addr, cpu.res_val)
            if res != self._res_seen:
                _uc_context_save(self._h, self._ctx)
                self._load_res.value = cpu.res_addr if res[0] else _MAX64
                self._load_val.value = cpu.res_val
                _uc_context_restore(self._h, self._ctx)
        cpu.fflags &= 0x1F
        cpu.frm &= 7
        err = _uc_write_batch(self._h, self._reg_ids_write, self._ptrs_write, _N_REGS - 1)
        if err != UC.UC_ERR_OK:
            raise UcError(err)

    def _export(self, cpu: CPUState, pc: int | None) -> None:
        err = _uc_read_batch(self._h, self._reg_ids, self._ptrs_read, _N_REGS)
        if err != UC.UC_ERR_OK:
            raise UcError(err)
        if pc is not None:
            cpu.pc = pc
        if self._layout is not None:
            _uc_context_save(self._h, self._ctx)
            load_res = self._load_res.value
            if load_res != _MAX64:
                cpu.res_valid, cpu.res_addr = 1, load_res
            else:
                cpu.res_valid = 0
            cpu.res_val = self._load_val.value
            self._res_seen = (cpu.res_valid != 0, cpu.res_addr, cpu.res_val)

    # ---- execution -------------------------------------------------------------------
    def _insns_between(self, start: int, end: int) -> int:
        """Instructions in [start, end) by their length bits (as the block hook counts)."""
        code = self.mem.peek(start, end - start)
        n = i = 0
        while i < len(code):
            i += 4 if code[i] & 3 == 3 else 2
            n += 1
        return n

    def _word_at(self, pc: int) -> int:
        lo = int.from_bytes(self.mem.peek(pc, 2), "little")
        return lo if lo & 3 != 3 else int.from_bytes(self.mem.peek(pc, 4), "little")

    def _executed(self, fault_pc: int) -> int:
        """Instructions retired when the instruction at fault_pc did not: the block hook
        counted the whole block it is in."""
        st = self._st
        n = st[_ST_COUNT]
        start, size = st[_ST_ADDR], st[_ST_SIZE]
        if start <= fault_pc < start + size:
            n -= self._insns_between(fault_pc, start + size)
        return n

    def _start(self, pc: int, count: int) -> int:
        if count and not self._count_on:
            # quirk 10: uc_emu_start installs its counting hook without dropping the
            # blocks translated without it, which would run uncounted: drop them
            self.uc.ctl_flush_tb()
            self.stats.tb_flushes += 1
        elif not count and self._count_on:
            self.stats.tb_flushes += 1          # unicorn flushes itself on the way out
        self._count_on = bool(count)
        self._event = None
        return _uc_emu_start(self._h, pc, _UNTIL, 0, count)

    def run(self, budget: int) -> Exit:
        self.stats.runs += 1
        cpu = self.machine.cpu
        if cpu is not self._cpu_bound:
            self._bind(cpu)
        if budget <= 0 or cpu.pc & 1:                 # quirk 14
            ex = Exit(EXIT_BUDGET, 0) if budget <= 0 else \
                Exit(EXIT_FAULT, 0, fault_kind=FAULT_FETCH_MISALIGNED, fault_addr=cpu.pc)
            self.stats.exits[ex.name] += 1
            return ex
        self._import(cpu)
        self._sync_write_log()
        st = self._st
        st[_ST_COUNT] = st[_ST_ADDR] = st[_ST_SIZE] = st[_ST_STOPPED] = 0
        self._exit_req = False
        pc = cpu.pc
        done = 0           # instructions retired by earlier emu_start calls in this run
        if budget < COUNT_MODE_BUDGET:
            self.stats.count_mode_runs += 1
            st[_ST_LIMIT] = _MAX64
            err = self._start(pc, budget)
            counted = budget
        else:
            st[_ST_LIMIT] = budget
            err = self._start(pc, 0)
            counted = None
            if err == UC.UC_ERR_OK and self._event is None and st[_ST_STOPPED] and \
                    not self._exit_req:
                # the next block would pass the budget: finish exactly with count
                done = st[_ST_COUNT]
                left = budget - done
                if left == 0:                      # count 0 would mean "no limit"
                    self._export(cpu, None)
                    self._drain_write_log()
                    ex = Exit(EXIT_BUDGET, budget)
                    self.stats.exits[ex.name] += 1
                    return ex
                st[_ST_COUNT] = st[_ST_ADDR] = st[_ST_SIZE] = st[_ST_STOPPED] = 0
                st[_ST_LIMIT] = _MAX64
                _uc_reg_read(self._h, R.UC_RISCV_REG_PC, ctypes.byref(self._pc_buf))
                err = self._start(self._pc_buf.value, left)
                counted = left
        ex = self._classify(err, counted, done)
        self._drain_write_log()
        self.stats.exits[ex.name] += 1
        return ex

    def _classify(self, err: int, counted: int | None, done: int) -> Exit:
        cpu = self.machine.cpu
        ev = self._event
        if ev is None:
            if err == UC.UC_ERR_OK:
                self._export(cpu, None)
                if self._st[_ST_STOPPED]:             # request_exit: before a whole block
                    self.stats.exit_requests += 1
                    return Exit(EXIT_BUDGET, done + self._st[_ST_COUNT])
                if counted is None:
                    raise RuntimeError("unicorn stopped with no reason")
                return Exit(EXIT_BUDGET, done + counted)
            if err == UC.UC_ERR_INSN_INVALID:              # quirk 5: ebreak
                _uc_reg_read(self._h, R.UC_RISCV_REG_PC, ctypes.byref(self._pc_buf))
                pc = self._pc_buf.value
                word = self._word_at(pc)
                n = done + self._executed(pc)
                self._export(cpu, pc)
                if decode(word).mnemonic in ("ebreak", "c.ebreak"):
                    return Exit(EXIT_EBREAK, n)
                return Exit(EXIT_ILLEGAL, n, word=word)
            raise RuntimeError(f"unicorn: emu_start failed: {UcError(err)}")
        if ev[0] == "mem":                                    # quirk 6
            _, access, addr = ev
            # quirk 13: a refused load leaves a TLB entry that lets the next one through
            self.uc.ctl(UC.UC_CTL_TLB_FLUSH, UC.UC_CTL_IO_WRITE)
            _uc_reg_read(self._h, R.UC_RISCV_REG_PC, ctypes.byref(self._pc_buf))
            pc = self._pc_buf.value
            n = done + self._executed(pc)
            self._export(cpu, pc)
            kind = _MEM_FAULT_KIND[access]
            if kind != FAULT_FETCH:
                insn = decode(self._word_at(pc))
                if kind == FAULT_LOAD and insn.name.startswith(("amo", "sc.")):
                    kind = FAULT_STORE                    # quirk 9: the AMO's read half
            return Exit(EXIT_FAULT, n, fault_kind=kind, fault_addr=addr)
        _, cause, pc = ev
        n = done + self._executed(pc)
        self._export(cpu, pc)
        if cause == _CAUSE_ECALL:
            return Exit(EXIT_ECALL, n)
        if cause == _CAUSE_ILLEGAL:
            return Exit(EXIT_ILLEGAL, n, word=self._word_at(pc))
        if cause in (_CAUSE_LOAD_MISALIGNED, _CAUSE_STORE_MISALIGNED):   # quirk 7
            insn = decode(self._word_at(pc))
            return Exit(EXIT_FAULT, n, fault_kind=FAULT_MISALIGNED,
                        fault_addr=cpu.x[insn.rs1] if insn.rs1 else 0)
        raise RuntimeError(f"unicorn: unexpected exception cause {cause} at pc {pc:#x}")

    def close(self) -> None:
        for lst, fn in ((self.mem.map_listeners, self._on_map),
                        (self.mem.code_write_listeners, self._on_code_write)):
            if fn in lst:
                lst.remove(fn)
        if self._ctx.value:
            uclib.uc_context_free(self._ctx)
            self._ctx = ctypes.c_void_p()
        self.uc = None
