/*
 * tr_wheel.h - a thread-safe hierarchical timing wheel of 64-bit tokens: the delays.
 *
 * TIME.  The wheel never reads a clock to decide what is due: callers pass
 * "now" (int64 nanoseconds on whatever clock they inject, monotonic by
 * default, a mock clock in tests).  A token is due once now >= its deadline:
 * it is never handed out early, and never later than the first advance at or
 * after its deadline (so at most one tick late whenever the caller advances
 * at least once a tick).  Internally deadlines are bucketed into ticks of
 * tick_ns (default 1 ms) counted from start_ns; a tick's tokens are sorted
 * together when the wheel reaches it.  To batch wake-ups, a timer thread may
 * sleep until the next deadline rounded up to a tick boundary (see
 * tr_wheel_tick) and every token of that tick comes out in one advance; to be
 * punctual it sleeps until the exact next deadline, which is then due (no
 * spinning until a tick boundary).  Deadlines up to at least 30 days past the
 * wheel's current tick are held in the wheel levels; later ones wait in an
 * overflow list and move into the wheel as time approaches (any int64
 * deadline is accepted).  A deadline at or before the wheel's current time is
 * due at the next advance.
 *
 * TOKENS.  Opaque uint64_t values, never Python objects, each held at most
 * once (TR_EXISTS).  A token -> timer index makes insert and cancel O(1).
 *
 * ADVANCE.  tr_wheel_advance(now) moves the wheel's current time forward
 * (never back) and hands out due tokens, earliest deadline first, ties in
 * insertion order.  If more are due than fit in the caller's array, the rest
 * stay due and the next call returns them (still earliest first).
 *
 * WAITING.  A timer thread asks tr_wheel_next_deadline(), which also returns
 * a generation number, sleeps in tr_wheel_wait(gen, timeout) and is woken
 * early when an insert creates an earlier next deadline than the one it was
 * told (the generation changes), or on close.  No wake-up is lost between the
 * two calls: a changed generation makes the wait return at once.
 *
 * CONCURRENCY.  Every function may be called from any number of threads at
 * once, except tr_wheel_free(), which must be the last call.  One mutex
 * guards the structure (tr_wheel_tick reads an immutable field without it);
 * tr_wheel_wait sleeps on a condition variable with the mutex released, so
 * inserts, cancels and advances proceed while a timer thread waits.  Nothing
 * here touches Python or relies on the GIL.
 *
 * CLOSE.  tr_wheel_close() wakes every waiter; later inserts fail with
 * TR_CLOSED; advance, cancel and the queries keep working so the owner can
 * drain or discard what is pending.
 *
 * COMPLEXITY.  insert, cancel: O(1) (O(log m) for a deadline inside the
 * current, already collected tick, m such timers); advance: O(levels) per
 * non-empty slot reached plus O(log b) per token of a tick sorted (b tokens
 * in that tick), cascading amortised O(levels) per timer, idle time skipped
 * for free; next_deadline: O(1) while the current tick holds timers, else
 * O(levels + one slot scan per level) at worst, then cached until the
 * earliest timer leaves.  About 40-48 bytes per pending timer (32-byte node
 * plus index); tr_wheel_memory() reports the total.  Storage is kept for
 * reuse when timers leave.
 */
#ifndef TR_WHEEL_H
#define TR_WHEEL_H

#include "tr_common.h"

typedef struct tr_wheel tr_wheel;

/*
 * A new wheel whose current time is start_ns (also the origin ticks are counted
 * from).  TR_INVALID if tick_ns <= 0 or out is NULL; TR_NOMEM.
 */
int tr_wheel_new(int64_t tick_ns, int64_t start_ns, tr_wheel **out);
/* Frees the wheel.  No other call may be running or made afterwards. */
void tr_wheel_free(tr_wheel *w);

/* Schedules token at deadline_ns.  TR_OK, TR_EXISTS, TR_CLOSED or TR_NOMEM. */
int tr_wheel_insert(tr_wheel *w, uint64_t token, int64_t deadline_ns);
/* Unschedules a pending token.  TR_OK or TR_NOT_FOUND. */
int tr_wheel_cancel(tr_wheel *w, uint64_t token);

/*
 * Advances the current time to now_ns (ignored if earlier than the current
 * time) and removes up to max due tokens into out[], earliest first, with
 * their deadlines into deadlines[] unless it is NULL.  *n is set to the count.
 * TR_OK (also when nothing was due); TR_INVALID if n is NULL, or out is NULL
 * while max > 0.  max = 0 only moves the current time.
 */
int tr_wheel_advance(tr_wheel *w, int64_t now_ns, uint64_t *out, int64_t *deadlines,
                     size_t max, size_t *n);

/*
 * The earliest pending deadline (exact, in ns, not rounded to a tick) into
 * *deadline_ns, and the wake-up generation into *generation (unless NULL).
 * TR_OK, or TR_EMPTY when nothing is pending (the generation is still set).
 */
int tr_wheel_next_deadline(tr_wheel *w, int64_t *deadline_ns, uint64_t *generation);
/*
 * Blocks up to timeout_ns unless the generation differs from `generation`,
 * an insert changes it (a new earliest deadline), or the wheel is closed.
 * TR_OK when woken by such a change, TR_TIMEOUT, or TR_CLOSED.
 */
int tr_wheel_wait(tr_wheel *w, uint64_t generation, int64_t timeout_ns);
/* Wakes waiters as if the next deadline had changed (bumps the generation). */
void tr_wheel_kick(tr_wheel *w);

/* Number of pending timers. */
size_t tr_wheel_len(tr_wheel *w);
/* The wheel's current time in ns (the last now_ns advanced to, or start_ns). */
int64_t tr_wheel_now(tr_wheel *w);
/* The tick length in ns. */
int64_t tr_wheel_tick(tr_wheel *w);
/* Bytes of memory the wheel holds (its slots, timers and index). */
size_t tr_wheel_memory(tr_wheel *w);
/*
 * Threads blocked in tr_wheel_wait right now.  Once this reports k, those k
 * threads are asleep on the condition variable, so a test can make a change
 * and know it is a wake-up that it observes (and metrics can show idleness).
 */
size_t tr_wheel_waiters(tr_wheel *w);

/* Closes the wheel and wakes every waiter.  Idempotent.  TR_OK. */
int tr_wheel_close(tr_wheel *w);
int tr_wheel_is_closed(tr_wheel *w);

#endif /* TR_WHEEL_H */
