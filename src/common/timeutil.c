#include "ns-build.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

#include "common/timeutil.h"

int ns_duration_parse(const char *s, int64_t *secs)
{
    int64_t v = 0, mul;
    size_t i = 0;

    if (s == NULL)
        return NS_E_INVAL;
    /* At most 12 digits: anything longer is beyond NS_DURATION_MAX in every unit. */
    while (s[i] >= '0' && s[i] <= '9' && i < 12)
        v = v * 10 + (s[i++] - '0');
    if (i == 0 || (s[0] == '0') || s[i] == '\0' || s[i + 1] != '\0')
        return NS_E_INVAL;
    switch (s[i]) {
    case 's':
        mul = 1;
        break;
    case 'm':
        mul = 60;
        break;
    case 'h':
        mul = 3600;
        break;
    case 'd':
        mul = 86400;
        break;
    default:
        return NS_E_INVAL;
    }
    if (v > NS_DURATION_MAX / mul)
        return NS_E_INVAL;
    *secs = v * mul;
    return 0;
}

void ns_duration_format(int64_t secs, char out[24])
{
    if (secs > 0 && secs % 86400 == 0)
        snprintf(out, 24, "%lldd", (long long)(secs / 86400));
    else if (secs > 0 && secs % 3600 == 0)
        snprintf(out, 24, "%lldh", (long long)(secs / 3600));
    else if (secs > 0 && secs % 60 == 0)
        snprintf(out, 24, "%lldm", (long long)(secs / 60));
    else
        snprintf(out, 24, "%llds", (long long)secs);
}

int64_t ns_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec;
}

int64_t ns_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}
