/*
 * crc32: the IEEE 802.3 CRC-32 (reflected polynomial 0xEDB88320), two ways.
 *
 * Exercises: a table-driven loop (byte loads, 32-bit xor/shift, indexed
 * word loads: latency-bound) and a bitwise loop (data-dependent branches or
 * masks, 8 iterations per byte).  Both must agree.
 *
 * Usage: crc32 N R
 *   Generates N deterministic bytes, computes both CRCs over them R times
 *   (each repetition perturbs one byte), prints the known-answer test for
 *   "123456789" and both final results.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint32_t table[256];

static void make_table(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++)
            c = (c & 1) ? (c >> 1) ^ 0xEDB88320u : c >> 1;
        table[i] = c;
    }
}

static uint32_t crc_table(const uint8_t *p, size_t n)
{
    uint32_t c = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; i++)
        c = table[(c ^ p[i]) & 0xFF] ^ (c >> 8);
    return ~c;
}

static uint32_t crc_bitwise(const uint8_t *p, size_t n)
{
    uint32_t c = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++)
            c = (c >> 1) ^ (0xEDB88320u & (0u - (c & 1)));
    }
    return ~c;
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: crc32 N R\n");
        return 2;
    }
    size_t n = strtoul(argv[1], NULL, 0);
    long reps = strtol(argv[2], NULL, 0);
    make_table();

    const char *check = "123456789";
    printf("crc32(\"123456789\") table=%08x bitwise=%08x (expect cbf43926)\n",
           crc_table((const uint8_t *)check, strlen(check)),
           crc_bitwise((const uint8_t *)check, strlen(check)));

    uint8_t *buf = malloc(n ? n : 1);
    if (!buf) {
        fprintf(stderr, "crc32: out of memory\n");
        return 1;
    }
    uint32_t x = 2463534242u;
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        buf[i] = (uint8_t)x;
    }
    uint32_t t = 0, b = 0, tacc = 0, bacc = 0;
    long mismatches = 0;
    for (long r = 0; r < reps; r++) {
        if (n)
            buf[(size_t)r % n] ^= (uint8_t)(r + 1);
        t = crc_table(buf, n);
        b = crc_bitwise(buf, n);
        mismatches += t != b;
        tacc = tacc * 33 + t;
        bacc = bacc * 33 + b;
    }
    printf("bytes=%zu reps=%ld\n", n, reps);
    printf("table=%08x bitwise=%08x\n", t, b);
    printf("accumulated table=%08x bitwise=%08x mismatches=%ld\n", tacc, bacc, mismatches);
    free(buf);
    return mismatches != 0;
}
