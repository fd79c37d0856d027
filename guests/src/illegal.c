/*
 * illegal: prints a line, then executes an illegal instruction.
 *
 * Exercises: delivery of SIGILL (no handler installed, so the process dies
 * with signal 4) and that output written before the fault is not lost.
 *
 * On RISC-V the faulting instruction is the all-zero 16-bit parcel, which the
 * ISA defines as illegal.  The host-native build (used only to produce the
 * expected output) uses the host's own trap instruction.
 *
 * Usage: illegal
 */
#include <stdio.h>

int main(void)
{
    printf("illegal: about to execute an illegal instruction\n");
    fflush(stdout);
#if defined(__riscv)
    __asm__ volatile(".2byte 0x0000");
#elif defined(__x86_64__) || defined(__i386__)
    __asm__ volatile("ud2");
#elif defined(__aarch64__)
    __asm__ volatile(".inst 0x00000000");
#else
#error "no illegal instruction known for this host"
#endif
    printf("illegal: still alive (this must not happen)\n");
    return 1;
}
