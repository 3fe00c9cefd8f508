#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"
#include "common/codec.h"
#include "common/log.h"
#include "envelope/envelope.h"

/* verify and rewrap: one pass over every encrypted blob. */

struct tally {
    uint8_t id[NS_KEK_ID_LEN];
    size_t count;
};

static void tally_add(struct tally *t, size_t *nt, size_t cap, const uint8_t id[NS_KEK_ID_LEN])
{
    for (size_t i = 0; i < *nt; i++)
        if (memcmp(t[i].id, id, NS_KEK_ID_LEN) == 0) {
            t[i].count++;
            return;
        }
    if (*nt < cap) {
        memcpy(t[*nt].id, id, NS_KEK_ID_LEN);
        t[(*nt)++].count = 1;
    }
}

static const char *kek_role(const ns_keyring *kr, const uint8_t id[NS_KEK_ID_LEN])
{
    for (size_t i = 0; i < kr->n; i++)
        if (kr->e[i].kek != NULL && memcmp(kr->e[i].kek->id, id, NS_KEK_ID_LEN) == 0)
            return kr->e[i].primary ? "primary" : "old";
    for (size_t i = 0; i < kr->n; i++)
        if (kr->e[i].kek == NULL)
            return "unknown, or a configured key that could not be loaded";
    return "not configured";
}

static void progress(int tty, const char *what, size_t i, size_t n)
{
    if (tty && (i % 64 == 0 || i == n))
        fprintf(stderr, "\r%s: %zu/%zu", what, i, n);
    if (tty && i == n)
        fputc('\n', stderr);
}

static int list_blobs(ns_cli *cli, ns_strv *names)
{
    int r = ns_store_list(cli->store, NS_SECRET_PREFIX, names);
    if (r != 0)
        ns_cli_error("listing " NS_SECRET_PREFIX, r);
    return r;
}

int ns_cmd_verify(ns_cli *cli, int argc, char **argv)
{
    ns_strv names = NS_STRV_INIT;
    struct tally t[64];
    size_t nt = 0, failed = 0;
    int tty = isatty(STDERR_FILENO), first_err = 0, r;

    if (argc != 1) {
        fputs("usage: nstance-secrets verify\n", stderr);
        return NS_E_USAGE;
    }
    if ((r = ns_cli_store(cli)) != 0 || (r = ns_cli_keyring(cli, NS_KEYRING_TOLERANT)) != 0 ||
        (r = list_blobs(cli, &names)) != 0)
        return r;
    for (size_t i = 0; i < names.n; i++) {
        ns_buf *blob = NULL, *pt = NULL;
        ns_envelope_info info;
        const char *name = names.v[i];

        r = ns_store_get(cli->store, name, NS_BLOB_MAX, &blob, NULL);
        if (r == 0 && (r = ns_envelope_parse(blob->data, blob->len, &info)) == 0)
            tally_add(t, &nt, sizeof(t) / sizeof(t[0]), info.kek_id);
        if (r == 0)
            r = ns_envelope_open(cli->kr, name, blob->data, blob->len, &pt, NULL);
        if (r != 0 && r != NS_E_NOT_FOUND) { /* deleted meanwhile: not a failure */
            if (tty)
                fputc('\n', stderr);
            fprintf(stderr, "FAIL %s: %s\n", name, ns_strerror(r));
            failed++;
            if (first_err == 0)
                first_err = r;
        }
        ns_buf_free(pt);
        ns_buf_free(blob);
        progress(tty, "verify", i + 1, names.n);
    }
    for (size_t i = 0; i < nt; i++) {
        char hex[2 * NS_KEK_ID_LEN + 1];
        ns_hex_encode(t[i].id, NS_KEK_ID_LEN, hex);
        printf("kek %s (%s): %zu\n", hex, kek_role(cli->kr, t[i].id), t[i].count);
    }
    printf("verified %zu blobs: %zu ok, %zu failed\n", names.n, names.n - failed, failed);
    ns_strv_clear(&names);
    return first_err;
}

/* Rewrap one blob: read it with its version, re-wrap, and replace it only if nobody changed it meanwhile
 * (compare-and-swap). Each replacement is an atomic rename in the store, so a crash at any point leaves
 * either the old or the new blob, both readable while the old KEK stays configured. */
static int rewrap_one(ns_cli *cli, const char *name, int *changed)
{
    int r = NS_E_INTERNAL;

    *changed = 0;
    for (int attempt = 0; attempt < 5; attempt++) {
        ns_buf *blob = NULL, *nb = NULL;
        char *version = NULL;

        r = ns_store_get(cli->store, name, NS_BLOB_MAX, &blob, &version);
        if (r == 0)
            r = ns_envelope_rewrap(cli->kr, name, blob->data, blob->len, &nb);
        if (r == 0 && nb != NULL) {
            r = ns_store_put(cli->store, name, nb->data, nb->len, NS_PUT_IF_MATCH, version);
            *changed = r == 0;
        }
        ns_buf_free(blob);
        ns_buf_free(nb);
        free(version);
        if (r != NS_E_CONFLICT)
            break;
        ns_log(NS_LOG_INFO, "%s changed while being re-wrapped; reading it again", name);
    }
    return r == NS_E_NOT_FOUND ? 0 : r;
}

int ns_cmd_rewrap(ns_cli *cli, int argc, char **argv)
{
    ns_strv names = NS_STRV_INIT;
    size_t done = 0, skipped = 0, failed = 0;
    int tty = isatty(STDERR_FILENO), first_err = 0, r;

    if (argc != 1) {
        fputs("usage: nstance-secrets rewrap\n", stderr);
        return NS_E_USAGE;
    }
    if ((r = ns_cli_store(cli)) != 0 || (r = ns_cli_keyring(cli, NS_KEYRING_TOLERANT)) != 0)
        return r;
    if (ns_keyring_primary(cli->kr) == NULL) {
        ns_cli_error("rewrap: the primary encryption key is not reachable", cli->kr->e[0].status);
        return cli->kr->e[0].status;
    }
    if ((r = list_blobs(cli, &names)) != 0)
        return r;
    for (size_t i = 0; i < names.n; i++) {
        int changed = 0;
        if ((r = rewrap_one(cli, names.v[i], &changed)) != 0) {
            if (tty)
                fputc('\n', stderr);
            fprintf(stderr, "FAIL %s: %s\n", names.v[i], ns_strerror(r));
            failed++;
            if (first_err == 0)
                first_err = r;
        } else if (changed) {
            done++;
        } else {
            skipped++;
        }
        progress(tty, "rewrap", i + 1, names.n);
    }
    printf("rewrap: %zu blobs, %zu re-wrapped, %zu already under the primary key, %zu failed\n", names.n,
           done, skipped, failed);
    ns_strv_clear(&names);
    return first_err;
}
