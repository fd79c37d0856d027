/*
 * nbody: gravitational simulation of the Sun and the four giant planets.
 *
 * Exercises: double-precision arithmetic with real rounding (fadd/fsub/
 * fmul/fdiv.d), fsqrt.d (correctly rounded on every libc and ISA, so the
 * output is identical on the host), FP compares, structure-of-fields loads
 * and stores.  Built with -ffp-contract=off: no fused multiply-adds.
 *
 * Usage: nbody S
 *   Symplectic Euler integration, time step 0.01 years, S steps.  Prints the
 *   total energy before and after (%.9g) and the final Sun position.
 *   Units: AU, years, solar masses (G*M_sun = 4*pi^2).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#define PI 3.141592653589793
#define SOLAR_MASS (4.0 * PI * PI)
#define DAYS_PER_YEAR 365.24

struct body {
    double x[3];
    double v[3];
    double mass;
};

/* Initial state: positions (AU) and velocities (AU/day) of the outer planets. */
static struct body bodies[] = {
    {{0, 0, 0}, {0, 0, 0}, 1.0},
    {{4.84143144246472090e+00, -1.16032004402742839e+00, -1.03622044471123109e-01},
     {1.66007664274403694e-03, 7.69901118419740425e-03, -6.90460016972063023e-05},
     9.54791938424326609e-04},
    {{8.34336671824457987e+00, 4.12479856412430479e+00, -4.03523417114321381e-01},
     {-2.76742510726862411e-03, 4.99852801234917238e-03, 2.30417297573763929e-05},
     2.85885980666130812e-04},
    {{1.28943695621391310e+01, -1.51111514016986312e+01, -2.23307578892655734e-01},
     {2.96460137564761618e-03, 2.37847173959480950e-03, -2.96589568540237556e-05},
     4.36624404335156298e-05},
    {{1.53796971148509165e+01, -2.59193146099879641e+01, 1.79258772950371181e-01},
     {2.68067772490389322e-03, 1.62824170038242295e-03, -9.51592254519715870e-05},
     5.15138902046611451e-05},
};
#define NBODIES ((int)(sizeof bodies / sizeof bodies[0]))

static void setup(void)
{
    double p[3] = {0, 0, 0};
    for (int i = 0; i < NBODIES; i++) {
        bodies[i].mass *= SOLAR_MASS;
        for (int d = 0; d < 3; d++) {
            bodies[i].v[d] *= DAYS_PER_YEAR;
            p[d] += bodies[i].v[d] * bodies[i].mass;
        }
    }
    for (int d = 0; d < 3; d++)       /* zero total momentum: move the Sun */
        bodies[0].v[d] = -p[d] / SOLAR_MASS;
}

static double energy(void)
{
    double e = 0.0;
    for (int i = 0; i < NBODIES; i++) {
        const struct body *a = &bodies[i];
        e += 0.5 * a->mass * (a->v[0] * a->v[0] + a->v[1] * a->v[1] + a->v[2] * a->v[2]);
        for (int j = i + 1; j < NBODIES; j++) {
            const struct body *b = &bodies[j];
            double dx = a->x[0] - b->x[0], dy = a->x[1] - b->x[1], dz = a->x[2] - b->x[2];
            e -= a->mass * b->mass / sqrt(dx * dx + dy * dy + dz * dz);
        }
    }
    return e;
}

static void advance(double dt)
{
    for (int i = 0; i < NBODIES; i++) {
        struct body *a = &bodies[i];
        for (int j = i + 1; j < NBODIES; j++) {
            struct body *b = &bodies[j];
            double dx = a->x[0] - b->x[0], dy = a->x[1] - b->x[1], dz = a->x[2] - b->x[2];
            double d2 = dx * dx + dy * dy + dz * dz;
            double mag = dt / (d2 * sqrt(d2));
            a->v[0] -= dx * b->mass * mag;
            a->v[1] -= dy * b->mass * mag;
            a->v[2] -= dz * b->mass * mag;
            b->v[0] += dx * a->mass * mag;
            b->v[1] += dy * a->mass * mag;
            b->v[2] += dz * a->mass * mag;
        }
    }
    for (int i = 0; i < NBODIES; i++)
        for (int d = 0; d < 3; d++)
            bodies[i].x[d] += dt * bodies[i].v[d];
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: nbody STEPS\n");
        return 2;
    }
    long steps = strtol(argv[1], NULL, 0);
    setup();
    printf("steps=%ld\n", steps);
    printf("energy before=%.9g\n", energy());
    for (long s = 0; s < steps; s++)
        advance(0.01);
    printf("energy after=%.9g\n", energy());
    printf("sun at %.9g %.9g %.9g\n", bodies[0].x[0], bodies[0].x[1], bodies[0].x[2]);
    printf("jupiter at %.9g %.9g %.9g\n", bodies[1].x[0], bodies[1].x[1], bodies[1].x[2]);
    return 0;
}
