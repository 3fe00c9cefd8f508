#include "ns-build.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "ca/ca.h"
#include "cli/cli.h"
#include "common/log.h"
#include "common/timeutil.h"
#include "secrets/document.h"

/* ca init|rotate|retire|bundle|list|issue */

static const char ca_usage[] =
    "usage: nstance-secrets ca init [--key pkcs11:URI] [--type ed25519|ecdsa-p256|ecdsa-p384|rsa-3072]\n"
    "       nstance-secrets ca rotate [--key pkcs11:URI] [--type TYPE]\n"
    "       nstance-secrets ca retire\n"
    "       nstance-secrets ca bundle [--cross] [-o FILE]\n"
    "       nstance-secrets ca list\n"
    "       nstance-secrets ca issue (--csr FILE | --public-key FILE) --cn CN --tenant T\n"
    "              [--role agent|operator] [--kind client|server] [--dns NAME]... [--ip ADDR]... [--uri "
    "URI]...\n"
    "              [--ttl DURATION] [--shard S] [-o FILE]\n";

#define INPUT_MAX (64 * 1024)

static int usage(void)
{
    fputs(ca_usage, stderr);
    return NS_E_USAGE;
}

static int ready(ns_cli *cli)
{
    int r;
    if ((r = ns_cli_config(cli)) != 0 || (r = ns_cli_store(cli)) != 0 ||
        (r = ns_cli_keyring(cli, NS_KEYRING_STRICT)) != 0)
        return r;
    return 0;
}

static int64_t cert_not_after(X509 *x)
{
    struct tm tm;
    if (ASN1_TIME_to_tm(X509_get0_notAfter(x), &tm) != 1)
        return 0;
    return (int64_t)timegm(&tm);
}

static void describe(const char *what, X509 *x)
{
    char serial[41] = "?", id[NS_KEY_ID_MAX] = "?", na[32];
    const ns_keytype *t = NULL;

    if (ns_cert_serial_hex(x, serial) != 0 || ns_ca_cert_key_id(x, id) != 0 ||
        ns_keytype_classify(X509_get0_pubkey(x), &t) != 0)
        ERR_clear_error();
    ns_time_format(cert_not_after(x), na);
    printf("%s: key id %s (%s), serial %s, valid until %s\n", what, id, t != NULL ? t->name : "?", serial,
           na);
}

static int keyspec_opts(int argc, char **argv, ns_ca_keyspec *ks)
{
    static const struct option longopts[] = {
        {"key", required_argument, NULL, 'k'}, {"type", required_argument, NULL, 't'}, {NULL, 0, NULL, 0}};
    int opt;

    memset(ks, 0, sizeof(*ks));
    while ((opt = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        if (opt == 'k')
            ks->key_uri = optarg;
        else if (opt == 't')
            ks->type = optarg;
        else
            return usage();
    }
    if (optind != argc)
        return usage();
    if (ks->key_uri != NULL && strncmp(ks->key_uri, "pkcs11:", 7) != 0) {
        fputs("nstance-secrets: error: --key takes a PKCS#11 URI (pkcs11:...)\n", stderr);
        return NS_E_USAGE;
    }
    /* A PIN on the command line is visible to every user through /proc; refuse it. */
    if (ks->key_uri != NULL && strstr(ks->key_uri, "pin-value=") != NULL) {
        fputs(
            "nstance-secrets: error: do not put pin-value in a command-line URI (other users can read argv); "
            "use pin-source=file:/path or ca.pin_env\n",
            stderr);
        return NS_E_USAGE;
    }
    if (ks->type != NULL) {
        const ns_keytype *t = ns_keytype_find(ks->type);
        if (t == NULL || t->jws_alg == NULL) {
            fprintf(stderr,
                    "nstance-secrets: error: --type %.32s is not a signing key type (ed25519, ecdsa-p256, "
                    "ecdsa-p384, rsa-2048, rsa-3072, rsa-4096)\n",
                    ks->type);
            return NS_E_USAGE;
        }
    }
    return 0;
}

static int ca_init(ns_cli *cli, int argc, char **argv)
{
    ns_ca_keyspec ks;
    X509 *x = NULL;
    int r;

    if ((r = keyspec_opts(argc, argv, &ks)) != 0)
        return r;
    if ((r = ready(cli)) != 0)
        return r;
    if ((r = ns_ca_init(cli->cfg, cli->store, cli->kr, &ks, &x)) != 0) {
        ns_cli_error("ca init", r);
        return r;
    }
    describe("created CA certificate", x);
    X509_free(x);
    return 0;
}

static int ca_rotate(ns_cli *cli, int argc, char **argv)
{
    ns_ca_keyspec ks;
    X509 *x = NULL, *cross = NULL;
    int r;

    if ((r = keyspec_opts(argc, argv, &ks)) != 0)
        return r;
    if ((r = ready(cli)) != 0)
        return r;
    if ((r = ns_ca_rotate(cli->cfg, cli->store, cli->kr, &ks, &x, &cross)) != 0) {
        ns_cli_error("ca rotate", r);
        return r;
    }
    describe("new CA certificate (issues from now on)", x);
    describe("cross-signed by the previous CA", cross);
    X509_free(x);
    X509_free(cross);
    return 0;
}

static int ca_retire(ns_cli *cli, int argc, char **argv)
{
    X509 *x = NULL;
    int r;

    if (argc != 1)
        return usage();
    if ((r = ready(cli)) != 0)
        return r;
    if ((r = ns_ca_retire(cli->cfg, cli->store, cli->kr, &x)) != 0) {
        ns_cli_error("ca retire", r);
        return r;
    }
    describe("retired CA certificate", x);
    X509_free(x);
    return 0;
}

/* The bundle as far as the CA keys vouch for it (doc/ca.md, "What is trusted"); errors reported as `what`. */
static int load_trusted(ns_cli *cli, const char *what, ns_ca **ca)
{
    int r = ready(cli);
    if (r == 0 && (r = ns_ca_load(cli->cfg, cli->store, cli->kr, ca)) != 0)
        ns_cli_error(what, r);
    return r;
}

static int ca_bundle(ns_cli *cli, int argc, char **argv)
{
    static const struct option longopts[] = {
        {"cross", no_argument, NULL, 'x'}, {"output", required_argument, NULL, 'o'}, {NULL, 0, NULL, 0}};
    const char *output = NULL;
    int cross = 0, opt, r;
    ns_ca *ca = NULL;
    ns_buf *pem = NULL;

    while ((opt = getopt_long(argc, argv, "o:", longopts, NULL)) != -1) {
        if (opt == 'x')
            cross = 1;
        else if (opt == 'o')
            output = optarg;
        else
            return usage();
    }
    if (optind != argc)
        return usage();
    if ((r = load_trusted(cli, "ca bundle", &ca)) != 0)
        return r;
    /* --cross: the cross-signed certificates alone, as intermediates for those who trust an older CA. */
    if ((r = cross ? ns_ca_cross_pem(cli->store, ca, &pem) : ns_ca_bundle_pem(ca->certs, ca->n, &pem)) != 0)
        goto fail;
    if ((r = ns_cli_write_output(output, pem)) != 0)
        goto fail;
    goto out;
fail:
    ns_cli_error("ca bundle", r);
out:
    ns_buf_free(pem);
    ns_ca_free(ca);
    return r;
}

static int ca_list(ns_cli *cli, int argc, char **argv)
{
    ns_ca *ca = NULL;
    int r;

    if (argc != 1)
        return usage();
    if ((r = load_trusted(cli, "ca list", &ca)) != 0)
        return r;
    for (size_t i = 0; i < ca->n; i++)
        describe(i == 0 ? "issuing" : "trusted", ca->certs[i]);
    ns_ca_free(ca);
    return 0;
}

/* ---- issue ---- */

static int read_public_key(const char *path, EVP_PKEY **out)
{
    ns_buf *in = NULL;
    BIO *bio = NULL;
    int r;

    if ((r = ns_cli_read_file(path, INPUT_MAX, &in)) != 0)
        return r;
    r = NS_E_FORMAT;
    if ((bio = BIO_new_mem_buf(in->data, (int)in->len)) != NULL &&
        (*out = PEM_read_bio_PUBKEY(bio, NULL, NULL, NULL)) != NULL)
        r = 0;
    if (r != 0)
        fprintf(stderr, "nstance-secrets: error: %s: not a PEM public key (SubjectPublicKeyInfo)\n", path);
    ERR_clear_error();
    BIO_free(bio);
    ns_buf_free(in);
    return r;
}

/* A PKCS#10 request: parsed, its self-signature checked; its public key (and CN, if --cn is absent) used.
 * Everything else in it (extensions, other name parts) is ignored: policy comes from the command line. */
static int read_csr(const char *path, EVP_PKEY **out, char **cn)
{
    ns_buf *in = NULL;
    BIO *bio = NULL;
    X509_REQ *req = NULL;
    EVP_PKEY *pub = NULL;
    int r = NS_E_FORMAT;

    if ((r = ns_cli_read_file(path, INPUT_MAX, &in)) != 0)
        return r;
    r = NS_E_FORMAT;
    if ((bio = BIO_new_mem_buf(in->data, (int)in->len)) == NULL ||
        (req = PEM_read_bio_X509_REQ(bio, NULL, NULL, NULL)) == NULL) {
        fprintf(stderr, "nstance-secrets: error: %s: not a PEM certificate request (PKCS#10)\n", path);
        goto out;
    }
    if ((pub = X509_REQ_get_pubkey(req)) == NULL || X509_REQ_verify(req, pub) != 1) {
        fprintf(stderr, "nstance-secrets: error: %s: the request's signature does not verify\n", path);
        r = NS_E_INTEGRITY;
        goto out;
    }
    {
        X509_NAME *nm = X509_REQ_get_subject_name(req);
        int idx = X509_NAME_get_index_by_NID(nm, NID_commonName, -1);
        if (idx >= 0) {
            ASN1_STRING *d = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(nm, idx));
            unsigned char *utf8 = NULL;
            int len = ASN1_STRING_to_UTF8(&utf8, d);
            if (len > 0 && (size_t)len == strlen((char *)utf8))
                *cn = strdup((char *)utf8);
            OPENSSL_free(utf8);
        }
    }
    *out = pub;
    pub = NULL;
    r = 0;
out:
    ERR_clear_error();
    EVP_PKEY_free(pub);
    X509_REQ_free(req);
    BIO_free(bio);
    ns_buf_free(in);
    return r;
}

static int bad(const char *what, const char *v)
{
    fprintf(stderr, "nstance-secrets: error: %s '%.80s' is not valid\n", what, v);
    return NS_E_INVAL;
}

static int ca_issue(ns_cli *cli, int argc, char **argv)
{
    static const struct option longopts[] = {{"csr", required_argument, NULL, 'C'},
                                             {"public-key", required_argument, NULL, 'P'},
                                             {"cn", required_argument, NULL, 'n'},
                                             {"tenant", required_argument, NULL, 't'},
                                             {"role", required_argument, NULL, 'r'},
                                             {"kind", required_argument, NULL, 'k'},
                                             {"dns", required_argument, NULL, 'd'},
                                             {"ip", required_argument, NULL, 'i'},
                                             {"uri", required_argument, NULL, 'u'},
                                             {"ttl", required_argument, NULL, 'T'},
                                             {"shard", required_argument, NULL, 's'},
                                             {"output", required_argument, NULL, 'o'},
                                             {NULL, 0, NULL, 0}};
    const char *csr = NULL, *pubfile = NULL, *cn = NULL, *tenant = NULL, *role = NULL, *kind = "client",
               *ttl = NULL, *shard = NULL, *output = NULL;
    ns_strv dns = NS_STRV_INIT, ip = NS_STRV_INIT, uri = NS_STRV_INIT;
    ns_cert_req req;
    EVP_PKEY *pub = NULL;
    char *csr_cn = NULL;
    ns_ca *ca = NULL;
    ns_issued *x = NULL;
    ns_buf *pem = NULL;
    int64_t life = 0, now = ns_now();
    int opt, r = NS_E_USAGE;

    while ((opt = getopt_long(argc, argv, "o:", longopts, NULL)) != -1) {
        switch (opt) {
        case 'C':
            csr = optarg;
            break;
        case 'P':
            pubfile = optarg;
            break;
        case 'n':
            cn = optarg;
            break;
        case 't':
            tenant = optarg;
            break;
        case 'r':
            role = optarg;
            break;
        case 'k':
            kind = optarg;
            break;
        case 'd':
            if (ns_cert_check_dns(optarg) != 0) {
                r = bad("--dns", optarg);
                goto out;
            }
            if ((r = ns_strv_push(&dns, optarg)) != 0)
                goto out;
            break;
        case 'i':
            if (ns_cert_check_ip(optarg) != 0) {
                r = bad("--ip", optarg);
                goto out;
            }
            if ((r = ns_strv_push(&ip, optarg)) != 0)
                goto out;
            break;
        case 'u':
            if (ns_cert_check_uri(optarg) != 0) {
                r = bad("--uri", optarg);
                goto out;
            }
            if ((r = ns_strv_push(&uri, optarg)) != 0)
                goto out;
            break;
        case 'T':
            ttl = optarg;
            break;
        case 's':
            shard = optarg;
            break;
        case 'o':
            output = optarg;
            break;
        default:
            r = usage();
            goto out;
        }
    }
    r = NS_E_USAGE;
    if (optind != argc || (csr == NULL) == (pubfile == NULL) || tenant == NULL) {
        usage();
        goto out;
    }
    if (role != NULL && strcmp(role, "agent") != 0 && strcmp(role, "operator") != 0) {
        fputs("nstance-secrets: error: --role is agent or operator\n", stderr);
        goto out;
    }
    if (strcmp(kind, "client") != 0 && strcmp(kind, "server") != 0) {
        fputs("nstance-secrets: error: --kind is client or server\n", stderr);
        goto out;
    }
    if (ttl != NULL && ns_duration_parse(ttl, &life) != 0) {
        fprintf(stderr, "nstance-secrets: error: --ttl '%.32s' is not a duration (90s, 5m, 24h, 30d)\n", ttl);
        goto out;
    }
    r = csr != NULL ? read_csr(csr, &pub, &csr_cn) : read_public_key(pubfile, &pub);
    if (r != 0)
        goto out;
    if (cn == NULL)
        cn = csr_cn;
    if (cn == NULL) {
        fputs("nstance-secrets: error: --cn is needed (the request has no common name)\n", stderr);
        r = NS_E_USAGE;
        goto out;
    }
    if (ns_cert_check_cn(cn) != 0) {
        r = bad("common name", cn);
        goto out;
    }
    if ((r = ready(cli)) != 0)
        goto out;
    if (life == 0)
        life = cli->cfg->ca.cert_ttl;
    memset(&req, 0, sizeof(req));
    req.pub = pub;
    req.cn = cn;
    req.tenant = tenant;
    req.role = role;
    req.role_oid = cli->cfg->ca.role_oid;
    req.kind = strcmp(kind, "server") == 0 ? NS_CERT_SERVER : NS_CERT_CLIENT;
    req.dns = &dns;
    req.ip = &ip;
    req.uri = &uri;
    req.not_before = now;
    req.not_after = now + life;
    if ((r = ns_ca_open(cli->cfg, cli->store, cli->kr, &ca)) != 0 ||
        (r = ns_ca_issue(ca, cli->store, shard != NULL ? shard : cli->cfg->shard, &req, &x)) != 0) {
        ns_cli_error("ca issue", r);
        goto out;
    }
    if ((r = ns_issued_pem(x, &pem)) != 0 || (r = ns_cli_write_output(output, pem)) != 0)
        ns_cli_error("ca issue", r);
out:
    ns_strv_clear(&dns);
    ns_strv_clear(&ip);
    ns_strv_clear(&uri);
    EVP_PKEY_free(pub);
    free(csr_cn);
    ns_ca_free(ca);
    ns_issued_free(x);
    ns_buf_free(pem);
    return r;
}

int ns_cmd_ca(ns_cli *cli, int argc, char **argv)
{
    static const struct {
        const char *name;
        int (*fn)(ns_cli *, int, char **);
    } subs[] = {{"init", ca_init},     {"rotate", ca_rotate}, {"retire", ca_retire},
                {"bundle", ca_bundle}, {"list", ca_list},     {"issue", ca_issue}};

    if (argc < 2)
        return usage();
    for (size_t i = 0; i < sizeof(subs) / sizeof(subs[0]); i++)
        if (strcmp(argv[1], subs[i].name) == 0)
            return subs[i].fn(cli, argc - 1, argv + 1);
    return usage();
}
