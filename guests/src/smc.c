/*
 * smc: self-modifying code.
 *
 * Exercises: executing from an anonymous PROT_READ|PROT_WRITE|PROT_EXEC
 * mapping, then rewriting already executed (and therefore already
 * translated) instructions and issuing fence.i before running them again.
 * A translator must notice the writes (or the fence.i) and retranslate.
 * Three kinds of rewrite: only the immediate of an instruction, the whole
 * instruction (addi <-> xori), and a compressed (16-bit) instruction.
 *
 * Generated functions (RISC-V):
 *   f(x): addi a0, a0, K   (or xori a0, a0, K)  ; ret
 *   g():  c.li a0, J                            ; c.jr ra
 * The host-native build (used only for the expected output) writes the
 * equivalent x86-64 code instead, so it prints the same numbers.
 *
 * Usage: smc R
 *   R rewrite-and-call rounds.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

typedef long (*fn1)(long);
typedef long (*fn0)(void);

#define G_OFFSET 64        /* g lives in the same page, 64 bytes after f */

static void sync_icache(void *start, void *end)
{
#if defined(__riscv)
    (void)start;
    (void)end;
    __asm__ volatile("fence.i" ::: "memory");
#else
    __builtin___clear_cache((char *)start, (char *)end);
#endif
}

#if defined(__riscv)
static uint32_t i_type(uint32_t funct3, int rd, int rs1, int imm)
{
    return ((uint32_t)imm & 0xFFFu) << 20 | (uint32_t)rs1 << 15 | funct3 << 12 |
           (uint32_t)rd << 7 | 0x13u;
}

static void write_f(uint8_t *code, int use_xor, int k)
{
    uint32_t insn[2];
    insn[0] = i_type(use_xor ? 4 : 0, 10, 10, k);   /* addi/xori a0, a0, k */
    insn[1] = 0x00008067u;                          /* ret (jalr x0, 0(ra)) */
    memcpy(code, insn, sizeof insn);
}

static void patch_f_imm(uint8_t *code, int k)       /* only bits 31..20 change */
{
    uint32_t w;
    memcpy(&w, code, 4);
    w = (w & 0x000FFFFFu) | ((uint32_t)k & 0xFFFu) << 20;
    memcpy(code, &w, 4);
}

static void write_g(uint8_t *code, int j)
{
    uint16_t insn[2];
    uint32_t imm = (uint32_t)j & 0x3Fu;
    insn[0] = (uint16_t)(0x4000u | (imm >> 5) << 12 | 10u << 7 | (imm & 0x1Fu) << 2 | 0x1u);
    insn[1] = 0x8082u;                              /* c.jr ra */
    memcpy(code + G_OFFSET, insn, sizeof insn);
}
#elif defined(__x86_64__)
static void write_f(uint8_t *code, int use_xor, int k)
{
    int32_t imm = k;
    if (use_xor) {          /* mov rax, rdi ; xor rax, imm32 ; ret */
        static const uint8_t pre[] = {0x48, 0x89, 0xF8, 0x48, 0x35};
        memcpy(code, pre, sizeof pre);
        memcpy(code + 5, &imm, 4);
        code[9] = 0xC3;
    } else {                /* lea rax, [rdi + imm32] ; ret */
        static const uint8_t pre[] = {0x48, 0x8D, 0x87};
        memcpy(code, pre, sizeof pre);
        memcpy(code + 3, &imm, 4);
        code[7] = 0xC3;
    }
}

static void patch_f_imm(uint8_t *code, int k)
{
    int32_t imm = k;
    memcpy(code + (code[1] == 0x89 ? 5 : 3), &imm, 4);
}

static void write_g(uint8_t *code, int j)
{
    int32_t imm = j;        /* mov rax, imm32 (sign-extended) ; ret */
    static const uint8_t pre[] = {0x48, 0xC7, 0xC0};
    memcpy(code + G_OFFSET, pre, sizeof pre);
    memcpy(code + G_OFFSET + 3, &imm, 4);
    code[G_OFFSET + 7] = 0xC3;
}
#else
#error "smc: no code generator for this host"
#endif

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: smc R\n");
        return 2;
    }
    long rounds = strtol(argv[1], NULL, 0);
    uint8_t *code = mmap(NULL, 4096, PROT_READ | PROT_WRITE | PROT_EXEC,
                         MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (code == MAP_FAILED) {
        perror("smc: mmap RWX");
        return 1;
    }
    fn1 f = (fn1)(void *)code;
    fn0 g = (fn0)(void *)(code + G_OFFSET);
    uint64_t sum = 0;
    long wrong = 0;

    for (long r = 0; r < rounds; r++) {
        int verbose = r < 4;
        int k1 = (int)((r * 37) % 2000) - 1000;     /* 12-bit signed immediates */
        int k2 = (int)((r * 53 + 11) % 2000) - 1000;
        int j = (int)(r % 64) - 32;                 /* 6-bit signed immediate */
        long x = r * 1000 + 7;

        write_f(code, 0, k1);                       /* fresh addi */
        sync_icache(code, code + 16);
        long a = f(x);
        patch_f_imm(code, k2);                      /* same instruction, new immediate */
        sync_icache(code, code + 16);
        long b = f(x);
        write_f(code, 1, k2);                       /* different instruction: xori */
        sync_icache(code, code + 16);
        long c = f(x);
        write_g(code, j);                           /* compressed c.li */
        sync_icache(code + G_OFFSET, code + G_OFFSET + 16);
        long d = g();
        write_g(code, -j - 1);
        sync_icache(code + G_OFFSET, code + G_OFFSET + 16);
        long e = g();

        wrong += a != x + k1;
        wrong += b != x + k2;
        wrong += c != (x ^ (long)k2);
        wrong += d != j;
        wrong += e != -j - 1;
        sum = sum * 7 + (uint64_t)(a + b + c + d + e);
        if (verbose)
            printf("round %ld: addi %+d -> %ld, patched %+d -> %ld, xori -> %ld, "
                   "c.li %d -> %ld, c.li %d -> %ld\n",
                   r, k1, a, k2, b, c, j, d, -j - 1, e);
    }
    printf("rounds=%ld sum=%016llx wrong=%ld\n", rounds, (unsigned long long)sum, wrong);
    munmap(code, 4096);
    return wrong != 0;
}
