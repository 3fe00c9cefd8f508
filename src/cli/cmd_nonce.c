#include "ns-build.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "common/json.h"
#include "common/log.h"
#include "common/timeutil.h"
#include "jwt/jws.h"
#include "jwt/ledger.h"
#include "jwt/nonce.h"
#include "sign/keyset.h"

/* nonce issue|verify|consume|jwks|prune: registration-nonce JWTs (doc/nonces.md). */

#define NONCE_SECRET NS_SECRET_PREFIX "registration-nonce.key"

static const char nonce_usage[] =
    "usage: nstance-secrets nonce issue --kind agent|operator --sub ID --tenant T [--shard S] [--group G]\n"
    "                                   [--config-hash HEX] [--on-demand] [--ttl DURATION]\n"
    "       nstance-secrets nonce verify JWT|-|--file FILE [--kind agent|operator]\n"
    "       nstance-secrets nonce consume JWT|-|--file FILE [--kind agent|operator]\n"
    "       nstance-secrets nonce jwks\n"
    "       nstance-secrets nonce prune [--dry-run]\n";

static int usage(void)
{
    fputs(nonce_usage, stderr);
    return NS_E_USAGE;
}

/* The registration-nonce keys: token keys from the config, else the secret (which needs store and KEKs). */
static int load_keys(ns_cli *cli, ns_keyset **ks)
{
    ns_config *cfg;
    int r;

    if ((r = ns_cli_config(cli)) != 0)
        return r;
    cfg = cli->cfg;
    if (cfg->nonce.keys.n == 0 &&
        ((r = ns_cli_store(cli)) != 0 || (r = ns_cli_keyring(cli, NS_KEYRING_STRICT)) != 0))
        return r;
    r = ns_keyset_load(&cfg->nonce.keys, cfg->nonce.pin_env, cfg->token_sessions, cli->store, cli->kr,
                       NONCE_SECRET, ks);
    if (r == NS_E_NOT_FOUND)
        fprintf(stderr,
                "nstance-secrets: error: no registration-nonce key: create one with `secret create "
                "registration-nonce.key --type ed25519`, or list token keys in registration_nonce.keys\n");
    else if (r != 0)
        ns_cli_error("loading the registration-nonce keys", r);
    return r;
}

static int print_json(const json_t *v)
{
    char *text = json_dumps(v, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    if (text == NULL)
        return NS_E_NOMEM;
    puts(text);
    ns_json_free(text);
    return fflush(stdout) == 0 ? 0 : NS_E_INVAL;
}

static int cmd_issue(ns_cli *cli, int argc, char **argv)
{
    static const struct option longopts[] = {{"kind", required_argument, NULL, 'k'},
                                             {"sub", required_argument, NULL, 's'},
                                             {"tenant", required_argument, NULL, 't'},
                                             {"shard", required_argument, NULL, 'S'},
                                             {"group", required_argument, NULL, 'g'},
                                             {"config-hash", required_argument, NULL, 'H'},
                                             {"on-demand", no_argument, NULL, 'o'},
                                             {"ttl", required_argument, NULL, 'T'},
                                             {NULL, 0, NULL, 0}};
    ns_nonce_req req;
    ns_keyset *ks = NULL;
    char *jwt = NULL;
    int have_kind = 0, opt, r;

    memset(&req, 0, sizeof(req));
    while ((opt = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (opt) {
        case 'k':
            if (ns_nonce_kind_parse(optarg, &req.kind) != 0) {
                fprintf(stderr, "nstance-secrets: error: --kind must be agent or operator\n");
                return NS_E_USAGE;
            }
            have_kind = 1;
            break;
        case 's':
            req.sub = optarg;
            break;
        case 't':
            req.tenant = optarg;
            break;
        case 'S':
            req.shard = optarg;
            break;
        case 'g':
            req.group = optarg;
            break;
        case 'H':
            req.config_hash = optarg;
            break;
        case 'o':
            req.on_demand = true;
            break;
        case 'T':
            if (ns_duration_parse(optarg, &req.ttl) != 0 || req.ttl < 1 || req.ttl > NS_NONCE_TTL_MAX) {
                fprintf(stderr,
                        "nstance-secrets: error: --ttl must be a duration of 1s..30d (90s, 5m, 3h)\n");
                return NS_E_USAGE;
            }
            break;
        default:
            return usage();
        }
    }
    if (optind != argc || !have_kind || req.sub == NULL || req.tenant == NULL)
        return usage();
    if ((r = load_keys(cli, &ks)) != 0)
        goto out;
    if ((r = ns_nonce_issue(cli->cfg, ks, &req, ns_now(), &jwt)) != 0) {
        if (r == NS_E_INVAL)
            r = NS_E_USAGE; /* a bad --sub, --tenant, ...: already logged */
        ns_cli_error("issuing the nonce", r);
        goto out;
    }
    printf("%s\n", jwt);
    r = fflush(stdout) == 0 ? 0 : NS_E_INVAL;
out:
    free(jwt);
    ns_keyset_free(ks);
    return r;
}

/* verify and consume: the JWT from argv, or `-` (stdin), or --file; one trailing newline is dropped. */
static int cmd_check(ns_cli *cli, int argc, char **argv, int consume)
{
    static const struct option longopts[] = {
        {"kind", required_argument, NULL, 'k'}, {"file", required_argument, NULL, 'f'}, {NULL, 0, NULL, 0}};
    enum ns_nonce_kind kind = NS_NONCE_ANY;
    const char *file = NULL, *text;
    ns_buf *in = NULL;
    ns_keyset *ks = NULL;
    ns_nonce *nc = NULL;
    ns_ledger *led = NULL;
    size_t n;
    int opt, r;

    while ((opt = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (opt) {
        case 'k':
            if (ns_nonce_kind_parse(optarg, &kind) != 0) {
                fprintf(stderr, "nstance-secrets: error: --kind must be agent or operator\n");
                return NS_E_USAGE;
            }
            break;
        case 'f':
            file = optarg;
            break;
        default:
            return usage();
        }
    }
    if (file == NULL && optind == argc - 1)
        file = strcmp(argv[optind], "-") == 0 ? "-" : NULL;
    else if (!(file != NULL && optind == argc))
        return usage();
    if (file != NULL) {
        if ((r = ns_cli_read_file(file, NS_JWS_MAX + 2, &in)) != 0) {
            if (r == NS_E_NOT_FOUND)
                r = NS_E_USAGE;
            goto out;
        }
        n = in->len;
        text = in->len > 0 ? (const char *)in->data : "";
        if (n > 0 && text[n - 1] == '\n')
            n--;
    } else {
        text = argv[optind];
        n = strlen(text);
    }
    if ((r = load_keys(cli, &ks)) != 0)
        goto out;
    if ((r = ns_nonce_verify(cli->cfg, ks, text, n, kind, ns_now(), &nc)) != 0) {
        ns_cli_error("nonce rejected", r);
        goto out;
    }
    if (consume) {
        if ((r = ns_cli_store(cli)) != 0)
            goto out;
        if ((r = ns_ledger_open(cli->cfg->cache_dir, cli->store, &led)) != 0) {
            ns_cli_error("opening the nonce ledger", r);
            goto out;
        }
        if ((r = ns_ledger_use(led, nc->ledger_key, nc->exp, ns_now())) != 0) {
            ns_cli_error(r == NS_E_REPLAYED ? "nonce rejected" : "recording the nonce", r);
            goto out;
        }
    }
    r = print_json(nc->claims);
out:
    ns_ledger_close(led);
    ns_nonce_free(nc);
    ns_keyset_free(ks);
    ns_buf_free(in);
    return r;
}

static int cmd_jwks(ns_cli *cli, int argc, char **argv)
{
    ns_keyset *ks = NULL;
    ns_buf *out = NULL;
    int r;

    if (argc != 1)
        return usage();
    if ((r = load_keys(cli, &ks)) != 0)
        goto out;
    if ((r = ns_jws_jwks(ks, &out)) != 0) {
        ns_cli_error("building the JWKS", r);
        goto out;
    }
    r = ns_cli_write_output(NULL, out);
out:
    ns_buf_free(out);
    ns_keyset_free(ks);
    return r;
}

/* Delete the used-nonce markers of nonces that expired more than NS_LEDGER_PRUNE_SLACK ago. */
static int cmd_prune(ns_cli *cli, int argc, char **argv)
{
    ns_marker_stats s;
    bool dry_run = false;
    int r;

    if (argc == 2 && strcmp(argv[1], "--dry-run") == 0)
        dry_run = true;
    else if (argc != 1)
        return usage();
    if ((r = ns_cli_config(cli)) != 0 || (r = ns_cli_store(cli)) != 0)
        return r;
    r = ns_ledger_prune_markers(cli->store, ns_now() - NS_LEDGER_PRUNE_SLACK, dry_run, &s);
    printf("%s %zu of %zu used-nonce markers (expired); kept %zu", dry_run ? "would remove" : "removed",
           s.removed, s.seen, s.kept);
    if (s.foreign > 0)
        printf("; left alone %zu that are not markers", s.foreign);
    putchar('\n');
    if (r != 0)
        ns_cli_error("pruning used-nonce markers", r);
    return r;
}

int ns_cmd_nonce(ns_cli *cli, int argc, char **argv)
{
    if (argc < 2)
        return usage();
    if (strcmp(argv[1], "issue") == 0)
        return cmd_issue(cli, argc - 1, argv + 1);
    if (strcmp(argv[1], "verify") == 0)
        return cmd_check(cli, argc - 1, argv + 1, 0);
    if (strcmp(argv[1], "consume") == 0)
        return cmd_check(cli, argc - 1, argv + 1, 1);
    if (strcmp(argv[1], "jwks") == 0)
        return cmd_jwks(cli, argc - 1, argv + 1);
    if (strcmp(argv[1], "prune") == 0)
        return cmd_prune(cli, argc - 1, argv + 1);
    return usage();
}
