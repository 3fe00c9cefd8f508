#include "ns-build.h"

#include <arpa/inet.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "service/ratelimit.h"

typedef struct renew_slot {
    uint8_t id[32]; /* keyed hash of the identity; all zero when empty */
    int64_t at_ms;  /* when the last renewal took it */
    int used;
} renew_slot;

typedef struct bucket {
    uint8_t id[32]; /* keyed hash of the address key */
    int64_t at_ms;  /* when `tokens` was computed */
    double tokens;
    int used;
} bucket;

struct ns_rl {
    pthread_mutex_t mu;
    uint8_t key[32];
    renew_slot renew[NS_RL_SLOTS];
    bucket reg[NS_RL_SLOTS];
};

int ns_rl_new(ns_rl **out)
{
    ns_rl *rl = calloc(1, sizeof(*rl));

    if (rl == NULL)
        return NS_E_NOMEM;
    if (RAND_bytes(rl->key, sizeof(rl->key)) != 1) {
        free(rl);
        return NS_E_CRYPTO;
    }
    pthread_mutex_init(&rl->mu, NULL);
    *out = rl;
    return 0;
}

void ns_rl_free(ns_rl *rl)
{
    if (rl == NULL)
        return;
    pthread_mutex_destroy(&rl->mu);
    OPENSSL_cleanse(rl->key, sizeof(rl->key));
    free(rl);
}

/* SHA-256(process key || tag || data): the slot is its first bytes; the whole hash is the identity. */
static int keyed(const ns_rl *rl, char tag, const void *p, size_t n, uint8_t out[32])
{
    EVP_MD_CTX *h = EVP_MD_CTX_new();
    int ok = h != NULL && EVP_DigestInit_ex(h, EVP_sha256(), NULL) == 1 &&
             EVP_DigestUpdate(h, rl->key, sizeof(rl->key)) == 1 && EVP_DigestUpdate(h, &tag, 1) == 1 &&
             EVP_DigestUpdate(h, p, n) == 1 && EVP_DigestFinal_ex(h, out, NULL) == 1;

    EVP_MD_CTX_free(h);
    return ok ? 0 : NS_E_CRYPTO;
}

static size_t slot_of(const uint8_t id[32])
{
    return ((size_t)id[0] << 8 | id[1]) % NS_RL_SLOTS;
}

int ns_rl_renew_take(ns_rl *rl, const char *key, int64_t now_ms, int64_t interval_ms, int64_t *retry_ms)
{
    uint8_t id[32];
    renew_slot *s;
    int r = 0;

    *retry_ms = 0;
    if (interval_ms <= 0)
        return 0;
    /* Without a hash the limit cannot be kept: refuse rather than let a flood through. */
    if (keyed(rl, 'r', key, strlen(key), id) != 0) {
        *retry_ms = 1000;
        return NS_E_RATE_LIMITED;
    }
    s = &rl->renew[slot_of(id)];
    pthread_mutex_lock(&rl->mu);
    if (!s->used || now_ms - s->at_ms >= interval_ms || now_ms < s->at_ms) {
        memcpy(s->id, id, sizeof(id));
        s->at_ms = now_ms;
        s->used = 1;
    } else if (CRYPTO_memcmp(s->id, id, sizeof(id)) == 0) {
        *retry_ms = interval_ms - (now_ms - s->at_ms);
        r = NS_E_RATE_LIMITED;
    }
    /* else: another identity holds the slot within its interval; this one goes untracked here. */
    pthread_mutex_unlock(&rl->mu);
    return r;
}

void ns_rl_renew_give_back(ns_rl *rl, const char *key, int64_t taken_ms)
{
    uint8_t id[32];
    renew_slot *s;

    if (keyed(rl, 'r', key, strlen(key), id) != 0)
        return;
    s = &rl->renew[slot_of(id)];
    pthread_mutex_lock(&rl->mu);
    if (s->used && s->at_ms == taken_ms && CRYPTO_memcmp(s->id, id, sizeof(id)) == 0)
        memset(s, 0, sizeof(*s));
    pthread_mutex_unlock(&rl->mu);
}

/* The bucket key of an address: 4 bytes of IPv4 (also IPv4-mapped IPv6), the /64 of IPv6, or "". */
static size_t addr_key(const char *addr, uint8_t out[16])
{
    static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    uint8_t a6[16];

    if (addr == NULL)
        return 0;
    if (inet_pton(AF_INET, addr, out) == 1)
        return 4;
    if (inet_pton(AF_INET6, addr, a6) == 1) {
        if (memcmp(a6, mapped, sizeof(mapped)) == 0) {
            memcpy(out, a6 + 12, 4);
            return 4;
        }
        memcpy(out, a6, 8);
        return 8;
    }
    return 0;
}

int ns_rl_register_take(ns_rl *rl, const char *addr, int64_t now_ms, unsigned burst, unsigned per_minute,
                        int64_t *retry_ms)
{
    uint8_t k[16], id[32];
    size_t kn = addr_key(addr, k);
    double rate = (double)per_minute / 60000.0; /* tokens per millisecond */
    bucket *b;
    int r = 0;

    *retry_ms = 0;
    if (burst == 0 || per_minute == 0)
        return 0;
    if (keyed(rl, kn == 4 ? '4' : kn == 8 ? '6' : '?', k, kn, id) != 0) {
        *retry_ms = 1000;
        return NS_E_RATE_LIMITED;
    }
    b = &rl->reg[slot_of(id)];
    pthread_mutex_lock(&rl->mu);
    if (b->used && now_ms > b->at_ms) {
        b->tokens += (double)(now_ms - b->at_ms) * rate;
        if (b->tokens > (double)burst)
            b->tokens = (double)burst;
        b->at_ms = now_ms;
    } else if (b->used && now_ms < b->at_ms) {
        b->at_ms = now_ms; /* the clock went back: no refill, no debt */
    }
    /* A slot goes to another address only once full (idle); until then the two share it. */
    if (!b->used || (CRYPTO_memcmp(b->id, id, sizeof(id)) != 0 && b->tokens >= (double)burst)) {
        memcpy(b->id, id, sizeof(id));
        b->tokens = (double)burst;
        b->at_ms = now_ms;
        b->used = 1;
    }
    if (b->tokens >= 1.0) {
        b->tokens -= 1.0;
    } else {
        *retry_ms = (int64_t)((1.0 - b->tokens) / rate) + 1;
        r = NS_E_RATE_LIMITED;
    }
    pthread_mutex_unlock(&rl->mu);
    return r;
}
