/* Hand-picked instructions for the disassembler golden files: one of each alias rule and
   instruction class that compilers rarely emit. Never executed. */
static void __attribute__((noinline, used)) zoo(void)
{
    __asm__ volatile(
        /* CSR aliases */
        "frflags a0\n fsflags a1\n fsflags a2, a3\n frrm a4\n fsrm a5\n fsrm a0, a1\n"
        "frcsr a2\n fscsr a3\n fscsr a4, a5\n fsrmi 1\n fsflagsi a0, 7\n"
        "rdcycle a0\n rdtime a1\n rdinstret a2\n csrr a3, mstatus\n csrw sscratch, a4\n"
        "csrs fflags, a5\n csrc frm, a0\n csrwi fcsr, 3\n csrsi fflags, 5\n csrci frm, 1\n"
        "csrrw a0, fcsr, a1\n csrrs a0, 0x7c0, a1\n csrrc a0, cycle, a1\n"
        "csrrwi a0, 0x801, 4\n csrrsi a0, fcsr, 6\n csrrci a0, time, 2\n"
        /* ordering */
        "fence\n fence r, rw\n fence w, w\n fence iorw, ow\n fence.tso\n"
        /* atomics with every ordering */
        "lr.w a0, (a1)\n lr.d.aq a0, (a1)\n sc.w.rl a2, a3, (a1)\n sc.d.aqrl a2, a3, (a1)\n"
        "amoswap.w a0, a1, (a2)\n amoadd.d.aq a0, a1, (a2)\n amoxor.w.rl a0, a1, (a2)\n"
        "amoand.d.aqrl a0, a1, (a2)\n amoor.w a0, a1, (a2)\n amomin.d a0, a1, (a2)\n"
        "amomax.w a0, a1, (a2)\n amominu.d a0, a1, (a2)\n amomaxu.w a0, a1, (a2)\n"
        /* floating point: static rounding modes, sign-injection aliases, moves */
        "fadd.s fa0, fa1, fa2, rne\n fsub.d fa0, fa1, fa2, rtz\n fmul.s fa0, fa1, fa2, rdn\n"
        "fdiv.d fa0, fa1, fa2, rup\n fsqrt.s fa0, fa1, rmm\n fsqrt.d fa0, fa1\n"
        "fmadd.s fa0, fa1, fa2, fa3\n fmsub.d fa0, fa1, fa2, fa3, rtz\n"
        "fnmsub.s fa0, fa1, fa2, fa3\n fnmadd.d fa0, fa1, fa2, fa3, rne\n"
        "fsgnj.s fa0, fa1, fa2\n fsgnjn.d fa0, fa1, fa2\n fsgnjx.s fa0, fa1, fa2\n"
        "fmv.s fa0, fa1\n fneg.d fa0, fa1\n fabs.s fa0, fa1\n fmin.d fa0, fa1, fa2\n"
        "fmax.s fa0, fa1, fa2\n fcvt.w.s a0, fa0, rtz\n fcvt.wu.d a0, fa0\n fcvt.l.s a0, fa0\n"
        "fcvt.lu.d a0, fa0, rup\n fcvt.s.w fa0, a0\n fcvt.s.lu fa0, a0, rne\n fcvt.d.w fa0, a0\n"
        "fcvt.d.wu fa0, a0\n fcvt.d.l fa0, a0, rtz\n fcvt.s.d fa0, fa1\n fcvt.d.s fa0, fa1\n"
        "fmv.x.w a0, fa0\n fmv.w.x fa0, a0\n fmv.x.d a0, fa0\n fmv.d.x fa0, a0\n"
        "fclass.s a0, fa0\n feq.d a0, fa0, fa1\n flt.s a0, fa0, fa1\n fle.d a0, fa0, fa1\n"
        "flw fa0, 12(sp)\n fsw fa1, -8(a0)\n fld fa2, 2040(a1)\n fsd fa3, -2048(a2)\n"
        /* integer aliases */
        "nop\n li a0, -2048\n mv a1, a2\n not a3, a4\n neg a5, a0\n negw a1, a2\n"
        "sext.w a3, a4\n seqz a5, a0\n snez a1, a2\n sltz a3, a4\n sgtz a5, a0\n"
        "zext.b a1, a2\n slti a0, a1, -5\n sltiu a0, a1, 7\n andi a0, a1, -16\n"
        "ori a0, a1, 1\n xori a0, a1, 2\n slli a0, a1, 63\n srli a0, a1, 1\n srai a0, a1, 32\n"
        "slliw a0, a1, 31\n srliw a0, a1, 1\n sraiw a0, a1, 7\n addiw a0, a1, -1\n"
        "mul a0, a1, a2\n mulh a0, a1, a2\n mulhsu a0, a1, a2\n mulhu a0, a1, a2\n"
        "div a0, a1, a2\n divu a0, a1, a2\n rem a0, a1, a2\n remu a0, a1, a2\n"
        "mulw a0, a1, a2\n divw a0, a1, a2\n divuw a0, a1, a2\n remw a0, a1, a2\n"
        "remuw a0, a1, a2\n lui a0, 0xfffff\n auipc a1, 0x12345\n"
        "lb a0, -1(a1)\n lh a0, 2(a1)\n lwu a0, 4(a1)\n lhu a0, 6(a1)\n sb a0, 1(a1)\n"
        "sh a0, -2(a1)\n ld a0, 0(tp)\n lw a1, 8(zero)\n sd a2, 16(tp)\n"
        /* control transfer */
        "1: beqz a0, 1b\n bnez a1, 1b\n blez a2, 1b\n bgez a3, 1b\n bltz a4, 1b\n"
        "bgtz a5, 1b\n bgt a0, a1, 1b\n ble a0, a1, 1b\n bgtu a0, a1, 1b\n bleu a0, a1, 1b\n"
        "beq a0, a1, 1b\n bne a0, a1, 1b\n blt a0, a1, 1b\n bge a0, a1, 1b\n"
        "bltu a0, a1, 1b\n bgeu a0, a1, 1b\n jal 1b\n jal t0, 1b\n j 1b\n"
        "jalr a0\n jalr t0, a1\n jalr t0, 12(a1)\n jalr 4(a2)\n jr a3\n jr 8(a4)\n"
        "ret\n ecall\n ebreak\n"
        /* compressed encodings the compiler rarely picks */
        "c.addi16sp sp, -64\n c.addi4spn a0, sp, 16\n c.lwsp a0, 4(sp)\n c.swsp a1, 8(sp)\n"
        "c.fldsp fa0, 16(sp)\n c.fsdsp fa1, 24(sp)\n c.srai a0, 3\n c.andi a1, -3\n"
        "c.subw a0, a1\n c.addw a2, a3\n c.ebreak\n c.jalr a5\n"
        /* data inside code ($d mapping symbols): objdump prints .byte/.short/.word */
        ".byte 0x11\n .2byte 0x2233\n .4byte 0x44556677\n .byte 1, 2, 3\n .2byte 0\n"
        ".balign 2\n"
        ::: "memory");
}
