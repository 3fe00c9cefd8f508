#include "ns-build.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include "agent/agent.h"
#include "ca/cert.h"
#include "common/json.h"
#include "common/log.h"
#include "common/secmem.h"

/* RFC 8410 §7: an Ed25519 PKCS#8 PrivateKeyInfo is this fixed prefix and the 32-byte seed. Building it
 * here keeps the private key out of OpenSSL's ordinary-heap encoders: every copy is in the secure heap. */
static const uint8_t ed25519_pkcs8_prefix[16] = {0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06,
                                                 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20};

/* A new Ed25519 key: its PKCS#8 PEM (secret) and its public key PEM (SubjectPublicKeyInfo). */
static int make_key(ns_buf **key_pem, char **pub_pem)
{
    static const char head[] = "-----BEGIN PRIVATE KEY-----\n", tail[] = "\n-----END PRIVATE KEY-----\n";
    uint8_t *der = NULL;
    ns_buf *pem = NULL;
    EVP_PKEY *k = NULL;
    BIO *bio = NULL;
    BUF_MEM *mem;
    char *pub = NULL;
    uint8_t *b64;
    int r = NS_E_INTERNAL;

    if ((der = ns_secmem_alloc(48)) == NULL)
        return NS_E_NOMEM;
    memcpy(der, ed25519_pkcs8_prefix, sizeof(ed25519_pkcs8_prefix));
    if (getrandom(der + 16, 32, 0) != 32) {
        r = NS_E_CRYPTO;
        goto out;
    }
    if ((k = EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, NULL, der + 16, 32)) == NULL) {
        r = NS_E_CRYPTO;
        goto out;
    }
    /* 48 bytes are 64 base64 characters: one PEM line. */
    if ((r = ns_buf_new(256, true, &pem)) != 0 || (r = ns_buf_append(pem, head, sizeof(head) - 1)) != 0 ||
        (r = ns_buf_extend(pem, 65, &b64)) != 0)
        goto out;
    if (EVP_EncodeBlock(b64, der, 48) != 64) {
        r = NS_E_CRYPTO;
        goto out;
    }
    ns_buf_truncate(pem, pem->len - 1); /* EVP_EncodeBlock's NUL */
    if ((r = ns_buf_append(pem, tail, sizeof(tail) - 1)) != 0)
        goto out;
    if ((bio = BIO_new(BIO_s_mem())) == NULL || PEM_write_bio_PUBKEY(bio, k) != 1) {
        r = NS_E_CRYPTO;
        goto out;
    }
    BIO_get_mem_ptr(bio, &mem);
    if ((pub = strndup(mem->data, mem->length)) == NULL) {
        r = NS_E_NOMEM;
        goto out;
    }
    *key_pem = pem;
    pem = NULL;
    *pub_pem = pub;
    pub = NULL;
    r = 0;
out:
    ns_secmem_free(der, 48);
    ns_buf_free(pem);
    EVP_PKEY_free(k);
    BIO_free(bio);
    free(pub);
    return r;
}

/* The nonce: the file's content without trailing white space; it stays in the secure heap. */
static int read_nonce(const char *path, ns_buf **out)
{
    ns_buf *b = NULL;
    int r;

    if ((r = ns_agent_read_file(path, 16 * 1024, true, &b)) != 0) {
        if (r == NS_E_NOT_FOUND)
            ns_log(NS_LOG_ERROR, "agent: the nonce file %s does not exist", path);
        else if (r == NS_E_TOO_LARGE)
            ns_log(NS_LOG_ERROR, "agent: the nonce file %s is too large to be a nonce", path);
        return r == NS_E_TOO_LARGE ? NS_E_USAGE : r;
    }
    while (b->len > 0 && (b->data[b->len - 1] == '\n' || b->data[b->len - 1] == '\r' ||
                          b->data[b->len - 1] == ' ' || b->data[b->len - 1] == '\t'))
        ns_buf_truncate(b, b->len - 1);
    if (b->len == 0 || memchr(b->data, '\0', b->len) != NULL) {
        ns_log(NS_LOG_ERROR, "agent: the nonce file %s is empty", path);
        ns_buf_free(b);
        return NS_E_USAGE;
    }
    *out = b;
    return 0;
}

/* {"nonce", "public_key", ["hostname", "ipv4", "ipv6"]}, in the secure heap. */
static int make_body(const ns_agent_opts *o, const ns_buf *nonce, const char *pub, ns_buf **out)
{
    json_t *doc = NULL;
    char *text = NULL;
    int r = NS_E_NOMEM;

    ns_json_init();
    if ((doc = json_object()) == NULL ||
        json_object_set_new(doc, "nonce", json_stringn((const char *)nonce->data, nonce->len)) != 0 ||
        json_object_set_new(doc, "public_key", json_string(pub)) != 0)
        goto out;
    if (o->hostname != NULL && json_object_set_new(doc, "hostname", json_string(o->hostname)) != 0)
        goto out;
    if (o->ipv4 != NULL && json_object_set_new(doc, "ipv4", json_string(o->ipv4)) != 0)
        goto out;
    if (o->ipv6 != NULL && json_object_set_new(doc, "ipv6", json_string(o->ipv6)) != 0)
        goto out;
    if ((text = json_dumps(doc, JSON_COMPACT)) == NULL)
        goto out;
    r = ns_buf_from(text, strlen(text), 64 * 1024, true, out);
out:
    if (text != NULL) {
        ns_wipe(text, strlen(text));
        ns_json_free(text);
    }
    json_decref(doc);
    return r;
}

/* --hostname, --ipv4, --ipv6 become SANs of our certificate: checked here with the server's rules
 * (src/service/request.c) so that a typo is a usage error before the nonce is read, sent or used. */
static int check_names(const ns_agent_opts *o)
{
    unsigned char addr[16];

    if (o->hostname != NULL && (ns_cert_check_dns(o->hostname) != 0 || o->hostname[0] == '*')) {
        ns_log(NS_LOG_ERROR,
               "agent: --hostname '%.260s' is not a DNS name (labels of letters, digits and '-', at most "
               "253 characters, no wildcard)",
               o->hostname);
        return NS_E_USAGE;
    }
    if (o->ipv4 != NULL && inet_pton(AF_INET, o->ipv4, addr) != 1) {
        ns_log(NS_LOG_ERROR, "agent: --ipv4 '%.64s' is not an IPv4 address (a.b.c.d)", o->ipv4);
        return NS_E_USAGE;
    }
    if (o->ipv6 != NULL && inet_pton(AF_INET6, o->ipv6, addr) != 1) {
        ns_log(NS_LOG_ERROR, "agent: --ipv6 '%.64s' is not an IPv6 address", o->ipv6);
        return NS_E_USAGE;
    }
    return 0;
}

int ns_agent_enroll(const ns_agent_opts *o)
{
    ns_agent_client *client = NULL;
    ns_agent_resp *resp = NULL;
    ns_buf *nonce = NULL, *key_pem = NULL, *body = NULL;
    char *pub = NULL;
    int r = NS_E_INTERNAL;

    if (o->server == NULL || o->ca == NULL || o->nonce_file == NULL || o->dir == NULL) {
        ns_log(NS_LOG_ERROR, "agent: enroll needs --server, --ca, --nonce-file and --dir");
        return NS_E_USAGE;
    }
    if ((r = check_names(o)) != 0)
        goto out;
    if ((r = read_nonce(o->nonce_file, &nonce)) != 0)
        goto out;
    if ((r = ns_agent_state_dir(o->dir)) != 0)
        goto out;
    if ((r = make_key(&key_pem, &pub)) != 0)
        goto out;
    if ((r = make_body(o, nonce, pub, &body)) != 0)
        goto out;
    if ((r = ns_agent_client_new(o->server, o->ca, NULL, NULL, &client)) != 0)
        goto out;
    /* One attempt: a nonce that reached the server is used, and a second try would only get 409. */
    if ((r = ns_agent_request(client, "POST", "/v1/register", body, NULL, true, &resp)) != 0) {
        if (r == NS_E_REPLAYED)
            ns_log(NS_LOG_ERROR, "agent: enroll: the nonce was used already; ask for a new one");
        else if (r == NS_E_CLAIMS)
            ns_log(NS_LOG_ERROR, "agent: enroll: the server refused the nonce (expired, for another cluster, "
                                 "or not signed by it); ask for a new one");
        goto out;
    }
    if (resp->status != 200) {
        ns_log(NS_LOG_ERROR, "agent: enroll: unexpected status %ld", resp->status);
        r = NS_E_FORMAT;
        goto out;
    }
    if ((r = ns_agent_store_identity(o->dir, resp->body, key_pem)) != 0)
        goto out;
    /* Only now: the identity is stored, so the nonce has done its job. */
    if (unlink(o->nonce_file) != 0 && errno != ENOENT)
        ns_log(NS_LOG_WARN, "agent: enrolled, but could not delete the nonce file %s: %s", o->nonce_file,
               strerror(errno));
    r = 0;
out:
    ns_agent_resp_free(resp);
    ns_agent_client_free(client);
    ns_buf_free(nonce);
    ns_buf_free(key_pem);
    ns_buf_free(body);
    free(pub);
    return r;
}
