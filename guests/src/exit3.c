/*
 * exit3: a program that ends with a non-zero exit status.
 *
 * Exercises: exit() with status 3 (exit_group), flushing of buffered stdout
 * by the libc exit path.
 *
 * Usage: exit3
 */
#include <stdio.h>
#include <stdlib.h>

int main(void)
{
    printf("exit3: about to exit with status 3\n");
    exit(3);
}
