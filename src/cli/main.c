#include "ns-build.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"
#include "common/fdio.h"
#include "common/log.h"
#include "common/secmem.h"

static const char usage[] =
    "usage: nstance-secrets [-c CONFIG] [-v] COMMAND [ARGS]\n"
    "\n"
    "  put NAME [FILE|-] [--create]   encrypt FILE (or stdin) and store it as NAME\n"
    "  get NAME [-o FILE]             decrypt NAME to stdout (or FILE, mode 0600)\n"
    "  list [PREFIX]                  names of stored secrets\n"
    "  delete NAME                    remove a stored secret\n"
    "  kek generate --uri URI --mechanism aes-gcm|aes-kwp|rsa-oaep [--pin-env VAR]\n"
    "                                 create an Encryption Key in the token\n"
    "  kek list                       every configured Encryption Key and whether it is reachable\n"
    "  verify                         open every blob; counts per Encryption Key id\n"
    "  rewrap [--jobs N]              re-wrap every blob under the primary Encryption Key\n"
    "  secret create NAME --type TYPE [--from FILE] [--bytes N]\n"
    "  secret rotate NAME [--from FILE] [--pending] | promote NAME | retire NAME\n"
    "  secret show NAME | list | export NAME --format pem-bundle|pem|public-pem-bundle|jwks|raw [-o FILE]\n"
    "                                 multi-key secrets and their rotation (doc/secrets.md)\n"
    "  ca init|rotate|retire|bundle|list|issue ...\n"
    "                                 the cluster CA and certificate issuance (doc/ca.md)\n"
    "  nonce issue --kind agent|operator --sub ID --tenant T [--shard S] [--group G] [--config-hash H]\n"
    "              [--on-demand] [--ttl DURATION]\n"
    "  nonce verify|consume JWT|-|--file FILE [--kind K] | nonce jwks | nonce prune [--dry-run]\n"
    "                                 registration-nonce JWTs (doc/nonces.md)\n"
    "  config check                   validate CONFIG (no token, storage or network is touched)\n"
    "\n"
    "  -c, --config FILE              the config\n"
    "  -v, --verbose                  log more (twice: debug)\n"
    "  -h, --help                     this help\n"
    "      --version                  the version\n"
    "\n"
    "CONFIG defaults to $NSTANCE_SECRETS_CONFIG, then /etc/nstance/secrets.yaml.\n"
    "Exit codes: 0 ok, 1 internal, 2 usage/config, 3 not found, 4 integrity or authentication failure,\n"
    "5 token unavailable, 6 storage error, 7 exists or conflict, 8 bad input, 9 expired or not yet valid,\n"
    "10 wrong claims (cluster, kind), 11 nonce already used.\n";

static const struct {
    const char *name;
    int (*fn)(ns_cli *, int, char **);
} commands[] = {
    {"put", ns_cmd_put}, {"get", ns_cmd_get},       {"list", ns_cmd_list},     {"delete", ns_cmd_delete},
    {"kek", ns_cmd_kek}, {"verify", ns_cmd_verify}, {"rewrap", ns_cmd_rewrap}, {"secret", ns_cmd_secret},
    {"ca", ns_cmd_ca},   {"nonce", ns_cmd_nonce},   {"config", ns_cmd_config},
};

void ns_cli_error(const char *what, int r)
{
    fprintf(stderr, "nstance-secrets: error: %s: %s\n", what, ns_strerror(r));
}

int ns_cli_config(ns_cli *cli)
{
    int r;
    if (cli->cfg != NULL)
        return 0;
    if ((r = ns_config_load(ns_config_default_path(cli->config_path), &cli->cfg)) != 0)
        ns_cli_error(ns_config_default_path(cli->config_path), r == NS_E_NOT_FOUND ? NS_E_CONFIG : r);
    return r == NS_E_NOT_FOUND ? NS_E_CONFIG : r;
}

int ns_cli_store(ns_cli *cli)
{
    int r;
    if (cli->store != NULL)
        return 0;
    if ((r = ns_cli_config(cli)) != 0)
        return r;
    if ((r = ns_store_open(&cli->cfg->storage, &cli->store)) != 0)
        ns_cli_error("opening object storage", r);
    return r;
}

int ns_cli_keyring(ns_cli *cli, int mode)
{
    int r;
    if (cli->kr != NULL)
        return 0;
    if ((r = ns_cli_config(cli)) != 0)
        return r;
    if ((r = ns_keyring_load(&cli->cfg->keys, mode, &cli->kr)) != 0)
        ns_cli_error("loading encryption keys", r);
    return r;
}

int ns_cli_object_name(const char *name, char **out)
{
    size_t n = strlen(NS_SECRET_PREFIX) + strlen(name) + 1;
    char *s = malloc(n);
    int r;

    if (s == NULL)
        return NS_E_NOMEM;
    snprintf(s, n, "%s%s", NS_SECRET_PREFIX, name);
    if (name[0] == '\0' || (r = ns_store_name_check(s)) != 0) {
        fprintf(stderr,
                "nstance-secrets: error: invalid name '%.100s': use segments of A-Z a-z 0-9 . _ - separated "
                "by '/', "
                "not starting with '.'\n",
                name);
        free(s);
        return NS_E_NAME;
    }
    *out = s;
    return 0;
}

int ns_cli_read_fd(int fd, const char *what, size_t max, ns_buf **out)
{
    int r = ns_fd_read_all(fd, max, true, out);

    if (r == NS_E_STORAGE) {
        fprintf(stderr, "nstance-secrets: error: reading %s: %s\n", what, strerror(errno));
        r = NS_E_INVAL;
    } else if (r == NS_E_TOO_LARGE) {
        fprintf(stderr, "nstance-secrets: error: %s is larger than %zu bytes\n", what, max);
    }
    return r;
}

/* Write to a temporary file beside `path`, then rename: the output is either complete or absent. */
static int write_file(const char *path, const ns_buf *pt)
{
    const char *step = NULL;
    int r = ns_file_write_atomic(path, pt->data, pt->len, 0600, &step);

    if (r == NS_E_STORAGE) {
        fprintf(stderr, "nstance-secrets: error: writing %s: %s\n", path, strerror(errno));
        r = NS_E_INVAL;
    }
    return r;
}

int ns_cli_write_output(const char *path, const ns_buf *data)
{
    if (path != NULL)
        return write_file(path, data);
    if (ns_fd_write_all(STDOUT_FILENO, data->data, data->len) != 0) {
        fprintf(stderr, "nstance-secrets: error: writing standard output: %s\n", strerror(errno));
        return NS_E_INVAL;
    }
    return 0;
}

int ns_cli_read_file(const char *path, size_t max, ns_buf **out)
{
    int fd, r;
    if (strcmp(path, "-") == 0)
        return ns_cli_read_fd(STDIN_FILENO, "standard input", max, out);
    if ((fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK)) < 0) {
        fprintf(stderr, "nstance-secrets: error: cannot open %s: %s\n", path, strerror(errno));
        return errno == ENOENT ? NS_E_NOT_FOUND : NS_E_INVAL;
    }
    r = ns_cli_read_fd(fd, path, max, out);
    close(fd);
    return r;
}

int main(int argc, char **argv)
{
    ns_cli cli = {0};
    int r;

    ns_secmem_harden_process();
    /* '+': stop at the command; its own options are parsed by the command. */
    if ((r = ns_config_options(argc, argv, "+c:vh", usage, &cli.config_path)) >= 0)
        return r;
    if (optind >= argc) {
        fputs(usage, stderr);
        return 2;
    }
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++) {
        if (strcmp(argv[optind], commands[i].name) == 0) {
            int sub = optind;
            optind = 0; /* full reset: forget main's "+" (stop at first non-option) for the command */
            r = commands[i].fn(&cli, argc - sub, argv + sub);
            goto done;
        }
    }
    fprintf(stderr, "nstance-secrets: unknown command '%.40s'\n\n%s", argv[optind], usage);
    return 2;
done:
    ns_keyring_free(cli.kr);
    ns_store_close(cli.store);
    ns_config_free(cli.cfg);
    return ns_err_exit_code(r);
}
