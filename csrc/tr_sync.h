/*
 * tr_sync.h - internal helpers (not part of the cffi interface) for the
 * mutex/condition-variable waits every structure of the core uses.
 *
 * Condition variables are bound to CLOCK_MONOTONIC so a wall-clock jump never
 * stretches or cuts a timeout.  Deadlines are absolute struct timespec values
 * on that clock, computed once per blocking call so spurious wake-ups do not
 * extend the total wait.
 */
#ifndef TR_SYNC_H
#define TR_SYNC_H

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <time.h>

/* Initialises cv to measure timeouts on CLOCK_MONOTONIC.  0 or an errno. */
static inline int tr_cond_init_monotonic(pthread_cond_t *cv)
{
    pthread_condattr_t attr;
    int rc = pthread_condattr_init(&attr);
    if (rc != 0)
        return rc;
    rc = pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    if (rc == 0)
        rc = pthread_cond_init(cv, &attr);
    pthread_condattr_destroy(&attr);
    return rc;
}

static inline int64_t tr_monotonic_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* The absolute CLOCK_MONOTONIC deadline timeout_ns from now (timeout_ns >= 0). */
static inline struct timespec tr_deadline_after(int64_t timeout_ns)
{
    int64_t at = tr_monotonic_ns();
    /* Saturate instead of overflowing for absurdly long timeouts. */
    if (timeout_ns > INT64_MAX - at)
        at = INT64_MAX;
    else
        at += timeout_ns;
    struct timespec ts;
    ts.tv_sec = (time_t)(at / 1000000000LL);
    ts.tv_nsec = (long)(at % 1000000000LL);
    return ts;
}

/*
 * Waits on cv (mu held) until signalled, or until *deadline when deadline is
 * not NULL.  Returns 0 when woken (possibly spuriously: callers re-check their
 * predicate in a loop) or ETIMEDOUT.
 */
static inline int tr_cond_wait_until(pthread_cond_t *cv, pthread_mutex_t *mu,
                                     const struct timespec *deadline)
{
    if (deadline == NULL)
        return pthread_cond_wait(cv, mu);
    return pthread_cond_timedwait(cv, mu, deadline);
}

#endif /* TR_SYNC_H */
