/* tr_common.c - process-wide helpers shared by the core's structures. */
#define _GNU_SOURCE
#include "tr_common.h"

#ifdef __linux__
#include <sys/prctl.h>
#endif

int tr_set_thread_timer_slack(uint64_t slack_ns)
{
#if defined(__linux__) && defined(PR_SET_TIMERSLACK)
    if (slack_ns == 0)
        slack_ns = 1; /* 0 would mean "reset to the default" */
    return prctl(PR_SET_TIMERSLACK, (unsigned long)slack_ns, 0, 0, 0) == 0 ? TR_OK : TR_INVALID;
#else
    (void)slack_ns;
    return TR_INVALID;
#endif
}
