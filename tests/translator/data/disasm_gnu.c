/* Freestanding program linked by GNU ld (gp relaxation, $x mapping symbols, privileged-spec
   1.11 attributes, zero padding between functions) for the disassembler golden files
   (tests/translator/test_disasm.py; see build.sh). Never meant to do anything useful. */
#include "zoo.h"

long counter, table[4] = {1, 2, 3, 4};
static int small;
double scale = 1.5;

static long sys(long n, long a, long b, long c)
{
    register long a0 __asm__("a0") = a, a1 __asm__("a1") = b, a2 __asm__("a2") = c;
    register long a7 __asm__("a7") = n;
    __asm__ volatile("ecall" : "+r"(a0) : "r"(a1), "r"(a2), "r"(a7) : "memory");
    return a0;
}

/* Words the RV64GC decoder rejects but objdump prints: privileged instructions, a reserved
   compressed encoding, reserved rounding modes; and fence.i. Never executed. */
static void __attribute__((noinline, used)) system_zoo(void)
{
    __asm__ volatile("wfi\n mret\n sret\n sfence.vma\n sfence.vma a0\n sfence.vma a0, a1\n"
                     ".insn 4, 0x20200073\n .insn 2, 0x6101\n .insn 4, 0x00b5550b\n .insn 4, 0x00b55553\n .insn 4, 0x42b56553\n"
                     ".insn 4, 0x02b56543\n .insn 4, 0x0ff0100f\n fence.i\n unimp\n"
                     ".insn 4, 0xc0001073\n" ::: "memory");
}

__attribute__((noinline, aligned(64))) long pick(long k, double x)
{
    switch (k) {
    case 0: return (long)(x * scale);
    case 1: return table[1] + small;
    case 2: return counter++;
    case 3: return __atomic_fetch_add(&counter, 2, __ATOMIC_SEQ_CST);
    case 4: { double r; __asm__("fsqrt.d %0, %1" : "=f"(r) : "f"(x)); return (long)r; }
    case 5: small = (int)k; return 7;
    default: return -1;
    }
}

void (*volatile keep[])(void) = {zoo, system_zoo};

void _start(void)
{
    long s = 0;
    for (long k = 0; k < 8; k++)
        s += pick(k, 2.0 * k);
    sys(64, 1, (long)"ok\n", 3);
    sys(93, s & 1, 0, 0);
}
