#include "ns-build.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"

static int log_level = -1;
static const char *log_program = "nstance-secrets";

static int level_from_env(void)
{
    const char *v = getenv("NSTANCE_SECRETS_LOG");
    if (v == NULL)
        return NS_LOG_WARN;
    if (strcmp(v, "debug") == 0)
        return NS_LOG_DEBUG;
    if (strcmp(v, "info") == 0)
        return NS_LOG_INFO;
    if (strcmp(v, "error") == 0)
        return NS_LOG_ERROR;
    return NS_LOG_WARN;
}

void ns_log_set_program(const char *name)
{
    log_program = name;
}

void ns_log_set_level(enum ns_log_level level)
{
    __atomic_store_n(&log_level, (int)level, __ATOMIC_RELAXED);
}

void ns_log_verbose(void)
{
    ns_log_set_level(ns_log_get_level() >= NS_LOG_INFO ? NS_LOG_DEBUG : NS_LOG_INFO);
}

enum ns_log_level ns_log_get_level(void)
{
    int l = __atomic_load_n(&log_level, __ATOMIC_RELAXED);
    if (l < 0) {
        l = level_from_env();
        __atomic_store_n(&log_level, l, __ATOMIC_RELAXED);
    }
    return (enum ns_log_level)l;
}

void ns_log(enum ns_log_level level, const char *fmt, ...)
{
    static const char *const names[] = {"error", "warning", "info", "debug"};
    char line[1024], safe[4 * sizeof(line)];
    va_list ap;

    if ((int)level > (int)ns_log_get_level())
        return;
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    ns_log_escape(line, safe, sizeof(safe));
    /* One write per line so that lines from several threads do not interleave. */
    fprintf(stderr, "%s: %s: %s\n", log_program, names[level], safe);
}

size_t ns_log_escape(const char *s, char *out, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    size_t i = 0;

    if (n == 0)
        return 0;
    for (; *s != '\0'; s++) {
        unsigned char c = (unsigned char)*s;
        size_t need = (c < 0x20 || c >= 0x7f) ? 4 : c == '\\' ? 2 : 1;
        if (i + need >= n)
            break;
        if (need == 4) {
            out[i++] = '\\';
            out[i++] = 'x';
            out[i++] = hex[c >> 4];
            out[i++] = hex[c & 15];
        } else {
            if (need == 2)
                out[i++] = '\\';
            out[i++] = (char)c;
        }
    }
    out[i] = '\0';
    return i;
}
