/* Source of the guest programs whose objdump -d listings are the disassembler's golden files
   (tests/translator/test_disasm.py; see build.sh). Real libc code plus zoo.h. */
#include <fenv.h>
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "zoo.h"

_Atomic long counter;
_Atomic int flags;
void (*volatile keep)(void) = zoo;

static int cmp(const void *a, const void *b) { return *(const int *)a - *(const int *)b; }

double f(double x, float y) { return sqrt(x) * y + fma(x, x, y) + (long)x + (unsigned)y; }

int main(int argc, char **argv)
{
    int a[100];
    for (int i = 0; i < 100; i++)
        a[i] = (i * 7919) % 100;
    qsort(a, 100, sizeof a[0], cmp);
    atomic_fetch_add(&counter, argc);
    atomic_fetch_or(&flags, 3);
    long expected = 1;
    atomic_compare_exchange_strong(&counter, &expected, 5);
    fesetround(FE_TOWARDZERO);
    printf("%d %f %s\n", a[50], f(argc, 2.5f), strchr(argv[0], '/'));
    if (argc > 100)
        keep();
    return a[3] > 2 ? 0 : 1;
}
