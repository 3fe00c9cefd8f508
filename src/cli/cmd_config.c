#include "ns-build.h"

#include <stdio.h>
#include <string.h>

#include "cli/cli.h"

/* config check: parse and validate the config, nothing more. The loader only reads the file: no token is
 * opened, no storage listed, no key source or metadata endpoint contacted, no folder created — so an
 * operator can check a new config on a machine without the token, and a package can check its samples. */
int ns_cmd_config(ns_cli *cli, int argc, char **argv)
{
    int r;

    if (argc != 2 || strcmp(argv[1], "check") != 0) {
        fprintf(stderr, "usage: nstance-secrets [-c CONFIG] config check\n");
        return NS_E_USAGE;
    }
    if ((r = ns_cli_config(cli)) != 0)
        return NS_E_CONFIG;
    printf("%s: ok\n", ns_config_default_path(cli->config_path));
    return 0;
}
