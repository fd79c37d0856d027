/*
 * qsort: sorting with the C library's qsort and a comparison callback.
 *
 * Exercises: indirect calls from libc into the program (one per comparison),
 * signed 32-bit compares, 64-bit multiply/add in an LCG, memory traffic over
 * a large heap array (musl serves it with mmap).
 *
 * Usage: qsort N R
 *   R repetitions: fill N ints from a 64-bit LCG (seed depends on the
 *   repetition), sort ascending, verify order, fold into a checksum.
 *   Prints the checksum and a few elements of the last sorted array.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

static uint64_t lcg_state;

static uint32_t lcg_next(void)
{
    /* Knuth's MMIX constants; the high half has the best statistics. */
    lcg_state = lcg_state * 6364136223846793005ULL + 1442695040888963407ULL;
    return (uint32_t)(lcg_state >> 32);
}

static int cmp_int(const void *pa, const void *pb)
{
    int a = *(const int *)pa, b = *(const int *)pb;
    return (a > b) - (a < b);
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: qsort N R\n");
        return 2;
    }
    size_t n = strtoul(argv[1], NULL, 0);
    long reps = strtol(argv[2], NULL, 0);
    if (n == 0 || reps <= 0) {
        fprintf(stderr, "qsort: N and R must be positive\n");
        return 2;
    }
    int *a = malloc(n * sizeof *a);
    if (!a) {
        fprintf(stderr, "qsort: out of memory\n");
        return 1;
    }

    uint64_t checksum = 0;
    long unsorted = 0;
    for (long r = 0; r < reps; r++) {
        lcg_state = 0x9e3779b97f4a7c15ULL ^ (uint64_t)r;
        for (size_t i = 0; i < n; i++)
            a[i] = (int)lcg_next();           /* negative values included */
        qsort(a, n, sizeof *a, cmp_int);
        for (size_t i = 1; i < n; i++)
            if (a[i - 1] > a[i])
                unsorted++;
        for (size_t i = 0; i < n; i++)
            checksum = checksum * 31 + (uint64_t)(int64_t)a[i];
    }

    printf("n=%zu reps=%ld\n", n, reps);
    printf("out-of-order pairs=%ld\n", unsorted);
    printf("checksum=%016llx\n", (unsigned long long)checksum);
    printf("min=%d median=%d max=%d\n", a[0], a[n / 2], a[n - 1]);
    size_t show = n < 5 ? n : 5;
    printf("first:");
    for (size_t i = 0; i < show; i++)
        printf(" %d", a[i]);
    printf("\nlast:");
    for (size_t i = n - show; i < n; i++)
        printf(" %d", a[i]);
    printf("\n");
    free(a);
    return unsorted != 0;
}
