/*
 * tr_common.h - status codes shared by every structure of the taskrunner C core.
 *
 * Every exported function returns an int that is one of these values (or a
 * count where the function's own contract says so).  Python maps a status to
 * an exception in exactly one place: taskrunner/_native.py:check().
 *
 * This header, like every public header of the core, is declaration-only:
 * taskrunner/_ffi_build.py feeds it to cffi's cdef() after dropping the
 * preprocessor lines, so it must hold nothing cdef cannot parse.
 */
#ifndef TR_COMMON_H
#define TR_COMMON_H

#include <stddef.h>
#include <stdint.h>

enum tr_status {
    TR_OK = 0,        /* success */
    TR_EMPTY = 1,     /* nothing to pop (non-blocking call) */
    TR_FULL = 2,      /* a bounded structure has no room (non-blocking call) */
    TR_CLOSED = 3,    /* closed: pushes refused; pops refused once drained */
    TR_TIMEOUT = 4,   /* a blocking call's timeout ran out */
    TR_NOT_FOUND = 5, /* the token is not held by the structure */
    TR_EXISTS = 6,    /* the token is already held by the structure */
    TR_NOMEM = 7,     /* allocation failed; the structure is unchanged */
    TR_INVALID = 8    /* an argument is out of range; the structure is unchanged */
};

/* Timeouts of blocking calls are relative, in nanoseconds, measured on
 * CLOCK_MONOTONIC.  A negative timeout waits forever; 0 does not wait. */

/* Lowers this calling thread's kernel timer slack (Linux prctl
 * PR_SET_TIMERSLACK) so its timed waits overshoot less.  Returns TR_OK, or
 * TR_INVALID where the platform has no such setting. */
int tr_set_thread_timer_slack(uint64_t slack_ns);

#endif /* TR_COMMON_H */
