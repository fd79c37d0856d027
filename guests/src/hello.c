/*
 * hello: the smallest useful guest.
 *
 * Exercises: argc/argv and envp as laid out on the initial stack by the
 * loader, getenv(), stdio (buffered printf flushed at exit), exit status 0.
 *
 * Usage: hello [ARG...]      (environment: DBTLAB_GREETING)
 * argv[0] is not printed: its value depends on how the program was started,
 * and the expected output must not.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv)
{
    const char *greeting = getenv("DBTLAB_GREETING");

    printf("hello from dbtlab guest\n");
    printf("argc=%d\n", argc);
    for (int i = 1; i < argc; i++)
        printf("argv[%d]=\"%s\" (len %zu)\n", i, argv[i], strlen(argv[i]));
    printf("DBTLAB_GREETING=%s\n", greeting ? greeting : "(unset)");
    return 0;
}
