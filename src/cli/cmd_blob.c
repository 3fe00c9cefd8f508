#include "ns-build.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli/cli.h"
#include "common/log.h"
#include "common/secmem.h"
#include "ca/ca.h"
#include "envelope/envelope.h"
#include "secrets/document.h"

/* put, get, list, delete. */

/* Secrets that only their own commands write or delete: a raw blob in their place (put) stops the server
 * loading CA or nonce keys on every refresh, and deleting one loses a key (issue 12, item 10). */
static const struct {
    const char *object;
    const char *commands;
} reserved[] = {
    {NS_CA_KEY_SECRET, "`ca init`, `ca rotate` and `ca retire`"},
    {NS_SECRET_PREFIX "registration-nonce.key", "`secret create|rotate|promote|retire`"},
};

static int refuse_reserved(const char *cmd, const char *object)
{
    for (size_t i = 0; i < sizeof(reserved) / sizeof(reserved[0]); i++) {
        if (strcmp(object, reserved[i].object) == 0) {
            fprintf(stderr,
                    "nstance-secrets: error: %s is reserved: only %s change it; `%s` does not touch it\n",
                    object + strlen(NS_SECRET_PREFIX), reserved[i].commands, cmd);
            return NS_E_NAME;
        }
    }
    return 0;
}

/* put must not turn a typed secret (one `secret create` made: a key list its consumers parse) into a raw
 * blob. The version seen goes to *version (NULL when the object is absent) for a compare-and-swap. A blob
 * that does not open with the configured keys (another KEK, damaged) is not a secret anyone can use:
 * put may replace it, as before. */
static int refuse_typed(ns_cli *cli, const char *object, char **version)
{
    ns_buf *blob = NULL, *pt = NULL;
    ns_secret_doc *doc = NULL;
    int r;

    if ((r = ns_store_get(cli->store, object, NS_BLOB_MAX, &blob, version)) != 0) {
        if (r == NS_E_NOT_FOUND)
            r = 0;
        else
            ns_cli_error(object, r);
        goto out;
    }
    r = 0;
    if (ns_envelope_open(cli->kr, object, blob->data, blob->len, &pt, NULL) == 0 &&
        ns_doc_parse(pt->data, pt->len, &doc) == 0) {
        fprintf(
            stderr,
            "nstance-secrets: error: %s is a typed secret (a key list): change it with `secret rotate`, or "
            "`delete` it first to store a plain blob under its name\n",
            object + strlen(NS_SECRET_PREFIX));
        r = NS_E_EXISTS;
    }
out:
    if (r != 0) {
        free(*version);
        *version = NULL;
    }
    ns_doc_free(doc);
    ns_buf_free(blob);
    ns_buf_free(pt);
    return r;
}

int ns_cmd_put(ns_cli *cli, int argc, char **argv)
{
    static const struct option longopts[] = {{"create", no_argument, NULL, 'C'}, {NULL, 0, NULL, 0}};
    const char *file = "-";
    char *name = NULL, *version = NULL;
    ns_buf *pt = NULL, *blob = NULL;
    int create = 0, fd = -1, opt, r = NS_E_USAGE;

    while ((opt = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        if (opt != 'C')
            goto usage;
        create = 1;
    }
    if (argc - optind < 1 || argc - optind > 2)
        goto usage;
    if (argc - optind == 2)
        file = argv[optind + 1];
    if ((r = ns_cli_object_name(argv[optind], &name)) != 0 || (r = refuse_reserved("put", name)) != 0)
        goto out;
    if (strcmp(file, "-") == 0) {
        fd = STDIN_FILENO;
    } else if ((fd = open(file, O_RDONLY | O_CLOEXEC)) < 0) {
        fprintf(stderr, "nstance-secrets: error: cannot open %s: %s\n", file, strerror(errno));
        r = errno == ENOENT ? NS_E_NOT_FOUND : NS_E_INVAL;
        goto out;
    }
    if ((r = ns_cli_read_fd(fd, strcmp(file, "-") == 0 ? "standard input" : file, NS_PLAINTEXT_MAX, &pt)) !=
        0)
        goto out;
    if ((r = ns_cli_store(cli)) != 0 || (r = ns_cli_keyring(cli, NS_KEYRING_STRICT)) != 0)
        goto out;
    if (!create && (r = refuse_typed(cli, name, &version)) != 0)
        goto out;
    if ((r = ns_envelope_seal(cli->kr, name, pt->data, pt->len, &blob)) != 0) {
        ns_cli_error(name, r);
        goto out;
    }
    /* Replace only what was checked: a typed secret created meanwhile is not overwritten either. */
    if ((r = ns_store_put(cli->store, name, blob->data, blob->len,
                          create            ? NS_PUT_CREATE
                          : version != NULL ? NS_PUT_IF_MATCH
                                            : NS_PUT_CREATE,
                          version)) != 0) {
        if (r == NS_E_CONFLICT || (r == NS_E_EXISTS && !create) || (r == NS_E_NOT_FOUND && version != NULL))
            fprintf(stderr,
                    "nstance-secrets: error: %s changed while it was being stored; nothing written, "
                    "try again\n",
                    argv[optind]);
        else
            ns_cli_error(name, r);
        goto out;
    }
    ns_log(NS_LOG_INFO, "stored %s (%zu bytes)", name, pt->len);
    r = 0;
    goto out;
usage:
    fputs("usage: nstance-secrets put NAME [FILE|-] [--create]\n", stderr);
    r = NS_E_USAGE;
out:
    if (fd > STDIN_FILENO)
        close(fd);
    ns_buf_free(pt);
    ns_buf_free(blob);
    free(version);
    free(name);
    return r;
}

int ns_cmd_get(ns_cli *cli, int argc, char **argv)
{
    static const struct option longopts[] = {{"output", required_argument, NULL, 'o'}, {NULL, 0, NULL, 0}};
    const char *output = NULL;
    char *name = NULL;
    ns_buf *blob = NULL, *pt = NULL;
    int opt, r = NS_E_USAGE;

    while ((opt = getopt_long(argc, argv, "o:", longopts, NULL)) != -1) {
        if (opt != 'o')
            goto usage;
        output = optarg;
    }
    if (argc - optind != 1)
        goto usage;
    if ((r = ns_cli_object_name(argv[optind], &name)) != 0)
        goto out;
    if ((r = ns_cli_store(cli)) != 0 || (r = ns_cli_keyring(cli, NS_KEYRING_STRICT)) != 0)
        goto out;
    if ((r = ns_store_get(cli->store, name, NS_BLOB_MAX, &blob, NULL)) != 0 ||
        (r = ns_envelope_open(cli->kr, name, blob->data, blob->len, &pt, NULL)) != 0) {
        ns_cli_error(name, r);
        goto out;
    }
    r = ns_cli_write_output(output, pt);
    goto out;
usage:
    fputs("usage: nstance-secrets get NAME [-o FILE]\n", stderr);
    r = NS_E_USAGE;
out:
    ns_buf_free(blob);
    ns_buf_free(pt);
    free(name);
    return r;
}

int ns_cmd_list(ns_cli *cli, int argc, char **argv)
{
    ns_strv names = NS_STRV_INIT;
    char prefix[NS_NAME_MAX + 1];
    int r;

    if (argc > 2) {
        fputs("usage: nstance-secrets list [PREFIX]\n", stderr);
        return NS_E_USAGE;
    }
    if (snprintf(prefix, sizeof(prefix), "%s%s", NS_SECRET_PREFIX, argc == 2 ? argv[1] : "") >=
        (int)sizeof(prefix))
        return NS_E_NAME;
    if ((r = ns_cli_store(cli)) != 0)
        return r;
    if ((r = ns_store_list(cli->store, prefix, &names)) != 0) {
        ns_cli_error("list", r);
        return r;
    }
    for (size_t i = 0; i < names.n; i++)
        printf("%s\n", names.v[i] + strlen(NS_SECRET_PREFIX));
    ns_strv_clear(&names);
    return 0;
}

int ns_cmd_delete(ns_cli *cli, int argc, char **argv)
{
    char *name = NULL;
    int r;

    if (argc != 2) {
        fputs("usage: nstance-secrets delete NAME\n", stderr);
        return NS_E_USAGE;
    }
    if ((r = ns_cli_object_name(argv[1], &name)) != 0)
        return r;
    if ((r = refuse_reserved("delete", name)) != 0) {
        free(name);
        return r;
    }
    if ((r = ns_cli_store(cli)) == 0 && (r = ns_store_delete(cli->store, name)) != 0)
        ns_cli_error(name, r);
    free(name);
    return r;
}
