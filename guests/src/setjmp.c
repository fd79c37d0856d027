/*
 * setjmp: non-local exits with setjmp/longjmp.
 *
 * Exercises: saving and restoring callee-saved integer registers (s0-s11),
 * sp and ra, and the callee-saved FP registers (fs0-fs11) that both libcs'
 * RISC-V setjmp also save; returns to a point in a frame far up the stack;
 * longjmp(buf, 0) turning into setjmp returning 1; jumping to an outer
 * handler through a chain of inner ones.
 *
 * Usage: setjmp DEPTH R
 *   Recurses DEPTH levels before jumping out; repeats the scenarios R times
 *   (the path is printed in full only for the first repetition).
 */
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>

static jmp_buf outer, inner;
static int verbose = 1;
static long trace;           /* folds in every step taken */

static void step(const char *what, long v)
{
    trace = trace * 131 + v + 7;
    if (verbose)
        printf("  %s %ld\n", what, v);
}

/* Recurse to depth, keeping values live across calls in callee-saved registers. */
static long dive(int level, int depth, long acc, double facc, int value)
{
    long local = acc * 3 + level;
    double flocal = facc * 0.5 + level;
    if (level > depth)
        return 0;                       /* not reached: keeps the recursion finite */
    if (level == depth) {
        step("bottom reached at level", level);
        longjmp(outer, value);          /* value 0 must arrive as 1 */
    }
    long r = dive(level + 1, depth, local, flocal, value);
    step("never printed: returned normally", r);
    return r + local + (long)flocal;
}

static void thrower(int depth)
{
    if (depth < 0)
        return;                         /* not reached */
    if (depth == 0)
        longjmp(inner, 42);
    thrower(depth - 1);
}

static int middle(int depth)
{
    volatile int stage = 0;
    int rc = setjmp(inner);
    if (rc == 0) {
        stage = 1;
        thrower(depth);
        step("never printed: thrower returned", 0);
    }
    step("inner handler got", rc);
    step("stage preserved (volatile)", stage);
    if (stage == 1) {
        stage = 2;
        longjmp(outer, 99);             /* escape past middle entirely */
    }
    return -1;
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: setjmp DEPTH R\n");
        return 2;
    }
    int depth = atoi(argv[1]);
    long reps = strtol(argv[2], NULL, 0);
    long callee_saved = 0x1234;        /* must survive the longjmps in a register */
    double fsaved = 2.5;

    for (long r = 0; r < reps; r++) {
        verbose = r == 0;
        for (volatile int value = 0; value < 3; value++) {
            volatile int attempts = 0;
            int rc = setjmp(outer);
            attempts++;
            if (rc == 0) {
                step("scenario 1: setjmp returned 0, diving with value", value);
                dive(0, depth, r, 1.0, value);
            }
            step("returned to main via longjmp with", rc);
            step("returns from setjmp so far", attempts);
        }
        int rc = setjmp(outer);
        if (rc == 0) {
            step("scenario 2: nested handlers, depth", depth);
            middle(depth);
        }
        step("outer handler got", rc);
        callee_saved = callee_saved * 5 + r;
        fsaved = fsaved * 1.5 - (double)r;
    }
    printf("reps=%ld trace=%016lx callee_saved=%ld fsaved=%.9g\n", reps, (unsigned long)trace,
           callee_saved, fsaved);
    return 0;
}
