"""The support module: native code every translated block links against.

Written in LLVM IR (there is no C compiler at run time) and compiled once per JIT engine:

* ``dbt_enter``  — the dispatcher loop: look the guest pc up in the jump cache, call the
  block, repeat while blocks return EXIT_LOOKUP; owns the host FP environment (MXCSR holds
  the guest rounding mode and accrues the guest's exception flags while guest code runs,
  and is restored before returning to Python);
* ``dbt_pte``    — walk the guest page table;
* ``dbt_ld`` / ``dbt_st`` / ``dbt_cmpxchg`` — memory slow paths: TLB refill, misaligned
  and page-crossing accesses, faults (status 1) and stores to translated code (status 2);
* fflags / frm accessors and the static-rounding-mode switch.
"""

from __future__ import annotations

import re

from dbtlab.ir.env import JC_BITS, JC_OFF, TLB_BITS, TLB_R_OFF, TLB_W_OFF
from dbtlab.ir.state import (EXIT_LOOKUP, EXIT_MISS, FAULT_LOAD, FAULT_STORE, offset)
from dbtlab.runtime.memory import ADDR_BITS, L2_BITS, PROT_CODE, PROT_READ, PROT_WRITE

# RISC-V rm -> x86 MXCSR.RC, as a nibble table indexed by rm (RNE 0, RTZ 3, RDN 1, RUP 2)
RC_TABLE = 0x2130
MXCSR_DEFAULT = 0x1F80

SUPPORT_IR = r"""
declare void @llvm.x86.sse.ldmxcsr(ptr)
declare void @llvm.x86.sse.stmxcsr(ptr)

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

; x86 exception flags (IE DE ZE OE UE PE) -> RISC-V fflags (NV DZ OF UF NX)
define internal i64 @flags_x86_to_rv(i32 %m) alwaysinline {
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
  %fl = call i64 @flags_x86_to_rv(i32 %m)
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

; page-table entry of a guest address (0: unmapped or outside the address space)
define i64 @dbt_pte(ptr %st, i64 %a) {
entry:
  %hi = lshr i64 %a, @ADDR_BITS@
  %inrange = icmp eq i64 %hi, 0
  br i1 %inrange, label %walk, label %none
walk:
  %ptp = getelementptr i8, ptr %st, i64 @OFF_PT@
  %l1 = load ptr, ptr %ptp
  %pn = lshr i64 %a, 12
  %i1 = lshr i64 %pn, @L2_BITS@
  %l1e = getelementptr i64, ptr %l1, i64 %i1
  %l2 = load ptr, ptr %l1e
  %has = icmp ne ptr %l2, null
  br i1 %has, label %leaf, label %none
leaf:
  %i2 = and i64 %pn, @L2_MASK@
  %l2e = getelementptr i64, ptr %l2, i64 %i2
  %e = load i64, ptr %l2e
  ret i64 %e
none:
  ret i64 0
}

define internal void @tlb_fill(ptr %st, i64 %tlboff, i64 %a, i64 %e) alwaysinline {
  %pg = and i64 %a, -4096
  %pn = lshr i64 %a, 12
  %idx = and i64 %pn, @TLB_MASK@
  %eo = shl i64 %idx, 4
  %o = add i64 %eo, %tlboff
  %ep = getelementptr i8, ptr %st, i64 %o
  %hp = and i64 %e, -4096
  %add = sub i64 %hp, %pg
  %ap = getelementptr i8, ptr %ep, i64 8
  store i64 %add, ptr %ap
  store i64 %pg, ptr %ep
  ret void
}

define internal void @set_fault(ptr %st, i64 %kind, i64 %a) alwaysinline {
  %kp = getelementptr i8, ptr %st, i64 @OFF_FKIND@
  store i64 %kind, ptr %kp
  %ap = getelementptr i8, ptr %st, i64 @OFF_FADDR@
  store i64 %a, ptr %ap
  ret void
}

define internal ptr @host_of(i64 %e, i64 %a) alwaysinline {
  %hp = and i64 %e, -4096
  %off = and i64 %a, 4095
  %h = add i64 %hp, %off
  %p = inttoptr i64 %h to ptr
  ret ptr %p
}

; load slow path: returns {zero-extended value, status}
define { i64, i64 } @dbt_ld(ptr %st, i64 %a, i64 %size) {
entry:
  %off = and i64 %a, 4095
  %end = add i64 %off, %size
  %cross = icmp ugt i64 %end, 4096
  br i1 %cross, label %bytes, label %single
single:
  %e = call i64 @dbt_pte(ptr %st, i64 %a)
  %r = and i64 %e, @PROT_READ@
  %ok = icmp ne i64 %r, 0
  br i1 %ok, label %hit, label %fault1
hit:
  call void @tlb_fill(ptr %st, i64 @TLB_R_OFF@, i64 %a, i64 %e)
  %hp = call ptr @host_of(i64 %e, i64 %a)
  switch i64 %size, label %s8 [ i64 1, label %s1
                                i64 2, label %s2
                                i64 4, label %s4 ]
s1:
  %v1 = load i8, ptr %hp, align 1
  %w1 = zext i8 %v1 to i64
  br label %done
s2:
  %v2 = load i16, ptr %hp, align 1
  %w2 = zext i16 %v2 to i64
  br label %done
s4:
  %v4 = load i32, ptr %hp, align 1
  %w4 = zext i32 %v4 to i64
  br label %done
s8:
  %w8 = load i64, ptr %hp, align 1
  br label %done
done:
  %v = phi i64 [ %w1, %s1 ], [ %w2, %s2 ], [ %w4, %s4 ], [ %w8, %s8 ]
  %res0 = insertvalue { i64, i64 } undef, i64 %v, 0
  %res = insertvalue { i64, i64 } %res0, i64 0, 1
  ret { i64, i64 } %res
fault1:
  br label %fault
bytes:
  br label %bloop
bloop:
  %i = phi i64 [ 0, %bytes ], [ %i2, %bnext ]
  %acc = phi i64 [ 0, %bytes ], [ %acc2, %bnext ]
  %ai = add i64 %a, %i
  %ei = call i64 @dbt_pte(ptr %st, i64 %ai)
  %ri = and i64 %ei, @PROT_READ@
  %oki = icmp ne i64 %ri, 0
  br i1 %oki, label %bnext, label %bfault
bnext:
  %hpi = call ptr @host_of(i64 %ei, i64 %ai)
  %byte = load i8, ptr %hpi
  %b64 = zext i8 %byte to i64
  %sh = shl i64 %i, 3
  %bs = shl i64 %b64, %sh
  %acc2 = or i64 %acc, %bs
  %i2 = add i64 %i, 1
  %more = icmp ult i64 %i2, %size
  br i1 %more, label %bloop, label %bdone
bdone:
  %rb0 = insertvalue { i64, i64 } undef, i64 %acc2, 0
  %rb = insertvalue { i64, i64 } %rb0, i64 0, 1
  ret { i64, i64 } %rb
bfault:
  br label %fault
fault:
  %fa = phi i64 [ %a, %fault1 ], [ %ai, %bfault ]
  call void @set_fault(ptr %st, i64 @FAULT_LOAD@, i64 %fa)
  ret { i64, i64 } { i64 0, i64 1 }
}

; store slow path: status 0 done, 1 fault (nothing written), 2 the range holds
; translated code (nothing written: the runtime invalidates, then re-executes)
define i64 @dbt_st(ptr %st, i64 %a, i64 %val, i64 %size) {
entry:
  br label %check
check:
  %i = phi i64 [ 0, %entry ], [ %inext, %cnext ]
  %code = phi i64 [ 0, %entry ], [ %code2, %cnext ]
  %ai = add i64 %a, %i
  %ei = call i64 @dbt_pte(ptr %st, i64 %ai)
  %wi = and i64 %ei, @PROT_WRITE@
  %oki = icmp ne i64 %wi, 0
  br i1 %oki, label %cnext, label %fault
cnext:
  %ci = and i64 %ei, @PROT_CODE@
  %code2 = or i64 %code, %ci
  ; next byte to check: the start of the next page, or done
  %pgend = or i64 %ai, 4095
  %nexta = add i64 %pgend, 1
  %inext = sub i64 %nexta, %a
  %more = icmp ult i64 %inext, %size
  br i1 %more, label %check, label %checked
checked:
  %iscode = icmp ne i64 %code2, 0
  br i1 %iscode, label %smc, label %write
smc:
  %ap = getelementptr i8, ptr %st, i64 @OFF_FADDR@
  store i64 %a, ptr %ap
  %sp = getelementptr i8, ptr %st, i64 @OFF_AUX@
  store i64 %size, ptr %sp
  ret i64 2
write:
  %off = and i64 %a, 4095
  %end = add i64 %off, %size
  %cross = icmp ugt i64 %end, 4096
  br i1 %cross, label %wbytes, label %wsingle
wsingle:
  %e = call i64 @dbt_pte(ptr %st, i64 %a)
  call void @tlb_fill(ptr %st, i64 @TLB_W_OFF@, i64 %a, i64 %e)
  %hp = call ptr @host_of(i64 %e, i64 %a)
  switch i64 %size, label %s8 [ i64 1, label %s1
                                i64 2, label %s2
                                i64 4, label %s4 ]
s1:
  %v1 = trunc i64 %val to i8
  store i8 %v1, ptr %hp, align 1
  ret i64 0
s2:
  %v2 = trunc i64 %val to i16
  store i16 %v2, ptr %hp, align 1
  ret i64 0
s4:
  %v4 = trunc i64 %val to i32
  store i32 %v4, ptr %hp, align 1
  ret i64 0
s8:
  store i64 %val, ptr %hp, align 1
  ret i64 0
wbytes:
  br label %wloop
wloop:
  %j = phi i64 [ 0, %wbytes ], [ %j2, %wloop ]
  %aj = add i64 %a, %j
  %ej = call i64 @dbt_pte(ptr %st, i64 %aj)
  %hpj = call ptr @host_of(i64 %ej, i64 %aj)
  %sh = shl i64 %j, 3
  %vs = lshr i64 %val, %sh
  %vb = trunc i64 %vs to i8
  store i8 %vb, ptr %hpj
  %j2 = add i64 %j, 1
  %wmore = icmp ult i64 %j2, %size
  br i1 %wmore, label %wloop, label %wdone
wdone:
  ret i64 0
fault:
  call void @set_fault(ptr %st, i64 @FAULT_STORE@, i64 %ai)
  ret i64 1
}

; compare-and-exchange for sc: {stored?, status}; the address is aligned
define { i64, i64 } @dbt_cmpxchg(ptr %st, i64 %a, i64 %expected, i64 %new, i64 %size) {
entry:
  %e = call i64 @dbt_pte(ptr %st, i64 %a)
  %w = and i64 %e, @PROT_WRITE@
  %ok = icmp ne i64 %w, 0
  br i1 %ok, label %mapped, label %fault
mapped:
  %c = and i64 %e, @PROT_CODE@
  %iscode = icmp ne i64 %c, 0
  br i1 %iscode, label %smc, label %go
smc:
  %ap = getelementptr i8, ptr %st, i64 @OFF_FADDR@
  store i64 %a, ptr %ap
  %sp = getelementptr i8, ptr %st, i64 @OFF_AUX@
  store i64 %size, ptr %sp
  ret { i64, i64 } { i64 0, i64 2 }
go:
  %hp = call ptr @host_of(i64 %e, i64 %a)
  %is4 = icmp eq i64 %size, 4
  br i1 %is4, label %w4, label %w8
w4:
  %cur4 = load i32, ptr %hp, align 4
  %exp4 = trunc i64 %expected to i32
  %eq4 = icmp eq i32 %cur4, %exp4
  br i1 %eq4, label %do4, label %fail
do4:
  %n4 = trunc i64 %new to i32
  store i32 %n4, ptr %hp, align 4
  br label %success
w8:
  %cur8 = load i64, ptr %hp, align 8
  %eq8 = icmp eq i64 %cur8, %expected
  br i1 %eq8, label %do8, label %fail
do8:
  store i64 %new, ptr %hp, align 8
  br label %success
success:
  ret { i64, i64 } { i64 1, i64 0 }
fail:
  ret { i64, i64 } { i64 0, i64 0 }
fault:
  call void @set_fault(ptr %st, i64 @FAULT_STORE@, i64 %a)
  ret { i64, i64 } { i64 0, i64 1 }
}

; The dispatcher. Runs `first` (if not null) and then blocks found in the jump cache,
; until a block returns anything but EXIT_LOOKUP or the jump cache misses.
define i64 @dbt_enter(ptr %st, ptr %first) {
entry:
  %frmp = getelementptr i8, ptr %st, i64 @OFF_FRM@
  %frm = load i64, ptr %frmp
  %rc = call i32 @rc_of(i64 %frm)
  %m0 = or i32 %rc, @MXCSR_DEFAULT@
  call void @mxcsr_write(i32 %m0)
  %pcp = getelementptr i8, ptr %st, i64 @OFF_PC@
  %hasfirst = icmp ne ptr %first, null
  br i1 %hasfirst, label %callfirst, label %loop
callfirst:
  %r0 = call i64 %first(ptr %st)
  br label %check
loop:
  %pc = load i64, ptr %pcp
  %h = lshr i64 %pc, 1
  %idx = and i64 %h, @JC_MASK@
  %eo = shl i64 %idx, 4
  %o = add i64 %eo, @JC_OFF@
  %ep = getelementptr i8, ptr %st, i64 %o
  %epc = load i64, ptr %ep
  %hit = icmp eq i64 %epc, %pc
  br i1 %hit, label %go, label %out
go:
  %fp = getelementptr i8, ptr %ep, i64 8
  %fn = load ptr, ptr %fp
  %r1 = call i64 %fn(ptr %st)
  br label %check
check:
  %r = phi i64 [ %r0, %callfirst ], [ %r1, %go ]
  %again = icmp eq i64 %r, @EXIT_LOOKUP@
  br i1 %again, label %loop, label %out
out:
  %res = phi i64 [ %r, %check ], [ @EXIT_MISS@, %loop ]
  call void @flags_sync(ptr %st)
  call void @mxcsr_write(i32 @MXCSR_DEFAULT@)
  ret i64 %res
}
"""


def support_ir() -> str:
    subst = {
        "RC_TABLE": RC_TABLE, "MXCSR_DEFAULT": MXCSR_DEFAULT,
        "OFF_FFLAGS": offset("fflags"), "OFF_FRM": offset("frm"), "OFF_PC": offset("pc"),
        "OFF_PT": offset("page_table"), "OFF_FKIND": offset("fault_kind"),
        "OFF_FADDR": offset("fault_addr"), "OFF_AUX": offset("exit_aux"),
        "ADDR_BITS": ADDR_BITS, "L2_BITS": L2_BITS, "L2_MASK": (1 << L2_BITS) - 1,
        "TLB_MASK": (1 << TLB_BITS) - 1, "TLB_R_OFF": TLB_R_OFF, "TLB_W_OFF": TLB_W_OFF,
        "JC_MASK": (1 << JC_BITS) - 1, "JC_OFF": JC_OFF,
        "PROT_READ": PROT_READ, "PROT_WRITE": PROT_WRITE, "PROT_CODE": PROT_CODE,
        "FAULT_LOAD": FAULT_LOAD, "FAULT_STORE": FAULT_STORE,
        "EXIT_LOOKUP": EXIT_LOOKUP, "EXIT_MISS": EXIT_MISS,
    }
    text = SUPPORT_IR
    for k, v in subst.items():
        text = text.replace(f"@{k}@", str(v))
    left = re.findall(r"@[A-Z_]+@", text)
    assert not left, f"unsubstituted placeholders {left}"
    return text
