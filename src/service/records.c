#include "ns-build.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/crypto.h>

#include "service/records.h"
#include "store/store.h"

typedef struct rec_slot {
    char name[NS_NAME_MAX + 1]; /* "" when empty */
    uint8_t fp[32];
    char group[NS_RECS_GROUP_MAX];
    int64_t at_ms;
} rec_slot;

struct ns_recs {
    pthread_mutex_t mu;
    int64_t ttl_ms;
    rec_slot slots[NS_RECS_SLOTS];
};

int ns_recs_new(int64_t ttl_ms, ns_recs **out)
{
    ns_recs *c = calloc(1, sizeof(*c));

    if (c == NULL)
        return NS_E_NOMEM;
    pthread_mutex_init(&c->mu, NULL);
    c->ttl_ms = ttl_ms;
    *out = c;
    return 0;
}

void ns_recs_free(ns_recs *c)
{
    if (c == NULL)
        return;
    pthread_mutex_destroy(&c->mu);
    free(c);
}

int64_t ns_recs_clock_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* FNV-1a of the name: which slot it may live in. */
static rec_slot *slot_for(ns_recs *c, const char *name)
{
    uint32_t h = 2166136261u;

    for (const unsigned char *p = (const unsigned char *)name; *p != '\0'; p++)
        h = (h ^ *p) * 16777619u;
    return &c->slots[h % NS_RECS_SLOTS];
}

int ns_recs_get(ns_recs *c, const char *name, const uint8_t fp[32], int64_t now_ms, char *group, size_t n)
{
    rec_slot *s = slot_for(c, name);
    int r = NS_E_NOT_FOUND;

    pthread_mutex_lock(&c->mu);
    if (s->name[0] != '\0' && strcmp(s->name, name) == 0 && CRYPTO_memcmp(s->fp, fp, 32) == 0 &&
        now_ms >= s->at_ms && now_ms - s->at_ms < c->ttl_ms && strlen(s->group) < n) {
        strcpy(group, s->group);
        r = 0;
    }
    pthread_mutex_unlock(&c->mu);
    return r;
}

void ns_recs_put(ns_recs *c, const char *name, const uint8_t fp[32], const char *group, int64_t now_ms)
{
    rec_slot *s = slot_for(c, name);

    if (name[0] == '\0' || strlen(name) > NS_NAME_MAX || strlen(group) >= NS_RECS_GROUP_MAX)
        return;
    pthread_mutex_lock(&c->mu);
    strcpy(s->name, name);
    memcpy(s->fp, fp, 32);
    strcpy(s->group, group);
    s->at_ms = now_ms;
    pthread_mutex_unlock(&c->mu);
}

void ns_recs_forget(ns_recs *c, const char *name)
{
    rec_slot *s = slot_for(c, name);

    pthread_mutex_lock(&c->mu);
    if (strcmp(s->name, name) == 0)
        memset(s, 0, sizeof(*s));
    pthread_mutex_unlock(&c->mu);
}
