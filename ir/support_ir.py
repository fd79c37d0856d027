"""The support module: native code every translated block relies on, compiled once per JIT
engine and reached only through function pointers in the environment (so block code holds
no addresses):

* ``dbt_enter`` — the dispatcher loop: look the guest pc up in the jump cache, call the
  block, repeat while blocks return EXIT_LOOKUP. It owns the host FP environment (MXCSR
  carries the guest rounding mode and accrues the guest's exception flags while guest code
  runs, and is restored before returning to Python) and the ``sigsetjmp`` that a host fault
  in translated code returns to (``dbtlab.ir.hostfault``);
* one stub per exit code (``dbt_exit_N``): every way out of a block is a tail call, so a
  block has a single ``musttail`` site;
* fflags / frm accessors and the static-rounding-mode switch.
"""

from __future__ import annotations

import re

from dbtlab.ir.env import JC_BITS, JC_OFF, JMPBUF_OFF, PROF_EDGE_BITS
from dbtlab.ir.state import EXIT_HOSTFAULT, EXIT_LOOKUP, EXIT_MISS, NUM_EXITS, offset

# RISC-V rm -> x86 MXCSR.RC, as a nibble table indexed by rm (RNE 0, RTZ 3, RDN 1, RUP 2)
RC_TABLE = 0x2130
MXCSR_DEFAULT = 0x1F80

SUPPORT_IR = r"""
declare void @llvm.x86.sse.ldmxcsr(ptr)
declare void @llvm.x86.sse.stmxcsr(ptr)
declare i32 @__sigsetjmp(ptr, i32) returns_twice

define internal i32 @mxcsr_read() alwaysinline {
  %p = alloca i32
  call void @llvm.x86.sse.stmxcsr(ptr %p)
  %m = load i32, ptr %p
  ret i32 %m
}

define internal void @mxcsr_write(i32 %m) alwaysinline {
  %p = alloca i32
  store i32 %m, ptr %p
  call void @llvm.x86.sse.ldmxcsr(ptr %p)
  ret void
}

@FLAGS_FN@
define internal i32 @rc_of(i64 %rm) alwaysinline {
  %s = shl i64 %rm, 2
  %t = lshr i64 @RC_TABLE@, %s
  %rc = and i64 %t, 3
  %rc32 = trunc i64 %rc to i32
  %f = shl i32 %rc32, 13
  ret i32 %f
}

; fold the host's accrued flags into st.fflags and clear them in MXCSR
define internal void @flags_sync(ptr %st) alwaysinline {
  %m = call i32 @mxcsr_read()
  %fl = call i64 @dbt_flags_x86_to_rv(i32 %m)
  %fp = getelementptr i8, ptr %st, i64 @OFF_FFLAGS@
  %old = load i64, ptr %fp
  %new = or i64 %old, %fl
  store i64 %new, ptr %fp
  %clr = and i32 %m, -64
  call void @mxcsr_write(i32 %clr)
  ret void
}

define i64 @dbt_get_fflags(ptr %st) {
  call void @flags_sync(ptr %st)
  %fp = getelementptr i8, ptr %st, i64 @OFF_FFLAGS@
  %v = load i64, ptr %fp
  ret i64 %v
}

define void @dbt_set_fflags(ptr %st, i64 %v) {
  call void @flags_sync(ptr %st)
  %fp = getelementptr i8, ptr %st, i64 @OFF_FFLAGS@
  %w = and i64 %v, 31
  store i64 %w, ptr %fp
  ret void
}

define void @dbt_set_frm(ptr %st, i64 %v) {
  %fp = getelementptr i8, ptr %st, i64 @OFF_FRM@
  %w = and i64 %v, 7
  store i64 %w, ptr %fp
  %m = call i32 @mxcsr_read()
  %k = and i32 %m, -24577
  %rc = call i32 @rc_of(i64 %w)
  %n = or i32 %k, %rc
  call void @mxcsr_write(i32 %n)
  ret void
}

; switch to a static rounding mode for one operation; returns the MXCSR to restore
define i32 @dbt_rm_push(i64 %rm) {
  %m = call i32 @mxcsr_read()
  %k = and i32 %m, -24577
  %rc = call i32 @rc_of(i64 %rm)
  %n = or i32 %k, %rc
  call void @mxcsr_write(i32 %n)
  ret i32 %m
}

; restore the rounding mode, keeping the flags the operation raised
define void @dbt_rm_pop(i32 %saved) {
  %m = call i32 @mxcsr_read()
  %fl = and i32 %m, 63
  %k = and i32 %saved, -64
  %n = or i32 %k, %fl
  call void @mxcsr_write(i32 %n)
  ret void
}

; profiling: count a dynamic transition prev -> cur in the open-addressing edge table
; (key = prev | cur << 32, never 0 since block ids start at 1); clears st.prof_last
define void @dbt_prof_edge(ptr %st, i64 %prev, i64 %cur) {
entry:
  %lp = getelementptr i8, ptr %st, i64 @OFF_PROF_LAST@
  store i64 0, ptr %lp
  %tp = getelementptr i8, ptr %st, i64 @OFF_PROF_EDGES@
  %tab = load ptr, ptr %tp
  %c32 = shl i64 %cur, 32
  %key = or i64 %prev, %c32
  %h0 = mul i64 %key, -7046029254386353131
  %h1 = lshr i64 %h0, 40
  br label %probe
probe:
  %i = phi i64 [ %h1, %entry ], [ %inext, %next ]
  %n = phi i64 [ 0, %entry ], [ %n2, %next ]
  %idx = and i64 %i, @EDGE_MASK@
  %eo = shl i64 %idx, 4
  %ep = getelementptr i8, ptr %tab, i64 %eo
  %k = load i64, ptr %ep
  %same = icmp eq i64 %k, %key
  br i1 %same, label %bump, label %empty
empty:
  %free = icmp eq i64 %k, 0
  br i1 %free, label %claim, label %next
claim:
  store i64 %key, ptr %ep
  br label %bump
bump:
  %cp = getelementptr i8, ptr %ep, i64 8
  %c = load i64, ptr %cp
  %c1 = add i64 %c, 1
  store i64 %c1, ptr %cp
  ret void
next:
  %inext = add i64 %i, 1
  %n2 = add i64 %n, 1
  %full = icmp ugt i64 %n2, @EDGE_MASK@
  br i1 %full, label %drop, label %probe
drop:
  ret void
}

@EXIT_STUBS@

; The dispatcher. Runs `first` (if not null) and then blocks found in the jump cache,
; until a block returns anything but EXIT_LOOKUP or the jump cache misses. A host fault
; in translated code comes back here through siglongjmp and returns EXIT_HOSTFAULT.
define i64 @dbt_enter(ptr %st, ptr %first) {
entry:
  %jb = getelementptr i8, ptr %st, i64 @JMPBUF_OFF@
  %j = call i32 @__sigsetjmp(ptr %jb, i32 1) returns_twice
  %faulted = icmp ne i32 %j, 0
  br i1 %faulted, label %out, label %start
start:
  %frmp = getelementptr i8, ptr %st, i64 @OFF_FRM@
  %frm = load i64, ptr %frmp
  %rc = call i32 @rc_of(i64 %frm)
  %m0 = or i32 %rc, @MXCSR_DEFAULT@
  call void @mxcsr_write(i32 %m0)
  %pcp = getelementptr i8, ptr %st, i64 @OFF_PC@
  %hasfirst = icmp ne ptr %first, null
  br i1 %hasfirst, label %callfirst, label %loop
callfirst:
  %r0 = call preserve_nonecc i64 %first(ptr %st)
  br label %check
loop:
  %pc = load i64, ptr %pcp
  %h = lshr i64 %pc, 1
  %idx = and i64 %h, @JC_MASK@
  %eo = shl i64 %idx, 4
  %o = add i64 %eo, @JC_OFF@
  %ep = getelementptr i8, ptr %st, i64 %o
  %epc = load i64, ptr %ep
  ; an odd pc (only ever set from outside) matches no block, not even the odd marker of
  ; an empty entry: it misses, and the runtime reports the misaligned fetch
  %odd = and i64 %pc, 1
  %even = icmp eq i64 %odd, 0
  %same = icmp eq i64 %epc, %pc
  %hit = and i1 %same, %even
  br i1 %hit, label %go, label %out
go:
  %fp = getelementptr i8, ptr %ep, i64 8
  %fn = load ptr, ptr %fp
  %r1 = call preserve_nonecc i64 %fn(ptr %st)
  br label %check
check:
  %r = phi i64 [ %r0, %callfirst ], [ %r1, %go ]
  %again = icmp eq i64 %r, @EXIT_LOOKUP@
  br i1 %again, label %loop, label %out
out:
  %res = phi i64 [ %r, %check ], [ @EXIT_MISS@, %loop ], [ @EXIT_HOSTFAULT@, %entry ]
  call void @flags_sync(ptr %st)
  call void @mxcsr_write(i32 @MXCSR_DEFAULT@)
  ret i64 %res
}
"""


FLAGS_X86_TO_RV = """; x86 exception flags (IE DE ZE OE UE PE) -> RISC-V fflags (NV DZ OF UF NX)
define @LINKAGE@ i64 @@NAME@(i32 %m) alwaysinline {
  %m64 = zext i32 %m to i64
  %ie = and i64 %m64, 1
  %nv = shl i64 %ie, 4
  %ze = and i64 %m64, 4
  %dz = shl i64 %ze, 1
  %oe = and i64 %m64, 8
  %of = lshr i64 %oe, 1
  %ue = and i64 %m64, 16
  %uf = lshr i64 %ue, 3
  %pe = and i64 %m64, 32
  %nx = lshr i64 %pe, 5
  %a = or i64 %nv, %dz
  %b = or i64 %a, %of
  %c = or i64 %b, %uf
  %d = or i64 %c, %nx
  ret i64 %d
}
"""


def flags_x86_to_rv(name: str, linkage: str = "") -> str:
    """The IR of the MXCSR-to-fflags conversion (the signal handler needs its own copy,
    in its own module)."""
    return FLAGS_X86_TO_RV.replace("@@NAME@", "@" + name).replace("@LINKAGE@", linkage)


def support_ir() -> str:
    stubs = "\n".join(f"define preserve_nonecc i64 @dbt_exit_{n}(ptr %st) {{\n  ret i64 {n}\n}}"
                      for n in range(NUM_EXITS))
    subst = {
        "RC_TABLE": RC_TABLE, "MXCSR_DEFAULT": MXCSR_DEFAULT,
        "OFF_FFLAGS": offset("fflags"), "OFF_FRM": offset("frm"), "OFF_PC": offset("pc"),
        "JMPBUF_OFF": JMPBUF_OFF, "JC_MASK": (1 << JC_BITS) - 1, "JC_OFF": JC_OFF,
        "EXIT_LOOKUP": EXIT_LOOKUP, "EXIT_MISS": EXIT_MISS, "EXIT_HOSTFAULT": EXIT_HOSTFAULT,
        "EXIT_STUBS": stubs, "OFF_PROF_LAST": offset("prof_last"),
        "FLAGS_FN": flags_x86_to_rv("dbt_flags_x86_to_rv"),
        "OFF_PROF_EDGES": offset("prof_edges"), "EDGE_MASK": (1 << PROF_EDGE_BITS) - 1,
    }
    text = SUPPORT_IR
    for k, v in subst.items():
        text = text.replace(f"@{k}@", str(v))
    left = re.findall(r"@[A-Z_]+@", text)
    assert not left, f"unsubstituted placeholders {left}"
    return text
