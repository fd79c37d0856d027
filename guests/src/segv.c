/*
 * segv: prints a line, then loads from an unmapped address.
 *
 * Exercises: delivery of SIGSEGV for a load from the (never mapped) page at
 * address 0 (no handler installed, so the process dies with signal 11) and
 * that output written before the fault is not lost.
 *
 * Usage: segv
 */
#include <stdio.h>

int main(void)
{
    printf("segv: about to load from address 0x10\n");
    fflush(stdout);
    int v = *(volatile int *)0x10;
    printf("segv: still alive, read %d (this must not happen)\n", v);
    return 1;
}
