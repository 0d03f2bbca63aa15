/*
 * tr_ring.c - the bounded MPMC ring of tr_ring.h.
 *
 * DESIGN.  Dmitry Vyukov's bounded MPMC queue (the design of crossbeam's
 * ArrayQueue), extended with close, eviction and blocking waits.
 *
 *   cells[capacity]   each {seq, token}; capacity = mask + 1, a power of two.
 *   tail              the next push position, plus CLOSED_BIT once closed.
 *   head              the next pop position.
 *
 * Positions are 64-bit counters that never wrap in practice (2^63 pushes
 * take 292 years at one billion a second); position p lives in cell
 * p & mask.  A cell's seq says what the cell is ready for:
 *
 *   seq == p            free: the producer that claims position p may write it;
 *   seq == p + 1        published: holds the token of position p, ready to pop;
 *   seq == p + capacity released by the consumer of p: free for position
 *                       p + capacity (the same cell, one lap later).
 *
 * A producer claims position t by a CAS of tail from t to t + 1 after
 * seeing seq == t, writes the token and publishes seq = t + 1 (release).  A
 * consumer claims position h (or a batch h .. h+k-1, all seen published) by
 * a CAS of head from h to h + k, reads the tokens and releases each cell
 * with seq = h + capacity (release).  The CAS hands the cell to exactly one
 * thread; the seq release/acquire pairs order the token write before its
 * read and the read before the next lap's write.  So no lock is taken by
 * try_push, try_pop, pop_many or push_evict.
 *
 * COUNTERS.  Every load and CAS of head and tail is seq_cst.  On x86 that
 * is free (a CAS is a locked instruction either way, a load a plain move);
 * elsewhere it costs little.  It keeps head and tail in one total order with
 * the waiter protocol's fences (BLOCKING below), so a waiter's re-check never
 * reads a tail older than a claim that preceded a release it missed the
 * signal of.  Cell seq values are plain acquire/release.
 *
 * CLOSE sets CLOSED_BIT in tail with one atomic OR.  Every claim CASes tail
 * from a value without the bit, so after the OR no push can claim a
 * position: a push either claimed before the close (and its token will be
 * drained) or fails with TR_CLOSED.  The closed tail is final, so a pop that
 * finds its position unpublished and tail == (position | CLOSED_BIT) knows
 * the ring is closed *and* drained.
 *
 * EVICTION.  push_evict on a full ring claims the tail position t anyway
 * (its cell still holds position h = t - capacity, the oldest token not yet
 * popped by anyone ahead of us) and then either pops h itself with the same
 * head CAS consumers use - the token it takes is the evicted one - or, if a
 * consumer wins that CAS, waits for that consumer to release the cell.
 * Either way it then writes its own token into the cell.  While it is in
 * progress the cell is neither free nor published for position t, so other
 * producers see the ring full and consumers see position t in flight.
 *
 * IN FLIGHT.  Between a claim and its publish/release (a few instructions)
 * a cell is "in flight": a try_pop at that position sees TR_EMPTY (after a
 * short spin) even if later positions are published, and a try_push sees
 * TR_FULL.  This is Vyukov's relaxation; blocking calls are unaffected
 * because the in-flight thread wakes waiters when it finishes.  An evictor
 * whose predecessor is preempted mid-flight spins and then yields the CPU
 * until it resumes (like crossbeam's ArrayQueue, the ring is not lock-free
 * in the strict sense).
 *
 * BLOCKING.  Waiters use one mutex and two condition variables (not_empty,
 * not_full) and announce themselves in pop_waiters / push_waiters.  Every
 * operation that publishes (or releases) cells then checks the matching
 * count and, only if it is non-zero, locks the mutex and signals.  Lost
 * wake-ups are excluded by a store-buffering (Dekker) argument: the waiter
 * increments its count (holding the mutex), issues a seq_cst fence and then
 * re-checks the ring; the signaller publishes, issues a seq_cst fence and
 * then reads the count.  With both fences, at least one side sees the
 * other's write: either the waiter's re-check finds the token (or room), or
 * the signaller sees the count and, by locking the mutex the waiter holds
 * until it sleeps in pthread_cond_wait, signals after the waiter sleeps.
 * Close sets the bit, then always locks the mutex and broadcasts on both
 * variables: a waiter either sees the bit in its re-check or is asleep by
 * the time close holds the mutex.  A pop waiter that sees the bit but finds
 * a push claimed before the close still in flight does not sleep (nothing
 * would broadcast again); it yields until that token is published.
 */
#define _GNU_SOURCE
#include "tr_ring.h"

#include <sched.h>
#include <stdalign.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "tr_sync.h"

#define TR_CACHE_LINE 64
#define CLOSED_BIT ((uint64_t)1 << 63)
/* Largest capacity: positions keep bit 63 for CLOSED_BIT, and the cell array
 * must fit in size_t. */
#define TR_RING_MAX_CAPACITY ((size_t)1 << 40)
/* How long a try operation spins on a cell in flight before giving up. */
#define INFLIGHT_SPINS 32
/* How long an evictor spins before it starts yielding the CPU. */
#define EVICT_SPINS 64

#if defined(__x86_64__) || defined(__i386__)
#define cpu_relax() __builtin_ia32_pause()
#elif defined(__aarch64__) || defined(__arm__)
#define cpu_relax() __asm__ __volatile__("yield" ::: "memory")
#else
#define cpu_relax() ((void)0)
#endif

typedef struct tr_cell {
    _Atomic uint64_t seq; /* see the table above */
    uint64_t token;       /* owned by whoever the seq/CAS protocol hands the cell to */
} tr_cell;

struct tr_ring {
    /* Read-only after tr_ring_new(). */
    alignas(TR_CACHE_LINE) tr_cell *cells;
    uint64_t mask;

    /* Producers CAS this; close ORs CLOSED_BIT into it.  Its own line so
     * producers do not invalidate the consumers' head. */
    alignas(TR_CACHE_LINE) _Atomic uint64_t tail;

    /* Consumers (and evictors) CAS this. */
    alignas(TR_CACHE_LINE) _Atomic uint64_t head;

    /* Threads inside a blocking wait (registered under mu).  Read by every
     * publish/release, written only by waiters: its own line so that the
     * uncontended path reads a line nobody writes. */
    alignas(TR_CACHE_LINE) _Atomic uint32_t pop_waiters;
    _Atomic uint32_t push_waiters;

    /* Used only by blocking waiters, by signallers that saw a waiter, and by
     * close.  mu guards no ring data: it only makes "re-check, then sleep"
     * atomic with respect to a signaller. */
    alignas(TR_CACHE_LINE) pthread_mutex_t mu;
    pthread_cond_t not_empty; /* a token was published, or the ring closed */
    pthread_cond_t not_full;  /* a cell was released, or the ring closed */
};

/* ---------------------------------------------------------------- create */

int tr_ring_new(size_t capacity, tr_ring **out)
{
    if (out == NULL || capacity < 2 || (capacity & (capacity - 1)) != 0)
        return TR_INVALID;
    if (capacity > TR_RING_MAX_CAPACITY)
        return TR_NOMEM;

    size_t ring_bytes = (sizeof(tr_ring) + TR_CACHE_LINE - 1) & ~(size_t)(TR_CACHE_LINE - 1);
    tr_ring *r = aligned_alloc(TR_CACHE_LINE, ring_bytes);
    if (r == NULL)
        return TR_NOMEM;
    memset(r, 0, sizeof *r);
    /* capacity * 16 is a multiple of 64 for capacity >= 4; round up for 2. */
    size_t cell_bytes = capacity * sizeof(tr_cell);
    cell_bytes = (cell_bytes + TR_CACHE_LINE - 1) & ~(size_t)(TR_CACHE_LINE - 1);
    r->cells = aligned_alloc(TR_CACHE_LINE, cell_bytes);
    if (r->cells == NULL) {
        free(r);
        return TR_NOMEM;
    }
    r->mask = (uint64_t)capacity - 1;
    for (size_t i = 0; i < capacity; i++) {
        atomic_init(&r->cells[i].seq, (uint64_t)i);
        r->cells[i].token = 0;
    }
    atomic_init(&r->tail, 0);
    atomic_init(&r->head, 0);
    atomic_init(&r->pop_waiters, 0);
    atomic_init(&r->push_waiters, 0);

    if (pthread_mutex_init(&r->mu, NULL) != 0)
        goto fail_mu;
    if (tr_cond_init_monotonic(&r->not_empty) != 0)
        goto fail_ne;
    if (tr_cond_init_monotonic(&r->not_full) != 0)
        goto fail_nf;
    *out = r;
    return TR_OK;

fail_nf:
    pthread_cond_destroy(&r->not_empty);
fail_ne:
    pthread_mutex_destroy(&r->mu);
fail_mu:
    free(r->cells);
    free(r);
    return TR_NOMEM;
}

void tr_ring_free(tr_ring *r)
{
    if (r == NULL)
        return;
    pthread_cond_destroy(&r->not_full);
    pthread_cond_destroy(&r->not_empty);
    pthread_mutex_destroy(&r->mu);
    free(r->cells);
    free(r);
}

/* ---------------------------------------------------------------- wake-ups */

/*
 * Called after publishing (or releasing) cells, never with mu held.  The
 * fence orders the seq stores above before the waiter-count load below; it
 * pairs with the fence in the wait loops (see BLOCKING at the top).
 */
static void wake(tr_ring *r, _Atomic uint32_t *waiters, pthread_cond_t *cv, int all)
{
    atomic_thread_fence(memory_order_seq_cst);
    uint32_t n = atomic_load_explicit(waiters, memory_order_relaxed);
    if (n == 0)
        return;
    pthread_mutex_lock(&r->mu);
    /* One registered waiter: signal.  Several: broadcast.  Signalling one
     * of several would be enough by POSIX, but glibc's condition variable
     * can lose such a signal (sourceware bug 25847, in glibc 2.27 to 2.40),
     * and a lost wake-up here is a hang.  Waiters that wake to find nothing
     * just sleep again. */
    if (all || n > 1)
        pthread_cond_broadcast(cv);
    else
        pthread_cond_signal(cv);
    pthread_mutex_unlock(&r->mu);
}

static inline void wake_poppers(tr_ring *r)
{
    wake(r, &r->pop_waiters, &r->not_empty, 0);
}

static inline void wake_pushers(tr_ring *r, size_t released)
{
    wake(r, &r->push_waiters, &r->not_full, released > 1);
}

/* ---------------------------------------------------------------- push */

/* Try once to push; does not wake anyone.  TR_OK, TR_FULL or TR_CLOSED. */
static int push_raw(tr_ring *r, uint64_t token)
{
    uint64_t t = atomic_load_explicit(&r->tail, memory_order_seq_cst);
    for (;;) {
        if (t & CLOSED_BIT)
            return TR_CLOSED;
        tr_cell *c = &r->cells[t & r->mask];
        /* Acquire: pairs with the release by the consumer that freed this
         * cell, so our token write below follows its token read. */
        uint64_t seq = atomic_load_explicit(&c->seq, memory_order_acquire);
        int64_t dif = (int64_t)(seq - t);
        if (dif == 0) {
            /* The cell's seq carries the token's ordering; the CAS is
             * seq_cst for the waiters' sake (COUNTERS above).  On failure t
             * is reloaded (it may now carry CLOSED_BIT). */
            if (atomic_compare_exchange_weak_explicit(&r->tail, &t, t + 1, memory_order_seq_cst,
                                                      memory_order_seq_cst)) {
                c->token = token;
                /* Release: publishes the token to the consumer of t. */
                atomic_store_explicit(&c->seq, t + 1, memory_order_release);
                return TR_OK;
            }
        } else if (dif < 0) {
            /* The cell still holds position t - capacity (or its consumer is
             * mid-pop): the ring is full - unless t is stale and an evictor
             * claimed t while holding the cell, so look again. */
            uint64_t now = atomic_load_explicit(&r->tail, memory_order_seq_cst);
            if (now == t)
                return TR_FULL;
            t = now;
        } else {
            /* Another producer claimed t; catch up. */
            t = atomic_load_explicit(&r->tail, memory_order_seq_cst);
        }
    }
}

int tr_ring_try_push(tr_ring *r, uint64_t token)
{
    int rc = push_raw(r, token);
    if (rc == TR_OK)
        wake_poppers(r);
    return rc;
}

int tr_ring_push_evict(tr_ring *r, uint64_t token, uint64_t *evicted, int *did_evict)
{
    *did_evict = 0;
    uint64_t t = atomic_load_explicit(&r->tail, memory_order_seq_cst);
    tr_cell *c;
    for (;;) {
        if (t & CLOSED_BIT)
            return TR_CLOSED;
        c = &r->cells[t & r->mask];
        uint64_t seq = atomic_load_explicit(&c->seq, memory_order_acquire);
        int64_t dif = (int64_t)(seq - t);
        if (dif > 0) {
            t = atomic_load_explicit(&r->tail, memory_order_seq_cst);
            continue;
        }
        /* dif == 0: an ordinary push.  dif < 0: the ring is full; claim t
         * anyway and evict below.  Either way the claim is the same CAS. */
        if (atomic_compare_exchange_weak_explicit(&r->tail, &t, t + 1, memory_order_seq_cst,
                                                  memory_order_seq_cst))
            break;
    }

    /* We own position t.  Its cell is either free (seq == t) or holds the
     * oldest position h = t - capacity (seq == h + 1, or seq == h while h's
     * producer is still in flight). */
    uint64_t h = t - (r->mask + 1);
    for (unsigned spins = 0;; spins++) {
        uint64_t seq = atomic_load_explicit(&c->seq, memory_order_acquire);
        if (seq == t)
            break; /* free (possibly just released by a consumer): plain push */
        if (seq == h + 1 && atomic_load_explicit(&r->head, memory_order_seq_cst) == h) {
            uint64_t expect = h;
            /* The consumers' claim: whoever moves head past h owns h's token. */
            if (atomic_compare_exchange_strong_explicit(&r->head, &expect, h + 1,
                                                        memory_order_seq_cst,
                                                        memory_order_seq_cst)) {
                *evicted = c->token; /* ordered by the acquire load of seq == h + 1 */
                *did_evict = 1;
                break;
            }
        }
        /* Waiting for h's producer to publish, for the positions before h to
         * be popped, or for a consumer that won h to release the cell. */
        if (spins < EVICT_SPINS)
            cpu_relax();
        else
            sched_yield();
    }
    c->token = token;
    atomic_store_explicit(&c->seq, t + 1, memory_order_release);
    /* Even after an eviction: a pop may be waiting at position t itself. */
    wake_poppers(r);
    return TR_OK;
}

/* ---------------------------------------------------------------- pop */

/*
 * Removes up to max (>= 1) tokens without waiting and without waking anyone.
 * TR_OK with *n >= 1, TR_EMPTY (nothing ready now, *n == 0), or TR_CLOSED
 * (closed and drained, *n == 0).
 */
static int take_raw(tr_ring *r, uint64_t *out, size_t max, size_t *n)
{
    const uint64_t capacity = r->mask + 1;
    size_t got = 0;
    unsigned spins = 0;
    uint64_t h = atomic_load_explicit(&r->head, memory_order_seq_cst);
    while (got < max) {
        tr_cell *c = &r->cells[h & r->mask];
        /* Acquire: pairs with the producer's publish; orders the token read. */
        uint64_t seq = atomic_load_explicit(&c->seq, memory_order_acquire);
        int64_t dif = (int64_t)(seq - (h + 1));
        if (dif == 0) {
            /* Count the published run h .. h+k-1 (never more than one lap). */
            uint64_t k = 1;
            uint64_t want = max - got;
            if (want > capacity)
                want = capacity;
            while (k < want) {
                uint64_t p = h + k;
                uint64_t s = atomic_load_explicit(&r->cells[p & r->mask].seq, memory_order_acquire);
                if (s != p + 1)
                    break;
                k++;
            }
            /* Cells seen published stay so until head moves past them, so if
             * the CAS succeeds all k are ours.  On failure h is reloaded. */
            if (atomic_compare_exchange_weak_explicit(&r->head, &h, h + k, memory_order_seq_cst,
                                                      memory_order_seq_cst)) {
                for (uint64_t i = 0; i < k; i++) {
                    tr_cell *ci = &r->cells[(h + i) & r->mask];
                    out[got + i] = ci->token;
                    /* Release: our token read happens before the next lap's
                     * producer writes the cell. */
                    atomic_store_explicit(&ci->seq, h + i + capacity, memory_order_release);
                }
                got += (size_t)k;
                h += k;
            }
        } else if (dif < 0) {
            /* Position h is not published: head == h (a stale head would
             * find its cell consumed, dif > 0). */
            if (got > 0)
                break;
            uint64_t t = atomic_load_explicit(&r->tail, memory_order_seq_cst);
            if ((t & ~CLOSED_BIT) == h) {
                /* Nothing claimed beyond h.  A closed tail is final, so this
                 * is "closed and drained". */
                *n = 0;
                return (t & CLOSED_BIT) ? TR_CLOSED : TR_EMPTY;
            }
            /* A producer claimed h and has not published yet. */
            if (++spins > INFLIGHT_SPINS)
                break;
            cpu_relax();
            h = atomic_load_explicit(&r->head, memory_order_seq_cst);
        } else {
            /* Another consumer took h; catch up. */
            h = atomic_load_explicit(&r->head, memory_order_seq_cst);
        }
    }
    *n = got;
    return got > 0 ? TR_OK : TR_EMPTY;
}

int tr_ring_try_pop(tr_ring *r, uint64_t *token)
{
    size_t n;
    int rc = take_raw(r, token, 1, &n);
    if (rc == TR_OK)
        wake_pushers(r, 1);
    return rc;
}

int tr_ring_pop_many(tr_ring *r, uint64_t *out, size_t max, size_t *n)
{
    *n = 0;
    if (max == 0) {
        /* Report closed-and-drained consistently even for an empty request. */
        uint64_t t = atomic_load_explicit(&r->tail, memory_order_seq_cst);
        uint64_t h = atomic_load_explicit(&r->head, memory_order_seq_cst);
        return ((t & CLOSED_BIT) && (t & ~CLOSED_BIT) == h) ? TR_CLOSED : TR_OK;
    }
    int rc = take_raw(r, out, max, n);
    if (rc == TR_OK)
        wake_pushers(r, *n);
    return rc == TR_EMPTY ? TR_OK : rc;
}

/* ---------------------------------------------------------------- waits */

/* Whether the CLOCK_MONOTONIC deadline has passed. */
static int past(const struct timespec *deadline)
{
    int64_t at = (int64_t)deadline->tv_sec * 1000000000LL + deadline->tv_nsec;
    return tr_monotonic_ns() >= at;
}

/*
 * The blocking pop: waits until take_raw() gets at least one token.
 * TR_OK (*n >= 1), TR_TIMEOUT or TR_CLOSED.
 */
static int take_wait(tr_ring *r, uint64_t *out, size_t max, size_t *n, int64_t timeout_ns)
{
    int rc = take_raw(r, out, max, n);
    if (rc == TR_EMPTY && timeout_ns != 0) {
        struct timespec deadline;
        if (timeout_ns > 0)
            deadline = tr_deadline_after(timeout_ns);
        int timed_out = 0;
        pthread_mutex_lock(&r->mu);
        atomic_fetch_add_explicit(&r->pop_waiters, 1, memory_order_seq_cst);
        for (;;) {
            /* Pairs with the fence in wake(): our registration is visible
             * to a publisher, or its token is visible to our re-check. */
            atomic_thread_fence(memory_order_seq_cst);
            rc = take_raw(r, out, max, n);
            if (rc != TR_EMPTY || timed_out)
                break;
            if (tr_ring_is_closed(r)) {
                /* Closed, yet a push claimed before the close is still in
                 * flight.  Never sleep on a closed ring: close's broadcast
                 * may be behind us, so the drain after close should not
                 * hang on any one wake-up.  The push publishes within a few
                 * instructions; yield until it has. */
                pthread_mutex_unlock(&r->mu);
                sched_yield();
                pthread_mutex_lock(&r->mu);
                timed_out = timeout_ns > 0 && past(&deadline);
                continue;
            }
            if (tr_cond_wait_until(&r->not_empty, &r->mu, timeout_ns > 0 ? &deadline : NULL) ==
                ETIMEDOUT)
                timed_out = 1; /* re-check once more, then give up */
        }
        atomic_fetch_sub_explicit(&r->pop_waiters, 1, memory_order_relaxed);
        pthread_mutex_unlock(&r->mu);
        if (rc == TR_EMPTY)
            rc = TR_TIMEOUT;
    } else if (rc == TR_EMPTY) {
        rc = TR_TIMEOUT;
    }
    if (rc == TR_OK)
        wake_pushers(r, *n);
    return rc;
}

int tr_ring_pop_wait(tr_ring *r, uint64_t *token, int64_t timeout_ns)
{
    size_t n;
    return take_wait(r, token, 1, &n, timeout_ns);
}

int tr_ring_pop_many_wait(tr_ring *r, uint64_t *out, size_t max, size_t *n, int64_t timeout_ns)
{
    *n = 0;
    if (max == 0)
        return TR_INVALID;
    return take_wait(r, out, max, n, timeout_ns);
}

int tr_ring_pop_many_linger(tr_ring *r, uint64_t *out, size_t max, size_t *n, size_t min,
                            int64_t linger_ns, int64_t timeout_ns)
{
    *n = 0;
    if (max == 0)
        return TR_INVALID;
    int rc = take_raw(r, out, max, n);
    if (rc != TR_OK)
        return take_wait(r, out, max, n, timeout_ns); /* nothing queued: no lingering */
    wake_pushers(r, *n);
    if (*n >= min || *n >= max || linger_ns <= 0)
        return TR_OK;
    /* A stream: let a batch build up before handing it over. */
    struct timespec nap = {(time_t)(linger_ns / 1000000000LL), (long)(linger_ns % 1000000000LL)};
    nanosleep(&nap, NULL);
    size_t more = 0;
    if (take_raw(r, out + *n, max - *n, &more) == TR_OK) {
        wake_pushers(r, more);
        *n += more;
    }
    return TR_OK;
}

int tr_ring_push_wait(tr_ring *r, uint64_t token, int64_t timeout_ns)
{
    int rc = push_raw(r, token);
    if (rc == TR_FULL && timeout_ns != 0) {
        struct timespec deadline;
        if (timeout_ns > 0)
            deadline = tr_deadline_after(timeout_ns);
        int timed_out = 0;
        pthread_mutex_lock(&r->mu);
        atomic_fetch_add_explicit(&r->push_waiters, 1, memory_order_seq_cst);
        for (;;) {
            atomic_thread_fence(memory_order_seq_cst); /* see take_wait() */
            rc = push_raw(r, token);
            if (rc != TR_FULL || timed_out)
                break;
            if (tr_cond_wait_until(&r->not_full, &r->mu, timeout_ns > 0 ? &deadline : NULL) ==
                ETIMEDOUT)
                timed_out = 1;
        }
        atomic_fetch_sub_explicit(&r->push_waiters, 1, memory_order_relaxed);
        pthread_mutex_unlock(&r->mu);
        if (rc == TR_FULL)
            rc = TR_TIMEOUT;
    } else if (rc == TR_FULL) {
        rc = TR_TIMEOUT;
    }
    if (rc == TR_OK)
        wake_poppers(r);
    return rc;
}

/* ---------------------------------------------------------------- state */

size_t tr_ring_len(tr_ring *r)
{
    /* head first: head <= tail always holds, and tail only grows, so a tail
     * read after head is >= it.  Evictors can make tail - head exceed the
     * capacity for a moment; clamp. */
    uint64_t h = atomic_load_explicit(&r->head, memory_order_seq_cst);
    uint64_t t = atomic_load_explicit(&r->tail, memory_order_seq_cst) & ~CLOSED_BIT;
    uint64_t n = t > h ? t - h : 0;
    return n > r->mask + 1 ? (size_t)(r->mask + 1) : (size_t)n;
}

uint64_t tr_ring_pushed(tr_ring *r)
{
    /* tail is the next push position: the count of positions claimed. */
    return atomic_load_explicit(&r->tail, memory_order_seq_cst) & ~CLOSED_BIT;
}

size_t tr_ring_capacity(tr_ring *r)
{
    return (size_t)(r->mask + 1);
}

size_t tr_ring_memory(tr_ring *r)
{
    return sizeof(tr_ring) + (size_t)(r->mask + 1) * sizeof(tr_cell);
}

int tr_ring_close(tr_ring *r)
{
    atomic_fetch_or_explicit(&r->tail, CLOSED_BIT, memory_order_seq_cst);
    /* Unconditionally: a waiter registered under mu either sees the bit in
     * its re-check or is asleep by the time we hold mu. */
    pthread_mutex_lock(&r->mu);
    pthread_cond_broadcast(&r->not_empty);
    pthread_cond_broadcast(&r->not_full);
    pthread_mutex_unlock(&r->mu);
    return TR_OK;
}

int tr_ring_is_closed(tr_ring *r)
{
    return (atomic_load_explicit(&r->tail, memory_order_seq_cst) & CLOSED_BIT) != 0;
}
