#include "ns-build.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "agent/agent.h"
#include "common/log.h"
#include "common/timeutil.h"

/* Why sigtimedwait(): SIGTERM and SIGINT stay blocked, so they can never interrupt a write half-way; the
 * loop only looks at them while it waits, and a signal that arrives during a sync ends the loop right after
 * that sync. */

/* interval ± 10%, in milliseconds. */
static int64_t jittered_ms(int64_t interval_s)
{
    uint32_t rnd = 0;
    int64_t base = interval_s * 1000, span = base / 5; /* [0.9, 1.1] * base */
    if (getrandom(&rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd))
        rnd = (uint32_t)time(NULL);
    return base - span / 2 + (span > 0 ? (int64_t)(rnd % (uint64_t)(span + 1)) : 0);
}

/* Wait up to ms for SIGTERM/SIGINT; true when one came. */
static bool wait_signal(const sigset_t *set, int64_t ms)
{
    struct timespec ts;
    int sig;

    if (ms < 0)
        ms = 0;
    ts.tv_sec = (time_t)(ms / 1000);
    ts.tv_nsec = (long)(ms % 1000) * 1000000L;
    for (;;) {
        sig = sigtimedwait(set, NULL, &ts);
        if (sig == SIGTERM || sig == SIGINT)
            return true;
        if (sig < 0 && errno == EINTR)
            continue; /* another signal; the remaining time is not reported: wait the full time again */
        return false;
    }
}

int ns_agent_run(const ns_agent_opts *o)
{
    sigset_t set, old;
    int64_t due = 0, not_after = 0, now, wait_ms;
    bool hook_failed = false;
    int r;

    if (o->interval <= 0) {
        ns_log(NS_LOG_ERROR, "agent: --interval must be positive");
        return NS_E_USAGE;
    }
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    if (sigprocmask(SIG_BLOCK, &set, &old) != 0)
        return NS_E_INTERNAL;
    ns_log(NS_LOG_INFO, "agent: running, sync every %llds ± 10%%", (long long)o->interval);
    for (;;) {
        if ((r = ns_agent_renew_due(o->dir, &due, &not_after)) != 0) {
            ns_log(NS_LOG_ERROR, "agent: cannot read the certificate in %s: run enroll first", o->dir);
            goto out;
        }
        now = ns_now();
        if (now >= due) {
            if ((r = ns_agent_renew(o)) == 0) {
                printf("renew: new certificate\n");
                fflush(stdout);
                if (ns_agent_renew_due(o->dir, &due, &not_after) != 0)
                    due = now + o->interval;
            } else {
                ns_log(NS_LOG_ERROR, "agent: renewal failed (%s)%s; trying again after the next sync",
                       ns_strerror(r), now >= not_after ? ": the certificate has expired, enroll again" : "");
                due = now + o->interval;
            }
        }
        if ((r = ns_agent_sync(o, &hook_failed)) != 0)
            ns_log(NS_LOG_ERROR, "agent: sync failed (%s); trying again at the next interval",
                   ns_strerror(r));
        wait_ms = jittered_ms(o->interval);
        now = ns_now();
        if ((due - now) * 1000 < wait_ms)
            wait_ms = (due - now) * 1000;
        if (wait_signal(&set, wait_ms)) {
            ns_log(NS_LOG_INFO, "agent: stopping on signal");
            r = 0;
            goto out;
        }
    }
out:
    sigprocmask(SIG_SETMASK, &old, NULL);
    return r;
}
