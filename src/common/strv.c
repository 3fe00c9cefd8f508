#include "ns-build.h"

#include <stdlib.h>
#include <string.h>

#include "common/strv.h"

int ns_strv_push(ns_strv *sv, const char *s)
{
    char *copy;
    if (sv->n == sv->cap) {
        size_t cap = sv->cap ? sv->cap * 2 : 16;
        char **v = realloc(sv->v, cap * sizeof(*v));
        if (v == NULL)
            return NS_E_NOMEM;
        sv->v = v;
        sv->cap = cap;
    }
    if ((copy = strdup(s)) == NULL)
        return NS_E_NOMEM;
    sv->v[sv->n++] = copy;
    return 0;
}

static int cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

void ns_strv_sort(ns_strv *sv)
{
    if (sv->n > 1)
        qsort(sv->v, sv->n, sizeof(*sv->v), cmp);
}

void ns_strv_clear(ns_strv *sv)
{
    if (sv == NULL)
        return;
    for (size_t i = 0; i < sv->n; i++)
        free(sv->v[i]);
    free(sv->v);
    sv->v = NULL;
    sv->n = sv->cap = 0;
}
