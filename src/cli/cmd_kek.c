#include "ns-build.h"

#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"
#include "common/codec.h"
#include "keys/kek.h"
#include "keys/source.h"

/* kek generate, kek list. */

static int kek_generate(ns_cli *cli, int argc, char **argv)
{
    static const struct option longopts[] = {{"uri", required_argument, NULL, 'u'},
                                             {"mechanism", required_argument, NULL, 'm'},
                                             {"pin-env", required_argument, NULL, 'p'},
                                             {NULL, 0, NULL, 0}};
    const char *uri = NULL, *mech = NULL, *pin_env = NULL;
    ns_kek_config kc;
    ns_kek *k = NULL;
    char hex[2 * NS_KEK_ID_LEN + 1];
    int opt, r;

    while ((opt = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (opt) {
        case 'u':
            uri = optarg;
            break;
        case 'm':
            mech = optarg;
            break;
        case 'p':
            pin_env = optarg;
            break;
        default:
            goto usage;
        }
    }
    if (optind != argc || uri == NULL || mech == NULL)
        goto usage;
    /* A PIN on the command line is visible to every user through /proc; refuse it. */
    if (strstr(uri, "pin-value=") != NULL) {
        fputs(
            "nstance-secrets: error: do not put pin-value in a command-line URI (other users can read argv); "
            "use pin-source=file:/path or --pin-env VAR\n",
            stderr);
        return NS_E_USAGE;
    }
    if (ns_kek_mech_from_name(mech) == 0) {
        fprintf(stderr, "nstance-secrets: error: unknown mechanism '%.32s' (aes-gcm, aes-kwp or rsa-oaep)\n",
                mech);
        return NS_E_USAGE;
    }
    if ((r = ns_kek_pkcs11_generate(uri, mech, pin_env, 1)) != 0) {
        ns_cli_error("kek generate", r);
        return r;
    }
    memset(&kc, 0, sizeof(kc));
    kc.source = NS_KEK_SRC_PKCS11;
    kc.uri = (char *)uri;
    kc.mechanism = (char *)mech;
    kc.pin_env = (char *)pin_env;
    if ((r = ns_kek_pkcs11_open(&kc, 1, &k)) != 0) {
        ns_cli_error("kek generate: the new key cannot be used", r);
        return r;
    }
    ns_hex_encode(k->id, NS_KEK_ID_LEN, hex);
    printf("generated %s key, id %s\n", mech, hex);
    ns_kek_free(k);
    (void)cli;
    return 0;
usage:
    fputs("usage: nstance-secrets kek generate --uri URI --mechanism aes-gcm|aes-kwp|rsa-oaep [--pin-env "
          "VAR]\n",
          stderr);
    return NS_E_USAGE;
}

static int kek_list(ns_cli *cli, int argc, char **argv)
{
    int r, bad = 0;

    if (argc != 1) {
        fputs("usage: nstance-secrets kek list\n", stderr);
        return NS_E_USAGE;
    }
    if ((r = ns_cli_keyring(cli, NS_KEYRING_TOLERANT)) != 0)
        return r;
    printf("%-8s %-32s %-16s %-11s %s\n", "ROLE", "ID", "MECHANISM", "STATUS", "SOURCE");
    for (size_t i = 0; i < cli->kr->n; i++) {
        const ns_keyring_entry *e = &cli->kr->e[i];
        char hex[2 * NS_KEK_ID_LEN + 1] = "-";
        const char *mech = e->cfg->source == NS_KEK_SRC_PKCS11 ? e->cfg->mechanism : "software-aes-gcm";
        char source[NS_SOURCE_DESC_MAX];

        if (e->kek != NULL) {
            ns_hex_encode(e->kek->id, NS_KEK_ID_LEN, hex);
            snprintf(source, sizeof(source), "%s", e->kek->source);
        } else {
            ns_kek_source_describe(e->cfg, source, sizeof(source));
        }
        printf("%-8s %-32s %-16s %-11s %s\n", e->primary ? "primary" : "old", hex, mech,
               e->kek ? "reachable" : "unreachable", source);
        if (e->kek == NULL) {
            printf("         error: %s\n", ns_strerror(e->status));
            bad = e->status;
        } else if (e->kek->warning != NULL) {
            printf("         warning: %s\n", e->kek->warning);
        }
    }
    return bad;
}

int ns_cmd_kek(ns_cli *cli, int argc, char **argv)
{
    if (argc >= 2 && strcmp(argv[1], "generate") == 0)
        return kek_generate(cli, argc - 1, argv + 1);
    if (argc >= 2 && strcmp(argv[1], "list") == 0)
        return kek_list(cli, argc - 1, argv + 1);
    fputs("usage: nstance-secrets kek generate|list ...\n", stderr);
    return NS_E_USAGE;
}
