/* ns-reload CONFIG: what a long-running program does with its keys, for tests/integration/kek-sources.sh.
 *
 * Loads the keyring of CONFIG (strict), prints "loaded" and one line "ROLE ID SOURCE" per key, then
 * waits. On SIGHUP it calls ns_keyring_reload() and prints "reloaded" or "reload failed: <error>" and the
 * ring's keys (the old ones after a failure); on SIGTERM it exits 0. Each report ends with a line "."
 * and is flushed, so a test can wait for it. Exit 1 if the first load fails. */
#include "ns-build.h"

#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "common/codec.h"
#include "common/log.h"
#include "common/secmem.h"
#include "settings/settings.h"
#include "keys/keyring.h"

static volatile sig_atomic_t hup, term;

static void on_signal(int sig)
{
    if (sig == SIGHUP)
        hup = 1;
    else
        term = 1;
}

static void report(const ns_keyring *kr)
{
    char hex[2 * NS_KEK_ID_LEN + 1];

    for (size_t i = 0; i < kr->n; i++) {
        if (kr->e[i].kek == NULL)
            continue;
        ns_hex_encode(kr->e[i].kek->id, NS_KEK_ID_LEN, hex);
        printf("%s %s %s\n", kr->e[i].primary ? "primary" : "old", hex, kr->e[i].kek->source);
    }
    printf(".\n");
    fflush(stdout);
}

int main(int argc, char **argv)
{
    ns_config *cfg = NULL;
    ns_keyring *kr = NULL;
    struct sigaction sa;
    sigset_t block, old;
    int r;

    if (argc != 2) {
        fputs("usage: ns-reload CONFIG\n", stderr);
        return 2;
    }
    ns_secmem_harden_process();
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigaction(SIGHUP, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    /* Signals stay blocked except inside sigsuspend(), so none is lost between the check and the wait. */
    sigemptyset(&block);
    sigaddset(&block, SIGHUP);
    sigaddset(&block, SIGTERM);
    sigprocmask(SIG_BLOCK, &block, &old);

    if ((r = ns_config_load(argv[1], &cfg)) != 0 ||
        (r = ns_keyring_load(&cfg->keys, NS_KEYRING_STRICT, &kr)) != 0) {
        printf("load failed: %s\n.\n", ns_strerror(r));
        ns_config_free(cfg);
        return 1;
    }
    printf("loaded\n");
    report(kr);
    while (!term) {
        sigsuspend(&old);
        if (hup) {
            hup = 0;
            r = ns_keyring_reload(kr);
            if (r == 0)
                printf("reloaded\n");
            else
                printf("reload failed: %s\n", ns_strerror(r));
            report(kr);
        }
    }
    ns_keyring_free(kr);
    ns_config_free(cfg);
    return 0;
}
