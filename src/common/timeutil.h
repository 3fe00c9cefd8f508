/* Time: durations as written in configs and on command lines, and the clock.
 *
 * A duration is a positive decimal number followed by one unit: "90s", "5m", "24h", "30d" (seconds,
 * minutes, hours, days). No sign, no leading zero, no spaces, no compound forms ("1h30m"); at most
 * NS_DURATION_MAX seconds (100 years). */
#ifndef NS_COMMON_TIMEUTIL_H
#define NS_COMMON_TIMEUTIL_H

#include <stdint.h>

#include "common/err.h"

#define NS_DURATION_MAX (100LL * 366 * 86400)

/* NS_E_INVAL for anything else than the form above. */
int ns_duration_parse(const char *s, int64_t *secs) NS_WUR;

/* The shortest exact form ("300" → "5m", "90" → "90s"); out holds at least 24 bytes. */
void ns_duration_format(int64_t secs, char out[24]);

/* Wall-clock time in seconds / milliseconds since the epoch (UTC). */
int64_t ns_now(void);
int64_t ns_now_ms(void);

#endif
