/*
 * tr_ring.h - a bounded multi-producer multi-consumer ring buffer of 64-bit
 * tokens: the backpressure queue of the single-thread runner.
 *
 * CAPACITY.  Fixed at creation, a power of two >= 2 (TR_INVALID otherwise).
 *
 * ORDER.  FIFO: tokens leave in the order their pushes took effect (each
 * push claims its slot in one atomic step inside the call).
 *
 * NON-BLOCKING CALLS.  try_push / try_pop / pop_many never wait (TR_FULL /
 * TR_EMPTY) and take no lock (a Vyukov bounded queue: per-slot sequence
 * numbers, head and tail counters on their own cache lines).  While another
 * thread is half-way through a push (a few instructions), a pop may report
 * TR_EMPTY even if later pushes have completed; likewise a push may report
 * TR_FULL while a pop is half-way through.  Blocking calls never miss such
 * a token or slot: the finishing thread wakes them.
 *
 * BLOCKING CALLS.  push_wait / pop_wait / pop_many_wait wait in C on a
 * condition variable with the lock released (so a Python caller waits with
 * the GIL released) until they can proceed, the timeout runs out
 * (TR_TIMEOUT), or the ring is closed (TR_CLOSED).  Producers and consumers
 * are woken only when someone waits, so the uncontended paths signal nothing.
 *
 * EVICTION.  push_evict pushes and, if the ring is full, removes the oldest
 * token first and returns it, atomically (the DROP_OLDEST policy).  It never
 * fails for lack of room; it may spin, then yield, for as long as an earlier
 * push or pop of the same slot is half-way through.
 *
 * CLOSE.  tr_ring_close() wakes every waiter.  Afterwards every push fails
 * with TR_CLOSED (distinct from TR_FULL); pops keep returning the tokens that
 * were queued and then fail with TR_CLOSED instead of TR_EMPTY or waiting.
 *
 * CONCURRENCY.  Every function may be called from any number of threads at
 * once, except tr_ring_free(), which must be the last call.  Nothing here
 * touches Python or relies on the GIL.  The tokens are opaque values, never
 * Python objects; unlike the heap and the wheel, the ring does not reject
 * a token it already holds.
 *
 * COMPLEXITY.  Every call is O(1) per token moved.
 */
#ifndef TR_RING_H
#define TR_RING_H

#include "tr_common.h"

typedef struct tr_ring tr_ring;

/* A new ring of `capacity` slots.  TR_INVALID unless a power of two >= 2; TR_NOMEM. */
int tr_ring_new(size_t capacity, tr_ring **out);
/* Frees the ring.  No other call may be running or made afterwards. */
void tr_ring_free(tr_ring *r);

/* TR_OK, TR_FULL or TR_CLOSED. */
int tr_ring_try_push(tr_ring *r, uint64_t token);
/* TR_OK, TR_EMPTY, or TR_CLOSED once closed and drained. */
int tr_ring_try_pop(tr_ring *r, uint64_t *token);
/* Waits for room.  TR_OK, TR_TIMEOUT or TR_CLOSED. */
int tr_ring_push_wait(tr_ring *r, uint64_t token, int64_t timeout_ns);
/* Waits for a token.  TR_OK, TR_TIMEOUT, or TR_CLOSED once closed and drained. */
int tr_ring_pop_wait(tr_ring *r, uint64_t *token, int64_t timeout_ns);
/*
 * Pushes token; when the ring is full, first removes the oldest token into
 * *evicted and sets *did_evict to 1 (else 0).  TR_OK or TR_CLOSED.
 */
int tr_ring_push_evict(tr_ring *r, uint64_t token, uint64_t *evicted, int *did_evict);
/* Removes up to max tokens into out[] without waiting; *n is the count.
 * TR_OK (also with *n == 0, and for max == 0), or TR_CLOSED once closed and
 * drained.  A call may return more than the capacity while producers race. */
int tr_ring_pop_many(tr_ring *r, uint64_t *out, size_t max, size_t *n);
/* Waits until at least one token is there, then removes up to max.
 * TR_OK with *n >= 1, TR_TIMEOUT, or TR_CLOSED once closed and drained;
 * TR_INVALID for max == 0. */
int tr_ring_pop_many_wait(tr_ring *r, uint64_t *out, size_t max, size_t *n, int64_t timeout_ns);

/*
 * Like pop_many_wait, but lingers for a batch: when tokens were already
 * queued on arrival (a stream) and fewer than min were taken, sleeps
 * linger_ns (in C, lock released) and then takes what arrived meanwhile, up
 * to max.  When it had to wait for the first token it returns at once, so an
 * idle ring keeps its wake-up latency.  Under a GIL this turns one-item
 * hand-offs between a producer and the consumer into batches.
 * TR_OK with *n >= 1, TR_TIMEOUT, TR_CLOSED once closed and drained, or
 * TR_INVALID when max == 0.
 */
int tr_ring_pop_many_linger(tr_ring *r, uint64_t *out, size_t max, size_t *n, size_t min,
                            int64_t linger_ns, int64_t timeout_ns);

/* Tokens queued now (a snapshot). */
size_t tr_ring_len(tr_ring *r);
/*
 * Pushes so far: every position a push (try, wait or evict) has claimed,
 * whether or not it is published yet; failed pushes do not count, evicted
 * tokens do.  Monotonic, and it stops growing once closed.  A consumer that
 * counts the tokens it has taken plus those evicted knows the ring is idle
 * (nothing queued, nothing in flight) when its count equals this.
 */
uint64_t tr_ring_pushed(tr_ring *r);
size_t tr_ring_capacity(tr_ring *r);
/* Bytes of memory the ring holds. */
size_t tr_ring_memory(tr_ring *r);

/* Closes the ring and wakes every waiter.  Idempotent.  TR_OK. */
int tr_ring_close(tr_ring *r);
int tr_ring_is_closed(tr_ring *r);

#endif /* TR_RING_H */
