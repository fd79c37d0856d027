/*
 * alloc: heavy use of the allocator and of the memory-mapping syscalls.
 *
 * Exercises: malloc/calloc/realloc/free of sizes from 1 byte to 512 KiB.
 * glibc's malloc takes small blocks from brk and blocks above its mmap
 * threshold (128 KiB) from mmap/munmap/mremap; the zig-built musl binaries
 * use Zig's own allocator, which maps everything with mmap.  So brk is also
 * moved explicitly (raw syscall: musl's brk()/sbrk() refuse to move it).
 * Then explicit mmap, mprotect, partial munmap, and mremap (grow, may move)
 * of an anonymous mapping.  Contents are checked after every realloc/remap.
 *
 * Usage: alloc N
 *   N random operations on a table of 128 slots.  Prints operation counts,
 *   verification failures (must be 0) and content checksums; nothing printed
 *   depends on the addresses returned.
 */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#define SLOTS 128
#define PAGE 4096

static uint64_t rng = 88172645463325252ULL;
static uint64_t next_rand(void)
{
    rng ^= rng << 13;       /* xorshift64 */
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static size_t pick_size(void)
{
    uint64_t r = next_rand() % 100;
    if (r < 70)
        return 1 + next_rand() % 256;                 /* small */
    if (r < 95)
        return 257 + next_rand() % (32 * 1024);       /* medium */
    return 128 * 1024 + next_rand() % (384 * 1024);   /* large: above mmap threshold */
}

/*
 * The byte expected at offset i of a block filled with seed.  Only a sample
 * of offsets is written and checked (the first 128 bytes, one byte per page,
 * the last byte) so that large blocks cost little but every page is touched.
 */
static uint8_t pattern(uint32_t seed, size_t i) { return (uint8_t)(seed * 131 + i * 7 + (i >> 12)); }

#define FOR_SAMPLE(i, size)                                                   \
    for (size_t i = 0; i < (size); i = (i < 127 ? i + 1 : (i + PAGE < (size) \
                                    ? i + PAGE : ((i == (size) - 1) ? (size) : (size) - 1))))

static void fill(uint8_t *p, size_t size, uint32_t seed)
{
    FOR_SAMPLE(i, size)
        p[i] = pattern(seed, i);
}

static long check(const uint8_t *p, size_t size, uint32_t seed, uint64_t *sum)
{
    long bad = 0;
    FOR_SAMPLE(i, size) {
        if (p[i] != pattern(seed, i))
            bad++;
        *sum = *sum * 1099511628211ULL + p[i];
    }
    return bad;
}

struct slot {
    uint8_t *p;
    size_t size;
    uint32_t seed;
};

static long heap_phase(long nops, uint64_t *sum)
{
    static struct slot s[SLOTS];
    long mallocs = 0, callocs = 0, reallocs = 0, frees = 0, bad = 0;
    uint64_t bytes = 0;

    for (long op = 0; op < nops; op++) {
        struct slot *sl = &s[next_rand() % SLOTS];
        uint32_t seed = (uint32_t)op;
        if (sl->p == NULL) {
            size_t size = pick_size();
            if (next_rand() % 4 == 0) {
                sl->p = calloc(1, size);
                if (!sl->p)
                    return -1;
                FOR_SAMPLE(i, size)
                    bad += sl->p[i] != 0;
                callocs++;
            } else {
                sl->p = malloc(size);
                if (!sl->p)
                    return -1;
                mallocs++;
            }
            sl->size = size;
            sl->seed = seed;
            fill(sl->p, size, seed);
            bytes += size;
        } else if (next_rand() % 3 == 0) {
            /* realloc: the common prefix must survive, even when the block moves */
            size_t size = next_rand() % 2 ? sl->size * 2 + next_rand() % 64 : sl->size / 3 + 1;
            if (size > 3 * 1024 * 1024)
                size = 1 + next_rand() % 1000;
            uint8_t *q = realloc(sl->p, size);
            if (!q)
                return -1;
            size_t keep = size < sl->size ? size : sl->size;
            FOR_SAMPLE(i, sl->size)
                if (i < keep)
                    bad += q[i] != pattern(sl->seed, i);
            sl->p = q;
            sl->size = size;
            sl->seed = seed;
            fill(q, size, seed);
            reallocs++;
            bytes += size;
        } else {
            bad += check(sl->p, sl->size, sl->seed, sum);
            free(sl->p);
            sl->p = NULL;
            frees++;
        }
    }
    for (int i = 0; i < SLOTS; i++)
        if (s[i].p) {
            bad += check(s[i].p, s[i].size, s[i].seed, sum);
            free(s[i].p);
            s[i].p = NULL;
            frees++;
        }
    printf("heap: malloc=%ld calloc=%ld realloc=%ld free=%ld bytes=%llu\n",
           mallocs, callocs, reallocs, frees, (unsigned long long)bytes);
    return bad;
}

/*
 * Move the program break up by 64 KiB, use the memory, and put it back
 * exactly where it was, before anything else can allocate (glibc's malloc
 * keeps its own idea of the break).
 */
static long brk_phase(uint64_t *sum)
{
    long bad = 0;
    uintptr_t cur = (uintptr_t)syscall(SYS_brk, 0);
    uintptr_t want = cur + 16 * PAGE;
    uintptr_t got = (uintptr_t)syscall(SYS_brk, want);
    if (got != want)
        return -1;
    uint8_t *p = (uint8_t *)cur;
    for (size_t i = 0; i < 16 * PAGE; i += 64)
        p[i] = (uint8_t)(i >> 6);
    for (size_t i = 0; i < 16 * PAGE; i += 64) {
        bad += p[i] != (uint8_t)(i >> 6);
        *sum = *sum * 31 + p[i];
    }
    if ((uintptr_t)syscall(SYS_brk, cur) != cur)
        return -1;
    return bad;
}

static long mmap_phase(uint64_t *sum)
{
    long bad = 0;
    size_t len = 16 * PAGE;
    uint8_t *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return -1;
    for (size_t i = 0; i < len; i += 8)
        bad += *(uint64_t *)(p + i) != 0;    /* anonymous memory is zeroed */
    for (size_t i = 0; i < len; i += 8)
        *(uint64_t *)(p + i) = i * 0x9E3779B97F4A7C15ULL;

    if (mprotect(p, len, PROT_READ) != 0)  /* read-only and back */
        return -1;
    for (size_t i = 0; i < len; i += PAGE)
        *sum = *sum * 31 + p[i + 8];
    if (mprotect(p, len, PROT_READ | PROT_WRITE) != 0)
        return -1;

    /* Punch a hole: unmap pages 8..15, keep 0..7. */
    if (munmap(p + 8 * PAGE, 8 * PAGE) != 0)
        return -1;
    len = 8 * PAGE;

    /* Grow the remaining mapping to 64 pages; it may move. */
    uint8_t *q = mremap(p, len, 64 * PAGE, MREMAP_MAYMOVE);
    if (q == MAP_FAILED)
        return -1;
    for (size_t i = 0; i < len; i += 8)
        bad += *(uint64_t *)(q + i) != i * 0x9E3779B97F4A7C15ULL;
    for (size_t i = len; i < 64 * PAGE; i += PAGE)
        bad += q[i] != 0;                    /* new pages are zeroed */
    q[64 * PAGE - 1] = 0x5A;
    *sum = *sum * 31 + q[64 * PAGE - 1];
    /* Shrink in place. */
    uint8_t *r = mremap(q, 64 * PAGE, 4 * PAGE, 0);
    if (r != q)
        return -1;
    bad += *(uint64_t *)(r + 8) != 8 * 0x9E3779B97F4A7C15ULL;
    if (munmap(r, 4 * PAGE) != 0)
        return -1;
    printf("mmap: anonymous map, mprotect, partial munmap, mremap grow/shrink done\n");
    return bad;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: alloc N\n");
        return 2;
    }
    long nops = strtol(argv[1], NULL, 0);
    uint64_t sum = 1469598103934665603ULL;

    long bbad = brk_phase(&sum);        /* first: nothing has been printed yet */
    if (bbad < 0) {
        printf("brk: could not move the break\n");
        return 1;
    }
    printf("brk: grew by 64 KiB and shrank back, verify failures=%ld checksum=%016llx\n",
           bbad, (unsigned long long)sum);

    long bad = heap_phase(nops, &sum);
    if (bad < 0) {
        printf("heap: allocation failed\n");
        return 1;
    }
    printf("heap: verify failures=%ld checksum=%016llx\n", bad, (unsigned long long)sum);

    long mbad = mmap_phase(&sum);
    if (mbad < 0) {
        printf("mmap: syscall failed\n");
        return 1;
    }
    printf("mmap: verify failures=%ld checksum=%016llx\n", mbad, (unsigned long long)sum);
    return bad + mbad + bbad != 0;
}
