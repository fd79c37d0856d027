/*
 * fileio: file system calls through the C library.
 *
 * Exercises: open (openat on RISC-V) with O_CREAT|O_TRUNC, write, lseek
 * (SEEK_SET/SEEK_CUR/SEEK_END), read, fstat, close, re-open with O_APPEND,
 * pread, stdio fopen/fgets on the same file, unlink, and the errno of
 * opening the file after it has been removed (ENOENT).
 *
 * Usage: fileio PATH N
 *   PATH must not exist or be disposable: it is created, rewritten and
 *   unlinked.  N is the number of bytes written in the first pass.  Prints
 *   each check; the path itself is never printed.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int failures;

static void report(const char *what, int ok)
{
    printf("%-40s %s\n", what, ok ? "ok" : "FAILED");
    if (!ok)
        failures++;
}

static uint8_t byte_at(size_t i) { return (uint8_t)('a' + (i * 7 + i / 26) % 26); }

static int write_all(int fd, const uint8_t *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w <= 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: fileio PATH N\n");
        return 2;
    }
    const char *path = argv[1];
    size_t n = strtoul(argv[2], NULL, 0);
    if (n < 64) {
        fprintf(stderr, "fileio: N must be at least 64\n");
        return 2;
    }
    uint8_t *buf = malloc(n);
    uint8_t *back = malloc(n);
    if (!buf || !back)
        return 1;
    for (size_t i = 0; i < n; i++)
        buf[i] = byte_at(i);

    /* 1. Create and write in chunks of varying size. */
    int fd = open(path, O_CREAT | O_TRUNC | O_RDWR, 0600);
    report("open(O_CREAT|O_TRUNC|O_RDWR)", fd >= 0);
    if (fd < 0)
        return 1;
    size_t done = 0, chunk = 1;
    int ok = 1;
    while (done < n) {
        size_t c = chunk < n - done ? chunk : n - done;
        ok &= write_all(fd, buf + done, c) == 0;
        done += c;
        chunk = chunk * 3 + 1;
    }
    report("write in chunks", ok);
    printf("bytes written=%zu\n", done);

    /* 2. Seek around and read back. */
    off_t end = lseek(fd, 0, SEEK_CUR);
    report("lseek(0, SEEK_CUR) == N", end == (off_t)n);
    report("lseek(0, SEEK_SET) == 0", lseek(fd, 0, SEEK_SET) == 0);
    ssize_t r = read(fd, back, n);
    report("read whole file", r == (ssize_t)n && memcmp(back, buf, n) == 0);
    report("read at EOF returns 0", read(fd, back, 1) == 0);
    off_t mid = lseek(fd, -(off_t)(n / 2), SEEK_END);
    report("lseek(-N/2, SEEK_END)", mid == (off_t)(n - n / 2));
    r = read(fd, back, 10);
    report("read 10 bytes at middle", r == 10 && memcmp(back, buf + mid, 10) == 0);
    report("lseek(5, SEEK_CUR)", lseek(fd, 5, SEEK_CUR) == mid + 15);
    r = pread(fd, back, 16, 3);
    report("pread 16 bytes at offset 3", r == 16 && memcmp(back, buf + 3, 16) == 0);

    /* 3. Overwrite in the middle, then fstat. */
    lseek(fd, 10, SEEK_SET);
    ok = write(fd, "XYZ", 3) == 3;
    memcpy(buf + 10, "XYZ", 3);
    report("overwrite 3 bytes at offset 10", ok);
    struct stat st;
    report("fstat", fstat(fd, &st) == 0);
    printf("fstat size=%lld regular=%d\n", (long long)st.st_size, S_ISREG(st.st_mode) ? 1 : 0);
    report("close", close(fd) == 0);

    /* 4. Re-open for appending: writes land at the end whatever the offset. */
    fd = open(path, O_WRONLY | O_APPEND);
    report("open(O_WRONLY|O_APPEND)", fd >= 0);
    lseek(fd, 0, SEEK_SET);
    const char *tail = "\nappended line\n";
    report("append write", write(fd, tail, strlen(tail)) == (ssize_t)strlen(tail));
    report("fstat after append", fstat(fd, &st) == 0 && st.st_size == (off_t)(n + strlen(tail)));
    printf("fstat size=%lld\n", (long long)st.st_size);
    close(fd);

    /* 5. Read it back with stdio. */
    FILE *f = fopen(path, "r");
    report("fopen(\"r\")", f != NULL);
    if (f) {
        char line[64];
        int lines = 0;
        long chars = 0;
        uint32_t h = 0;
        int c;
        while ((c = fgetc(f)) != EOF) {
            chars++;
            h = h * 31 + (uint32_t)c;
            lines += c == '\n';
        }
        report("fgetc reads whole file", chars == (long)(n + strlen(tail)));
        printf("stdio: chars=%ld newlines=%d hash=%08x\n", chars, lines, h);
        rewind(f);
        report("fgets first line", fgets(line, 20, f) != NULL && memcmp(line, buf, 19) == 0);
        printf("first 19 bytes: %s\n", line);
        fclose(f);
    }

    /* 6. Remove it; opening again must fail with ENOENT. */
    report("unlink", unlink(path) == 0);
    errno = 0;
    fd = open(path, O_RDONLY);
    report("open after unlink fails with ENOENT", fd < 0 && errno == ENOENT);
    printf("failures=%d\n", failures);
    free(buf);
    free(back);
    return failures != 0;
}
