#include "ns-build.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "common/log.h"
#include "envelope/envelope.h"
#include "secrets/export.h"
#include "secrets/secret.h"

/* secret create|rotate|promote|retire|show|export|list */

static const char secret_usage[] =
    "usage: nstance-secrets secret create NAME --type TYPE [--from FILE] [--bytes N]\n"
    "       nstance-secrets secret rotate NAME [--from FILE] [--pending]\n"
    "       nstance-secrets secret promote NAME\n"
    "       nstance-secrets secret retire NAME\n"
    "       nstance-secrets secret show NAME\n"
    "       nstance-secrets secret export NAME --format pem-bundle|pem|public-pem-bundle|jwks|raw [-o FILE]\n"
    "       nstance-secrets secret list\n"
    "TYPE: ed25519, ecdsa-p256, ecdsa-p384, rsa-2048, rsa-3072, rsa-4096, random, opaque\n";

/* The bytes of a --from file: never NULL when a file was given, even an empty one, so that "no --from"
 * and "an empty --from" stay different things. */
static const uint8_t *from_bytes(const ns_buf *in)
{
    static const uint8_t empty[1];
    return in == NULL ? NULL : in->data != NULL ? in->data : empty;
}

/* A new key of type t (imported from `in`, read from the file `from`, if given). A key that cannot be made
 * from that input is bad input (exit 8). */
static int make_key(const ns_keytype *t, const char *from, const ns_buf *in, size_t bytes, ns_secret_key *k)
{
    int r = ns_doc_make_key(t, from_bytes(in), in ? in->len : 0, bytes, k);
    if (r == NS_E_INVAL)
        r = NS_E_FORMAT;
    if (r != 0)
        ns_cli_error(from ? from : "generating the key", r);
    return r;
}

static int usage(void)
{
    fputs(secret_usage, stderr);
    return NS_E_USAGE;
}

static int ready(ns_cli *cli)
{
    int r;
    if ((r = ns_cli_store(cli)) != 0 || (r = ns_cli_keyring(cli, NS_KEYRING_STRICT)) != 0)
        return r;
    return 0;
}

static int read_doc(ns_cli *cli, const char *object, ns_secret_doc **doc)
{
    int r = ns_secret_read(cli->store, cli->kr, object, doc, NULL);
    if (r == NS_E_FORMAT || r == NS_E_VERSION)
        fprintf(stderr,
                "nstance-secrets: error: %s opens, but is not a secret document (%s); was it stored with "
                "put?\n",
                object, ns_strerror(r));
    else if (r != 0)
        ns_cli_error(object, r);
    return r;
}

static int cmd_create(ns_cli *cli, int argc, char **argv)
{
    static const struct option longopts[] = {{"type", required_argument, NULL, 't'},
                                             {"from", required_argument, NULL, 'f'},
                                             {"bytes", required_argument, NULL, 'b'},
                                             {NULL, 0, NULL, 0}};
    const char *type = NULL, *from = NULL;
    const ns_keytype *t;
    unsigned long bytes = NS_RANDOM_DEFAULT;
    ns_buf *in = NULL;
    ns_secret_key k;
    ns_secret_doc *doc = NULL;
    char *object = NULL, *end;
    int opt, r;

    memset(&k, 0, sizeof(k));
    while ((opt = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (opt) {
        case 't':
            type = optarg;
            break;
        case 'f':
            from = optarg;
            break;
        case 'b':
            bytes = strtoul(optarg, &end, 10);
            if (*optarg == '\0' || *end != '\0' || bytes == 0 || bytes > NS_RANDOM_MAX) {
                fprintf(stderr, "nstance-secrets: error: --bytes must be 1..%u\n", NS_RANDOM_MAX);
                return NS_E_USAGE;
            }
            break;
        default:
            return usage();
        }
    }
    if (optind != argc - 1 || type == NULL)
        return usage();
    if ((t = ns_keytype_find(type)) == NULL) {
        fprintf(stderr, "nstance-secrets: error: unknown type '%.32s' (%s)\n", type, ns_keytype_names());
        return NS_E_USAGE;
    }
    if ((r = ns_cli_object_name(argv[optind], &object)) != 0)
        return r;
    if (from != NULL && (r = ns_cli_read_file(from, NS_OPAQUE_MAX, &in)) != 0)
        goto out;
    /* "opaque" imports of a PEM private key are parsed and typed. */
    if (t->kind == NS_KIND_OPAQUE && in != NULL) {
        EVP_PKEY *pkey = NULL;
        r = ns_keytype_from_pem(from_bytes(in), in->len, &pkey);
        if (r == 0) {
            r = ns_keytype_classify(pkey, &t);
            EVP_PKEY_free(pkey);
            if (r == 0)
                fprintf(stderr, "nstance-secrets: %s holds a %s private key; the secret is typed %s\n", from,
                        t->name, t->name);
        }
        if (r != 0 && r != NS_E_NOT_FOUND) {
            ns_cli_error(from, r == NS_E_INVAL ? NS_E_FORMAT : r);
            r = r == NS_E_INVAL ? NS_E_FORMAT : r;
            goto out;
        }
    }
    if ((r = make_key(t, from, in, bytes, &k)) != 0)
        goto out;
    if ((r = ns_doc_new(t, &k, &doc)) != 0 || (r = ready(cli)) != 0)
        goto out;
    if ((r = ns_secret_create(cli->store, cli->kr, object, doc)) != 0) {
        ns_cli_error(object, r);
        goto out;
    }
    printf("created %s (%s), key %s\n", argv[optind], t->name, doc->keys[0].id);
out:
    ns_secret_key_clear(&k);
    ns_doc_free(doc);
    ns_buf_free(in);
    free(object);
    return r;
}

struct rotate_ctx {
    const ns_secret_key *key; /* template: copied into the document on every attempt */
    const ns_keytype *type;   /* the type the key was made for */
    int pending;
};

static int edit_rotate(ns_secret_doc *d, void *vctx)
{
    struct rotate_ctx *c = vctx;
    ns_secret_key k = *c->key;
    int r;

    if (d->type != c->type) {
        ns_log(NS_LOG_ERROR, "the secret was replaced by one of type %s meanwhile", d->type->name);
        return NS_E_CONFLICT;
    }
    k.material = NULL;
    k.state = NS_KEY_CURRENT;
    if ((r = ns_buf_from(c->key->material->data, c->key->material->len, c->key->material->len, true,
                         &k.material)) != 0)
        return r;
    if ((r = ns_doc_rotate(d, &k, c->pending)) != 0)
        ns_secret_key_clear(&k);
    return r;
}

static int cmd_rotate(ns_cli *cli, int argc, char **argv)
{
    static const struct option longopts[] = {
        {"from", required_argument, NULL, 'f'}, {"pending", no_argument, NULL, 'p'}, {NULL, 0, NULL, 0}};
    const char *from = NULL;
    ns_secret_doc *doc = NULL;
    ns_buf *in = NULL;
    ns_secret_key k;
    struct rotate_ctx c = {&k, NULL, 0};
    char *object = NULL;
    int opt, r;

    memset(&k, 0, sizeof(k));
    while ((opt = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (opt) {
        case 'f':
            from = optarg;
            break;
        case 'p':
            c.pending = 1;
            break;
        default:
            return usage();
        }
    }
    if (optind != argc - 1)
        return usage();
    if ((r = ns_cli_object_name(argv[optind], &object)) != 0)
        return r;
    if ((r = ready(cli)) != 0 || (r = read_doc(cli, object, &doc)) != 0)
        goto out;
    if (from != NULL && (r = ns_cli_read_file(from, NS_OPAQUE_MAX, &in)) != 0)
        goto out;
    if (doc->type->kind == NS_KIND_OPAQUE && in == NULL) {
        fputs("nstance-secrets: error: rotating an opaque secret needs --from FILE\n", stderr);
        r = NS_E_USAGE;
        goto out;
    }
    /* The new key is made once, outside the compare-and-swap loop, so every attempt adds the same key. */
    if ((r = make_key(doc->type, from, in, doc->type->kind == NS_KIND_RANDOM ? doc->keys[0].material->len : 0,
                      &k)) != 0)
        goto out;
    c.type = doc->type;
    if ((r = ns_secret_update(cli->store, cli->kr, object, edit_rotate, &c)) != 0) {
        ns_cli_error(object, r);
        goto out;
    }
    printf("rotated %s: new key %s%s\n", argv[optind], k.id, c.pending ? " (pending)" : "");
out:
    ns_secret_key_clear(&k);
    ns_doc_free(doc);
    ns_buf_free(in);
    free(object);
    return r;
}

static int edit_promote(ns_secret_doc *d, void *ctx)
{
    (void)ctx;
    return ns_doc_promote(d);
}

static int edit_retire(ns_secret_doc *d, void *ctx)
{
    return ns_doc_retire(d, ctx);
}

static int cmd_simple_edit(ns_cli *cli, int argc, char **argv, int retire)
{
    char removed[NS_KEY_ID_MAX] = "";
    char *object = NULL;
    int r;

    if (argc != 2)
        return usage();
    if ((r = ns_cli_object_name(argv[1], &object)) != 0)
        return r;
    if ((r = ready(cli)) == 0 && (r = ns_secret_update(cli->store, cli->kr, object,
                                                       retire ? edit_retire : edit_promote, removed)) != 0)
        ns_cli_error(object, r);
    if (r == 0 && retire)
        printf("retired key %s from %s\n", removed, argv[1]);
    else if (r == 0)
        printf("promoted the pending key of %s\n", argv[1]);
    free(object);
    return r;
}

static int cmd_show(ns_cli *cli, int argc, char **argv)
{
    ns_secret_doc *doc = NULL;
    char *object = NULL;
    int r;

    if (argc != 2)
        return usage();
    if ((r = ns_cli_object_name(argv[1], &object)) != 0)
        return r;
    if ((r = ready(cli)) != 0 || (r = read_doc(cli, object, &doc)) != 0)
        goto out;
    printf("name: %s\ntype: %s\nkeys: %zu\n", argv[1], doc->type->name, doc->n);
    for (size_t i = 0; i < doc->n; i++) {
        char when[32], fp[64] = "-";
        EVP_PKEY *pk = NULL;
        ns_time_format(doc->keys[i].created_at, when);
        if (doc->type->kind == NS_KIND_KEYPAIR && ns_doc_key_pkey(doc, i, &pk) == 0 &&
            ns_keytype_fingerprint(pk, fp) != 0)
            snprintf(fp, sizeof(fp), "-");
        EVP_PKEY_free(pk);
        printf("  %zu  %-8s  %s  %s  %s\n", i, ns_key_state_name(doc->keys[i].state), doc->keys[i].id, when,
               doc->type->kind == NS_KIND_KEYPAIR ? fp : "(no public part)");
    }
out:
    ns_doc_free(doc);
    free(object);
    return r;
}

static int cmd_export(ns_cli *cli, int argc, char **argv)
{
    static const struct option longopts[] = {{"format", required_argument, NULL, 'F'},
                                             {"output", required_argument, NULL, 'o'},
                                             {NULL, 0, NULL, 0}};
    const char *format = NULL, *output = NULL;
    ns_secret_doc *doc = NULL;
    ns_buf *out = NULL;
    char *object = NULL;
    int opt, r;

    while ((opt = getopt_long(argc, argv, "o:", longopts, NULL)) != -1) {
        switch (opt) {
        case 'F':
            format = optarg;
            break;
        case 'o':
            output = optarg;
            break;
        default:
            return usage();
        }
    }
    if (optind != argc - 1 || format == NULL)
        return usage();
    if ((r = ns_cli_object_name(argv[optind], &object)) != 0)
        return r;
    if ((r = ready(cli)) != 0 || (r = read_doc(cli, object, &doc)) != 0)
        goto out;
    if ((r = ns_export(doc, format, &out)) != 0) {
        ns_cli_error(object, r);
        goto out;
    }
    r = ns_cli_write_output(output, out);
out:
    ns_buf_free(out);
    ns_doc_free(doc);
    free(object);
    return r;
}

static int cmd_list(ns_cli *cli, int argc, char **argv)
{
    ns_strv names = NS_STRV_INIT;
    int r, first_err = 0;

    if (argc != 1)
        return usage();
    if ((r = ready(cli)) != 0)
        return r;
    if ((r = ns_store_list(cli->store, NS_SECRET_PREFIX, &names)) != 0) {
        ns_cli_error("list", r);
        return r;
    }
    printf("%-40s %-11s %s\n", "NAME", "TYPE", "KEYS");
    for (size_t i = 0; i < names.n; i++) {
        ns_secret_doc *doc = NULL;
        const char *short_name = names.v[i] + strlen(NS_SECRET_PREFIX);
        r = ns_secret_read(cli->store, cli->kr, names.v[i], &doc, NULL);
        if (r == 0)
            printf("%-40s %-11s %zu\n", short_name, doc->type->name, doc->n);
        else if (r == NS_E_FORMAT)
            printf("%-40s %-11s -\n", short_name, "(blob)"); /* stored with `put`, not a document */
        else if (r != NS_E_NOT_FOUND) {
            printf("%-40s %-11s -\n", short_name, "(error)");
            fprintf(stderr, "FAIL %s: %s\n", names.v[i], ns_strerror(r));
            if (first_err == 0)
                first_err = r;
        }
        ns_doc_free(doc);
    }
    ns_strv_clear(&names);
    return first_err;
}

int ns_cmd_secret(ns_cli *cli, int argc, char **argv)
{
    if (argc < 2)
        return usage();
    if (strcmp(argv[1], "create") == 0)
        return cmd_create(cli, argc - 1, argv + 1);
    if (strcmp(argv[1], "rotate") == 0)
        return cmd_rotate(cli, argc - 1, argv + 1);
    if (strcmp(argv[1], "promote") == 0)
        return cmd_simple_edit(cli, argc - 1, argv + 1, 0);
    if (strcmp(argv[1], "retire") == 0)
        return cmd_simple_edit(cli, argc - 1, argv + 1, 1);
    if (strcmp(argv[1], "show") == 0)
        return cmd_show(cli, argc - 1, argv + 1);
    if (strcmp(argv[1], "export") == 0)
        return cmd_export(cli, argc - 1, argv + 1);
    if (strcmp(argv[1], "list") == 0)
        return cmd_list(cli, argc - 1, argv + 1);
    return usage();
}
