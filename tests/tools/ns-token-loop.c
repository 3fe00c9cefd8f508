/* ns-token-loop CONFIG COUNT INTERVAL_MS: a long-running user of the primary KEK, for
 * tests/integration/token-faults.sh (and the server tests to come).
 *
 * Loads the keyring of CONFIG (strict), wraps one random DEK with the primary KEK, then COUNT times, every
 * INTERVAL_MS milliseconds, unwraps it and prints one line: "N ok", "N error <message>" or "N WRONG" (the
 * unwrap "succeeded" with other bytes than the DEK: must never happen). Each line is flushed, so a test can
 * change the faults while it runs. Last line: "done ok=A error=B wrong=C". Exit 0 unless the load or the
 * first wrap failed (1) or a wrong DEK came back (3). */
#include "ns-build.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/buf.h"
#include "common/log.h"
#include "common/secmem.h"
#include "settings/settings.h"
#include "keys/aead.h"
#include "keys/keyring.h"

int main(int argc, char **argv)
{
    static const uint8_t aad[] = "ns-token-loop";
    ns_config *cfg = NULL;
    ns_keyring *kr = NULL;
    ns_buf *wrapped = NULL;
    uint8_t dek[NS_DEK_LEN], got[NS_DEK_LEN], param = 0;
    long count, interval, ok = 0, bad = 0, wrong = 0;
    ns_kek *k;
    int r, rc = 1;

    if (argc != 4 || (count = strtol(argv[2], NULL, 10)) <= 0 || (interval = strtol(argv[3], NULL, 10)) < 0) {
        fputs("usage: ns-token-loop CONFIG COUNT INTERVAL_MS\n", stderr);
        return 2;
    }
    if (ns_secmem_init() != 0)
        ns_log(NS_LOG_DEBUG, "continuing without a locked secure heap");
    if ((r = ns_config_load(argv[1], &cfg)) != 0 ||
        (r = ns_keyring_load(&cfg->keys, NS_KEYRING_STRICT, &kr)) != 0 || kr->n == 0 || !kr->e[0].primary) {
        printf("load failed: %s\n", ns_strerror(r));
        goto out;
    }
    k = kr->e[0].kek;
    if ((r = ns_random(dek, sizeof(dek))) != 0 || (r = ns_buf_new(NS_WRAPPED_MAX, false, &wrapped)) != 0 ||
        (r = k->ops->wrap(k, dek, aad, sizeof(aad), wrapped, &param)) != 0) {
        printf("wrap failed: %s\n", ns_strerror(r));
        goto out;
    }
    printf("wrapped\n");
    fflush(stdout);
    for (long i = 1; i <= count; i++) {
        struct timespec ts = {interval / 1000, (interval % 1000) * 1000000L};
        memset(got, 0, sizeof(got));
        r = k->ops->unwrap(k, param, wrapped->data, wrapped->len, aad, sizeof(aad), got);
        if (r != 0) {
            printf("%ld error %s\n", i, ns_strerror(r));
            bad++;
        } else if (memcmp(got, dek, sizeof(dek)) != 0) {
            printf("%ld WRONG\n", i);
            wrong++;
        } else {
            printf("%ld ok\n", i);
            ok++;
        }
        fflush(stdout);
        if (i < count)
            nanosleep(&ts, NULL);
    }
    printf("done ok=%ld error=%ld wrong=%ld\n", ok, bad, wrong);
    rc = wrong > 0 ? 3 : 0;
out:
    ns_wipe(dek, sizeof(dek));
    ns_wipe(got, sizeof(got));
    ns_buf_free(wrapped);
    ns_keyring_free(kr);
    ns_config_free(cfg);
    return rc;
}
