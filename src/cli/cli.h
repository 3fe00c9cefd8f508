/* The admin CLI: shared context and the command entry points (one file per group of commands). */
#ifndef NS_CLI_CLI_H
#define NS_CLI_CLI_H

#include "common/err.h"
#include "settings/settings.h"
#include "keys/keyring.h"
#include "store/store.h"

/* Where CLI names live: `put db.key` stores the object cluster/secret/db.key. */
#define NS_SECRET_PREFIX "cluster/secret/"

typedef struct ns_cli {
    const char *config_path;
    ns_config *cfg;
    ns_store *store;
    ns_keyring *kr;
} ns_cli;

/* Load what a command needs, once. Errors are logged. */
int ns_cli_config(ns_cli *cli) NS_WUR;
int ns_cli_store(ns_cli *cli) NS_WUR;
int ns_cli_keyring(ns_cli *cli, int mode) NS_WUR;

/* "cluster/secret/" + name, validated as an object name; caller frees. */
int ns_cli_object_name(const char *name, char **out) NS_WUR;

/* Print "nstance-secrets: error: <what>: <strerror(r)>" to stderr. */
void ns_cli_error(const char *what, int r);

/* Read all of fd (at most max bytes; larger is NS_E_TOO_LARGE) into a new secret buffer. */
int ns_cli_read_fd(int fd, const char *what, size_t max, ns_buf **out) NS_WUR;
/* The same for a file path, "-" meaning stdin. */
int ns_cli_read_file(const char *path, size_t max, ns_buf **out) NS_WUR;
/* Write to stdout (path NULL) or to path: mode 0600, through a temp file and a rename. */
int ns_cli_write_output(const char *path, const ns_buf *data) NS_WUR;

/* Commands: argv[0] is the command name. Return 0 or an error code (already reported). */
int ns_cmd_put(ns_cli *cli, int argc, char **argv);
int ns_cmd_get(ns_cli *cli, int argc, char **argv);
int ns_cmd_list(ns_cli *cli, int argc, char **argv);
int ns_cmd_delete(ns_cli *cli, int argc, char **argv);
int ns_cmd_kek(ns_cli *cli, int argc, char **argv);
int ns_cmd_verify(ns_cli *cli, int argc, char **argv);
int ns_cmd_rewrap(ns_cli *cli, int argc, char **argv);
int ns_cmd_secret(ns_cli *cli, int argc, char **argv);
int ns_cmd_ca(ns_cli *cli, int argc, char **argv);
int ns_cmd_nonce(ns_cli *cli, int argc, char **argv);
int ns_cmd_config(ns_cli *cli, int argc, char **argv);

#endif
