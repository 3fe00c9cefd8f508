#include "ns-build.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"
#include "common/codec.h"
#include "common/log.h"
#include "envelope/envelope.h"
#include "secrets/rewrap.h"

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

struct rewrap_ui {
    int tty;
};

static void rewrap_progress(void *ctx, size_t done, size_t total)
{
    struct rewrap_ui *ui = ctx;
    progress(ui->tty, "rewrap", done, total);
}

static void rewrap_failure(void *ctx, const char *name, int err)
{
    struct rewrap_ui *ui = ctx;
    if (ui->tty)
        fputc('\n', stderr);
    fprintf(stderr, "FAIL %s: %s\n", name, ns_strerror(err));
}

int ns_cmd_rewrap(ns_cli *cli, int argc, char **argv)
{
    static const struct option longopts[] = {{"jobs", required_argument, NULL, 'j'}, {NULL, 0, NULL, 0}};
    struct rewrap_ui ui = {isatty(STDERR_FILENO)};
    ns_rewrap_hooks hooks = {rewrap_progress, rewrap_failure, &ui};
    ns_rewrap_stats st;
    unsigned long jobs = 1;
    char *end;
    int opt, r;

    while ((opt = getopt_long(argc, argv, "j:", longopts, NULL)) != -1) {
        if (opt != 'j')
            goto usage;
        jobs = strtoul(optarg, &end, 10);
        if (*optarg == '\0' || *end != '\0' || jobs < 1 || jobs > NS_REWRAP_JOBS_MAX) {
            fprintf(stderr, "nstance-secrets: error: --jobs must be 1..%d\n", NS_REWRAP_JOBS_MAX);
            return NS_E_USAGE;
        }
    }
    if (optind != argc)
        goto usage;
    if ((r = ns_cli_config(cli)) != 0)
        return r;
    /* One token session per job. */
    if (cli->cfg->token_sessions < jobs)
        cli->cfg->token_sessions = (unsigned)jobs;
    if ((r = ns_cli_store(cli)) != 0 || (r = ns_cli_keyring(cli, NS_KEYRING_TOLERANT)) != 0)
        return r;
    if (ns_keyring_primary(cli->kr) == NULL) {
        ns_cli_error("rewrap: the primary encryption key is not reachable", cli->kr->e[0].status);
        return cli->kr->e[0].status;
    }
    if ((r = ns_rewrap_all(cli->store, cli->kr, NS_SECRET_PREFIX, (unsigned)jobs, &hooks, &st)) != 0) {
        ns_cli_error("rewrap", r);
        return r;
    }
    printf("rewrap: %zu blobs, %zu re-wrapped, %zu already under the primary key, %zu failed\n", st.total,
           st.rewrapped, st.skipped, st.failed);
    return st.first_error;
usage:
    fputs("usage: nstance-secrets rewrap [--jobs N]\n", stderr);
    return NS_E_USAGE;
}
