#include "ns-build.h"

#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "agent/agent.h"
#include "common/log.h"
#include "common/secmem.h"
#include "common/timeutil.h"

static const char usage[] =
    "usage: nstance-secrets-agent [-v] COMMAND [OPTIONS]\n"
    "       nstance-secrets-agent --help | --version\n"
    "\n"
    "  enroll --server URL --ca FILE --nonce-file FILE --dir DIR [--hostname H] [--ipv4 A] [--ipv6 A]\n"
    "        make an Ed25519 identity key in DIR and register it with the server (the nonce file is\n"
    "        deleted once the certificate is stored)\n"
    "  sync --server URL --dir DIR [--root /] [--on-change CMD]\n"
    "        fetch this machine's files and write the changed ones under --root\n"
    "        (and the CA bundle; renews at once when the certificate is not from the newest CA)\n"
    "  renew --server URL --dir DIR\n"
    "        renew the certificate now (same key); stores the new certificate and CA bundle\n"
    "  run --server URL --dir DIR [--root /] [--interval 60s] [--on-change CMD]\n"
    "        sync every interval (± 10%), renew the certificate at two thirds of its lifetime; stops on\n"
    "        SIGTERM or SIGINT\n"
    "\n"
    "Exit codes: 0 ok, 1 internal, 2 usage, 3 not enrolled or unknown to the server, 4 TLS or certificate\n"
    "refused, 5 server unreachable or unavailable, 6 local file error, 8 invalid data from the server,\n"
    "10 nonce refused (malformed, expired, other cluster), 11 nonce already used, 12 --on-change failed.\n"
    "Details: doc/agent.md.\n";

enum {
    OPT_SERVER = 256,
    OPT_CA,
    OPT_NONCE,
    OPT_DIR,
    OPT_ROOT,
    OPT_ON_CHANGE,
    OPT_INTERVAL,
    OPT_HOST,
    OPT_V4,
    OPT_V6
};

static const struct option longopts[] = {
    {"server", required_argument, NULL, OPT_SERVER},
    {"ca", required_argument, NULL, OPT_CA},
    {"nonce-file", required_argument, NULL, OPT_NONCE},
    {"dir", required_argument, NULL, OPT_DIR},
    {"root", required_argument, NULL, OPT_ROOT},
    {"on-change", required_argument, NULL, OPT_ON_CHANGE},
    {"interval", required_argument, NULL, OPT_INTERVAL},
    {"hostname", required_argument, NULL, OPT_HOST},
    {"ipv4", required_argument, NULL, OPT_V4},
    {"ipv6", required_argument, NULL, OPT_V6},
    {"verbose", no_argument, NULL, 'v'},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
};

/* Which options each command takes. */
static bool allowed(const char *cmd, int opt)
{
    if (opt == OPT_SERVER || opt == OPT_DIR)
        return true;
    if (strcmp(cmd, "renew") == 0)
        return false;
    if (strcmp(cmd, "enroll") == 0)
        return opt == OPT_CA || opt == OPT_NONCE || opt == OPT_HOST || opt == OPT_V4 || opt == OPT_V6;
    if (opt == OPT_ROOT || opt == OPT_ON_CHANGE)
        return true;
    return strcmp(cmd, "run") == 0 && opt == OPT_INTERVAL;
}

int main(int argc, char **argv)
{
    ns_agent_opts o;
    const char *cmd;
    bool hook_failed = false;
    int opt, r = NS_E_USAGE;

    ns_log_set_program("nstance-secrets-agent");
    ns_secmem_harden_process();
    memset(&o, 0, sizeof(o));
    o.root = "/";
    o.interval = 60;
    while (optind < argc && (strcmp(argv[optind], "-v") == 0 || strcmp(argv[optind], "--verbose") == 0)) {
        ns_log_verbose();
        optind++;
    }
    if (optind < argc && (strcmp(argv[optind], "-h") == 0 || strcmp(argv[optind], "--help") == 0)) {
        fputs(usage, stdout);
        return 0;
    }
    if (optind < argc && strcmp(argv[optind], "--version") == 0) {
        puts(PACKAGE_STRING);
        return 0;
    }
    if (optind >= argc) {
        fputs(usage, stderr);
        return NS_AGENT_EXIT_USAGE;
    }
    cmd = argv[optind];
    if (strcmp(cmd, "enroll") != 0 && strcmp(cmd, "sync") != 0 && strcmp(cmd, "run") != 0 &&
        strcmp(cmd, "renew") != 0) {
        fprintf(stderr, "nstance-secrets-agent: unknown command '%.40s'\n\n%s", cmd, usage);
        return NS_AGENT_EXIT_USAGE;
    }
    argc -= optind;
    argv += optind;
    optind = 0;
    while ((opt = getopt_long(argc, argv, "vh", longopts, NULL)) != -1) {
        if (opt == 'v') {
            ns_log_verbose();
            continue;
        }
        if (opt == 'h') {
            fputs(usage, stdout);
            return 0;
        }
        if (opt == '?' || !allowed(cmd, opt)) {
            if (opt != '?')
                fprintf(stderr, "nstance-secrets-agent: %s does not take that option\n", cmd);
            fputs(usage, stderr);
            return NS_AGENT_EXIT_USAGE;
        }
        switch (opt) {
        case OPT_SERVER:
            o.server = optarg;
            break;
        case OPT_CA:
            o.ca = optarg;
            break;
        case OPT_NONCE:
            o.nonce_file = optarg;
            break;
        case OPT_DIR:
            o.dir = optarg;
            break;
        case OPT_ROOT:
            o.root = optarg;
            break;
        case OPT_ON_CHANGE:
            o.on_change = optarg;
            break;
        case OPT_INTERVAL:
            if (ns_duration_parse(optarg, &o.interval) != 0) {
                fprintf(stderr, "nstance-secrets-agent: --interval: a duration like 30s, 5m\n");
                return NS_AGENT_EXIT_USAGE;
            }
            break;
        case OPT_HOST:
            o.hostname = optarg;
            break;
        case OPT_V4:
            o.ipv4 = optarg;
            break;
        case OPT_V6:
            o.ipv6 = optarg;
            break;
        default:
            break;
        }
    }
    if (optind != argc) {
        fprintf(stderr, "nstance-secrets-agent: unexpected argument '%.40s'\n", argv[optind]);
        return NS_AGENT_EXIT_USAGE;
    }
    if (o.server == NULL || o.dir == NULL) {
        fprintf(stderr, "nstance-secrets-agent: %s needs --server and --dir\n", cmd);
        return NS_AGENT_EXIT_USAGE;
    }
    if (strcmp(cmd, "enroll") == 0) {
        r = ns_agent_enroll(&o);
        if (r == 0)
            printf("enrolled: %s/identity.crt\n", o.dir);
    } else if (strcmp(cmd, "sync") == 0) {
        r = ns_agent_sync(&o, &hook_failed);
        if (r == 0 && hook_failed)
            return NS_AGENT_EXIT_HOOK;
    } else if (strcmp(cmd, "renew") == 0) {
        r = ns_agent_renew(&o);
        if (r == 0)
            printf("renew: new certificate\n");
    } else {
        r = ns_agent_run(&o);
    }
    if (r != 0)
        fprintf(stderr, "nstance-secrets-agent: %s failed: %s\n", cmd, ns_strerror(r));
    return ns_agent_exit_code(r);
}
