/* A growable vector of owned, NUL-terminated strings. */
#ifndef NS_COMMON_STRV_H
#define NS_COMMON_STRV_H

#include <stddef.h>

#include "common/err.h"

typedef struct ns_strv {
    char **v;
    size_t n;
    size_t cap;
} ns_strv;

#define NS_STRV_INIT                                                                                         \
    {                                                                                                        \
        NULL, 0, 0                                                                                           \
    }

/* Append a copy of s. */
int ns_strv_push(ns_strv *sv, const char *s) NS_WUR;
/* Sort in byte order (strcmp). */
void ns_strv_sort(ns_strv *sv);
/* Free every string and the array; leaves sv empty. NULL is accepted. */
void ns_strv_clear(ns_strv *sv);

#endif
