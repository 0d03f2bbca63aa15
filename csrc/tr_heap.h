/*
 * tr_heap.h - a thread-safe binary min-heap of 64-bit tokens: the ready queue.
 *
 * ORDER.  Items leave highest priority first; within one priority, in the
 * order they were pushed (FIFO).  Each push takes the next value of a 64-bit
 * sequence counter owned by the heap, and the heap compares (priority
 * descending, sequence ascending).  The sequence cannot wrap in any realistic
 * lifetime: at one billion pushes a second, 2^64 pushes take 584 years, so
 * two items are never compared on a wrapped counter and FIFO holds by
 * construction (the Go original's int sequence could overflow and reorder).
 * Ordinary pushes count up from 2^63; tr_heap_unpop() counts down from
 * 2^63 - 1, so returned items sort before everything pushed (2^63 either way
 * is just as far from wrapping).
 *
 * TOKENS.  The heap holds opaque uint64_t tokens, never Python objects.  A
 * token may be held at most once at a time (TR_EXISTS otherwise); an
 * open-addressing index from token to heap slot makes tr_heap_remove()
 * O(log n).  Storage grows by doubling; pops never shrink it.
 *
 * IN-FLIGHT ACCOUNTING.  A token returned by a pop is "in flight" until the
 * caller reports it completed through the `completed` argument of a later
 * tr_heap_pop_wait() or through tr_heap_complete().  tr_heap_wait_idle()
 * waits until nothing is queued and nothing is in flight.
 *
 * LOW-PRIORITY CAP.  tr_heap_set_low_limit(h, p, k) allows at most k items
 * whose priority is <= p to be in flight at once.  While the cap is reached,
 * a pop whose head item is such a low item behaves as if the heap were empty
 * (the limited class must be the lowest priorities in use, so everything
 * behind it is low as well).  Completions of low items are reported through
 * `completed_low`.
 *
 * LAZY WAKE-UP.  By default a push wakes a waiting popper at once.  With
 * tr_heap_set_lazy_wake(h, min_len, delay_ns), while some popped item is
 * still in flight (a popper is busy and will come back), a push wakes a
 * waiter only once min_len items are queued; the waiters meanwhile re-check
 * the heap every delay_ns, so a queued item waits at most about delay_ns for
 * an idle popper.  And a popper coming back from a batch (completed > 0) that
 * finds fewer than min_len items queued naps up to delay_ns for a batch to
 * build up (a push that brings the count to min_len ends the nap).  On an
 * idle heap (nothing in flight) pushes still wake at once and nobody naps.
 * Under a GIL this turns many one-item hand-offs into a few batches.
 *
 * PREEMPTION HINTS.  tr_heap_epochs() returns a pointer to TR_HEAP_LEVELS
 * counters: epochs[i] counts pushes whose priority level is greater than i,
 * where an item's level is its priority clamped to [0, TR_HEAP_LEVELS - 1].
 * A worker that holds a batch of level-i items reads epochs[i] before each
 * item to learn, without a call, whether something more urgent arrived.  The
 * counters are written with atomic stores under the heap lock and may be read
 * at any time from any thread (relaxed: a stale value is a late hint).
 *
 * CONCURRENCY.  Every function may be called from any number of threads at
 * once, except tr_heap_free(), which must be the last call on the heap.  One
 * mutex guards the whole structure; blocking calls wait on a condition
 * variable with the mutex released and never hold it while the caller runs.
 * Nothing here touches Python or relies on the GIL.
 *
 * CLOSE.  tr_heap_close() wakes every waiter.  Afterwards pushes fail with
 * TR_CLOSED; pops keep returning queued items until the heap is empty and
 * then fail with TR_CLOSED at once instead of blocking (so a drain after
 * close loses nothing).
 *
 * COMPLEXITY.  push, pop, remove: O(log n); peek, len: O(1); a batch pop of
 * k items: O(k log n) under one lock acquisition.
 */
#ifndef TR_HEAP_H
#define TR_HEAP_H

#include "tr_common.h"

#define TR_HEAP_LEVELS 8

typedef struct tr_heap tr_heap;

/* A new, empty heap in *out.  TR_OK or TR_NOMEM. */
int tr_heap_new(tr_heap **out);
/* Frees the heap.  No other call may be running or made afterwards. */
void tr_heap_free(tr_heap *h);

/* Queues token at priority.  TR_OK, TR_EXISTS, TR_CLOSED or TR_NOMEM. */
int tr_heap_push(tr_heap *h, uint64_t token, int32_t priority);
/*
 * Queues n tokens in array order under one lock acquisition, all or none:
 * TR_EXISTS if any token is already held or repeated, TR_CLOSED, TR_NOMEM.
 */
int tr_heap_push_many(tr_heap *h, const uint64_t *tokens, const int32_t *priorities, size_t n);

/* Removes the head into *token (and *priority unless NULL).  TR_EMPTY/TR_CLOSED. */
int tr_heap_pop(tr_heap *h, uint64_t *token, int32_t *priority);
/*
 * Removes up to max items in order into out[], *n set to the count (0 when
 * empty).  Never blocks.  TR_OK, or TR_CLOSED once closed and drained.
 * Honours the low-priority cap.
 */
int tr_heap_pop_many(tr_heap *h, uint64_t *out, size_t max, size_t *n);
/*
 * The worker call.  First retires `completed` in-flight items (of which
 * `completed_low` were low items), then waits up to timeout_ns for work and
 * removes a batch: items that all share the head's priority (written to
 * *priority), at most max of them and at most a fair share, the queued count
 * of that priority divided by the number of waiting poppers plus one.
 * TR_OK with *n >= 1, TR_TIMEOUT, or TR_CLOSED once closed and drained.
 */
int tr_heap_pop_wait(tr_heap *h, uint64_t *out, size_t max, size_t *n, int32_t *priority,
                     size_t completed, size_t completed_low, int64_t timeout_ns);
/*
 * Gives back n in-flight items of one priority that a worker popped but will
 * not run now (a more urgent item arrived): they return to the front of their
 * priority in array order, ahead of everything queued at that priority, and
 * stop counting as in flight.  Allowed after close.  TR_OK, TR_EXISTS (a token
 * is queued already; nothing changed), TR_INVALID (more than are in flight),
 * TR_NOMEM.
 */
int tr_heap_unpop(tr_heap *h, const uint64_t *tokens, size_t n, int32_t priority);
/* Retires in-flight items without popping (see pop_wait).  TR_OK or TR_INVALID
 * when more are reported than are in flight (nothing is changed then). */
int tr_heap_complete(tr_heap *h, size_t completed, size_t completed_low);

/* The head without removing it.  TR_OK or TR_EMPTY. */
int tr_heap_peek(tr_heap *h, uint64_t *token, int32_t *priority);
/* Removes a queued token.  TR_OK or TR_NOT_FOUND. */
int tr_heap_remove(tr_heap *h, uint64_t token);

/* Number of queued items. */
size_t tr_heap_len(tr_heap *h);
/* Number of popped items not yet reported completed. */
size_t tr_heap_in_flight(tr_heap *h);
/* Number of threads blocked in tr_heap_pop_wait() right now. */
size_t tr_heap_waiters(tr_heap *h);
/* Queued items per priority level (see PREEMPTION HINTS), into counts[TR_HEAP_LEVELS]. */
void tr_heap_level_counts(tr_heap *h, size_t *counts);
/* Bytes of memory the heap holds. */
size_t tr_heap_memory(tr_heap *h);
/* Checks the heap's internal invariants (for tests): TR_OK, or TR_INVALID
 * if one is broken.  O(len + index size), under the heap's lock. */
int tr_heap_check(tr_heap *h);
/* The preemption counters (see above); valid until tr_heap_free(). */
const uint64_t *tr_heap_epochs(tr_heap *h);

/* Sets the lazy wake-up (see above); min_len 0 turns it off.  TR_OK, or
 * TR_INVALID if delay_ns <= 0 while min_len > 0. */
int tr_heap_set_lazy_wake(tr_heap *h, size_t min_len, int64_t delay_ns);

/* Sets the low-priority cap (see above); limit 0 means "no cap".  TR_OK. */
int tr_heap_set_low_limit(tr_heap *h, int32_t max_low_priority, size_t limit);

/*
 * Waits until nothing is queued and nothing is in flight.  TR_OK or
 * TR_TIMEOUT.  Closing does not end the wait early: a closed heap with work
 * left still drains.
 */
int tr_heap_wait_idle(tr_heap *h, int64_t timeout_ns);

/* Closes the heap and wakes every waiter.  Idempotent.  TR_OK. */
int tr_heap_close(tr_heap *h);
/* 1 once tr_heap_close() was called, else 0. */
int tr_heap_is_closed(tr_heap *h);

#endif /* TR_HEAP_H */
