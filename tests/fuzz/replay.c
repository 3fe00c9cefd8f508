/* Plain driver for libFuzzer targets: runs LLVMFuzzerTestOneInput once on the whole contents of each file
 * named on the command line, so that `make check` (and the sanitizer build) replays the seed corpus
 * without libFuzzer. Each input is handed over in a buffer of exactly its size, so ASan catches any read
 * past its end. Exit status: 0 when every file was read and run, 1 if a file could not be read (the other
 * files still run); a crash or sanitizer report in the target ends the process as usual. */
#include "ns-build.h"

#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Read all of path into a new buffer of exactly *n bytes (at least 1 allocated). 0, or -1 on error. */
static int read_whole(const char *path, uint8_t **out, size_t *n)
{
    FILE *f = fopen(path, "rb");
    uint8_t *buf = NULL, *exact;
    size_t len = 0, cap = 0;

    if (f == NULL)
        return -1;
    for (;;) {
        size_t got;
        if (len == cap) {
            uint8_t *p;
            cap = cap ? cap * 2 : 4096;
            if ((p = realloc(buf, cap)) == NULL)
                goto fail;
            buf = p;
        }
        got = fread(buf + len, 1, cap - len, f);
        len += got;
        if (got == 0) {
            if (ferror(f))
                goto fail;
            break;
        }
    }
    fclose(f);
    if ((exact = malloc(len ? len : 1)) == NULL) {
        free(buf);
        return -1;
    }
    if (len > 0)
        memcpy(exact, buf, len);
    free(buf);
    *out = exact;
    *n = len;
    return 0;
fail : {
    int e = errno;
    fclose(f);
    free(buf);
    errno = e;
    return -1;
}
}

int main(int argc, char **argv)
{
    size_t replayed = 0;
    int status = 0;

    for (int i = 1; i < argc; i++) {
        uint8_t *data = NULL;
        size_t n = 0;

        if (read_whole(argv[i], &data, &n) != 0) {
            fprintf(stderr, "replay: cannot read %s: %s\n", argv[i], strerror(errno ? errno : EIO));
            status = 1;
            continue;
        }
        (void)LLVMFuzzerTestOneInput(data, n);
        free(data);
        replayed++;
    }
    printf("replayed %zu inputs\n", replayed);
    return status;
}
