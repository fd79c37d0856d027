/*
 * matmul: double-precision dense matrix multiply.
 *
 * Exercises: F/D extension loads, stores, fmul.d/fadd.d (built with
 * -ffp-contract=off so every product is rounded before the add, exactly as
 * on the host), fcvt.d.w, and fmadd.d through an explicit fma() call (fused
 * multiply-add is correctly rounded everywhere, so results still match).
 *
 * Usage: matmul N R
 *   C = A * B for NxN matrices, R times; after each repetition C is scaled
 *   and folded back into A so repetitions depend on each other.  Prints
 *   checksums with %.9g.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: matmul N R\n");
        return 2;
    }
    int n = atoi(argv[1]);
    int reps = atoi(argv[2]);
    if (n <= 0 || reps <= 0) {
        fprintf(stderr, "matmul: N and R must be positive\n");
        return 2;
    }
    double *a = malloc(sizeof(double) * n * n);
    double *b = malloc(sizeof(double) * n * n);
    double *c = malloc(sizeof(double) * n * n);
    if (!a || !b || !c) {
        fprintf(stderr, "matmul: out of memory\n");
        return 1;
    }
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++) {
            a[i * n + j] = (double)((i * 7 + j * 3) % 19 - 9) / 7.0;
            b[i * n + j] = (double)((i * 5 + j * 11) % 23 - 11) / 3.0;
        }

    for (int r = 0; r < reps; r++) {
        for (int i = 0; i < n; i++) {
            for (int j = 0; j < n; j++)
                c[i * n + j] = 0.0;
            for (int k = 0; k < n; k++) {   /* i-k-j order: unit stride */
                double aik = a[i * n + k];
                for (int j = 0; j < n; j++)
                    c[i * n + j] += aik * b[k * n + j];
            }
        }
        for (int i = 0; i < n * n; i++)
            a[i] = a[i] * 0.5 + c[i] * (1.0 / 1024.0);
    }

    double sum = 0.0, weighted = 0.0, fused = 0.0;
    for (int i = 0; i < n * n; i++) {
        sum += c[i];
        weighted += c[i] * (double)(i % 13 + 1);
        fused = fma(c[i], a[i], fused);
    }
    printf("n=%d reps=%d\n", n, reps);
    printf("sum=%.9g\n", sum);
    printf("weighted=%.9g\n", weighted);
    printf("fma-dot=%.9g\n", fused);
    printf("c[0][0]=%.9g c[n-1][n-1]=%.9g\n", c[0], c[n * n - 1]);
    free(a);
    free(b);
    free(c);
    return 0;
}
