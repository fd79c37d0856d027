/*
 * strings: everyday string processing through the C library.
 *
 * Exercises: strlen/strcmp/strncmp/strstr/strchr/memcpy/memcmp/memset (musl
 * and glibc each have their own word-at-a-time versions), strtok_r, sprintf
 * and sscanf round trips, toupper, in-place reversal, a hash table of words
 * and qsort with a strcmp-based comparator.
 *
 * Usage: strings N
 *   Builds a deterministic text of N words, then tokenises it line by line,
 *   counts word frequencies, transforms the words and prints summaries.
 *   All repeated string calls work on one line at a time: zig's libc (0.17)
 *   measures the whole string on every strtok_r/strstr/strchr call, so loops
 *   over one long string would be quadratic there.
 */
#include <ctype.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *vocab[] = {
    "the", "quick", "brown", "fox", "jumps", "over", "lazy", "dog",
    "translation", "block", "register", "guest", "host", "cache", "jit",
    "interpreter", "branch", "load", "store", "then", "there", "other",
    "a", "riscv",
};
#define NVOCAB ((int)(sizeof vocab / sizeof vocab[0]))

static uint32_t rng = 12345;
static uint32_t next_rand(void)
{
    rng = rng * 1103515245u + 12345u;
    return (rng >> 16) & 0x7FFF;
}

struct entry {
    char word[32];
    long count;
};

#define TABLE_SIZE 256              /* power of two, > number of distinct words */
static struct entry table[TABLE_SIZE];
static int distinct;

static uint32_t hash(const char *s)
{
    uint32_t h = 2166136261u;       /* FNV-1a */
    while (*s)
        h = (h ^ (uint8_t)*s++) * 16777619u;
    return h;
}

static void count_word(const char *w)
{
    uint32_t i = hash(w) & (TABLE_SIZE - 1);
    while (table[i].count != 0 && strcmp(table[i].word, w) != 0)
        i = (i + 1) & (TABLE_SIZE - 1);
    if (table[i].count == 0) {
        size_t len = strlen(w);
        if (len >= sizeof table[i].word)
            len = sizeof table[i].word - 1;
        memcpy(table[i].word, w, len);
        table[i].word[len] = '\0';
        distinct++;
    }
    table[i].count++;
}

static int by_count_then_word(const void *pa, const void *pb)
{
    const struct entry *a = pa, *b = pb;
    if (a->count != b->count)
        return a->count < b->count ? 1 : -1;
    return strcmp(a->word, b->word);
}

static void reverse(char *s)
{
    size_t n = strlen(s);
    for (size_t i = 0; i < n / 2; i++) {
        char t = s[i];
        s[i] = s[n - 1 - i];
        s[n - 1 - i] = t;
    }
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: strings N\n");
        return 2;
    }
    long nwords = strtol(argv[1], NULL, 0);
    if (nwords <= 0) {
        fprintf(stderr, "strings: N must be positive\n");
        return 2;
    }

    /*
     * 1. Build the text: sentences of words separated by spaces and some commas,
     *    each sentence ending with ".\n" (at most 30 words per sentence).
     */
    size_t cap = (size_t)nwords * 16 + 2;
    char *text = malloc(cap);
    char *copy = malloc(cap);
    if (!text || !copy) {
        fprintf(stderr, "strings: out of memory\n");
        return 1;
    }
    size_t len = 0;
    int in_sentence = 0;
    for (long i = 0; i < nwords; i++) {
        const char *w = vocab[next_rand() % NVOCAB];
        size_t wl = strlen(w);
        memcpy(text + len, w, wl);
        len += wl;
        in_sentence++;
        uint32_t p = next_rand() % 10;
        if (i == nwords - 1 || p == 1 || in_sentence == 30) {
            text[len++] = '.', text[len++] = '\n';
            in_sentence = 0;
        } else if (p == 0) {
            text[len++] = ',', text[len++] = ' ';
        } else {
            text[len++] = ' ';
        }
    }
    text[len] = '\0';
    printf("text length=%zu strlen=%zu\n", len, strlen(text));
    printf("text starts: %.40s\n", text);
    memcpy(copy, text, len + 1);
    printf("memcmp copy=%d\n", memcmp(copy, text, len + 1));

    /*
     * 2. Line by line (each line copied out and NUL-terminated, so every string
     *    call sees a short string whatever N is): substring searches, then
     *    tokenise and count word frequencies.
     */
    long lines = 0, the_count = 0, commas = 0;
    long tokens = 0, longest = 0, less = 0, prefix_tr = 0;
    char prev[32] = "";
    char line[512];
    for (size_t pos = 0; pos < len;) {
        const char *nl = memchr(text + pos, '\n', len - pos);
        size_t ll = nl ? (size_t)(nl - (text + pos)) + 1 : len - pos;
        if (ll >= sizeof line)
            ll = sizeof line - 1;
        memcpy(line, text + pos, ll);
        line[ll] = '\0';
        pos += ll;
        lines++;
        for (const char *p = line; (p = strstr(p, "the")) != NULL; p++)
            the_count++;
        for (const char *p = line; (p = strchr(p, ',')) != NULL; p++)
            commas++;
        char *save = NULL;
        for (char *tok = strtok_r(line, " ,.\n", &save); tok;
             tok = strtok_r(NULL, " ,.\n", &save)) {
            tokens++;
            long l = (long)strlen(tok);
            if (l > longest)
                longest = l;
            if (strcmp(prev, tok) < 0)
                less++;
            if (strncmp(tok, "tr", 2) == 0)
                prefix_tr++;
            count_word(tok);
            strncpy(prev, tok, sizeof prev - 1);
        }
    }
    printf("lines=%ld strstr \"the\"=%ld strchr ','=%ld\n", lines, the_count, commas);
    printf("tokens=%ld distinct=%d longest=%ld ascending-pairs=%ld tr-prefix=%ld\n",
           tokens, distinct, longest, less, prefix_tr);

    struct entry sorted[TABLE_SIZE];
    int k = 0;
    for (int i = 0; i < TABLE_SIZE; i++)
        if (table[i].count)
            sorted[k++] = table[i];
    qsort(sorted, (size_t)k, sizeof sorted[0], by_count_then_word);
    for (int i = 0; i < k && i < 5; i++)
        printf("top%d %-12s %ld\n", i + 1, sorted[i].word, sorted[i].count);

    /* 4. Transform: upper-case and reverse each distinct word, sprintf/sscanf round trip. */
    uint32_t mix = 0;
    long roundtrip_ok = 0;
    for (int i = 0; i < k; i++) {
        char w[32];
        strcpy(w, sorted[i].word);
        for (char *c = w; *c; c++)
            *c = (char)toupper((unsigned char)*c);
        reverse(w);
        char out[96];
        int n = sprintf(out, "%s-%05ld-%x-%.2f", w, sorted[i].count, (unsigned)hash(w),
                        (double)sorted[i].count / (double)tokens * 100.0);
        char back[32];
        long cnt = 0;
        unsigned h = 0;
        double pct = 0;
        if (sscanf(out, "%31[^-]-%ld-%x-%lf", back, &cnt, &h, &pct) == 4 &&
            strcmp(back, w) == 0 && cnt == sorted[i].count && h == hash(w))
            roundtrip_ok++;
        mix = mix * 31 + hash(out) + (uint32_t)n;
        if (i < 3)
            printf("formatted: %s\n", out);
    }
    printf("roundtrip ok=%ld/%d mix=%08x\n", roundtrip_ok, k, mix);

    /* 5. Reverse the whole text and search it once. */
    reverse(text);
    const char *hit = strstr(text, "tij");
    const char *miss = strstr(text, "jit");
    printf("reversed starts: %.30s\n", text);
    printf("\"tij\" at=%ld \"jit\" found=%s\n", hit ? (long)(hit - text) : -1L,
           miss ? "yes" : "no");
    memset(copy, 0, cap);
    free(text);
    free(copy);
    return 0;
}
