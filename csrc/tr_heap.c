/*
 * tr_heap.c - the ready queue: a binary min-heap under one mutex.
 *
 * INVARIANTS (hold whenever h->mu is not held by a thread inside this file):
 *   1. items[0..len) is a heap under before(): for every i > 0,
 *      !before(items[i], items[(i - 1) / 2]).
 *   2. index maps each queued token to its position: for every i < len,
 *      index_find(items[i].token) yields a slot whose pos == i + 1, and the
 *      index holds exactly len tokens (pos 0 marks an empty slot).
 *   3. level_count[l] is the number of queued items of level l.
 *   4. push seqs are strictly increasing in push order, unpop seqs strictly
 *      decreasing, every unpop seq below every push seq; neither wraps.
 *   5. low_in_flight <= in_flight.
 *   6. items[i].slot is the index slot of items[i].token, so a heap move
 *      updates the index without hashing (index_delete and index_grow, which
 *      move slots, update the items they move).
 *
 * The index is open addressing with linear probing and backward-shift
 * deletion (no tombstones), kept at most half full, and has at most 2^32
 * slots (a slot number fits in the padding of heap_item).
 */
#include "tr_heap.h"
#include "tr_sync.h"

#include <stdlib.h>
#include <string.h>

typedef struct {
    uint64_t token;
    uint64_t seq;
    int32_t priority;
    uint32_t slot; /* this token's slot in the index (invariant 6) */
} heap_item;

typedef struct {
    uint64_t token;
    size_t pos; /* heap position + 1; 0 = empty slot */
} index_slot;

struct tr_heap {
    pthread_mutex_t mu;        /* guards every field below except epochs */
    pthread_cond_t work_cv;    /* poppers wait here for work (or close) */
    pthread_cond_t idle_cv;    /* tr_heap_wait_idle() waits here */
    pthread_cond_t nap_cv;     /* lazy poppers nap here for a batch to build up */

    heap_item *items;
    size_t len, cap;

    index_slot *index;
    size_t index_cap; /* power of two */

    uint64_t next_seq;  /* counts up from 2^63 (pushes) */
    uint64_t front_seq; /* counts down from 2^63 - 1 (unpops) */
    size_t level_count[TR_HEAP_LEVELS];

    size_t in_flight;      /* popped, not yet reported completed */
    size_t low_in_flight;  /* the part of in_flight with priority <= low_max_priority */
    size_t low_limit;      /* 0 = no cap */
    int32_t low_max_priority;

    size_t lazy_min_len;   /* 0: wake a waiter on every push (see the header) */
    int64_t lazy_delay_ns; /* how often lazy waiters re-check */

    size_t nappers;        /* lazy poppers napping for a batch (see pop_wait) */
    size_t waiters;        /* threads blocked in pop_wait */
    size_t timed_waiters;  /* the part of waiters that re-check every lazy_delay_ns */
    size_t signals;        /* work_cv signals sent and not yet consumed by a waiter */
    size_t idle_waiters;   /* threads blocked in wait_idle */
    int closed;

    /* epochs[i] counts pushes whose level is > i.  Written with atomic
     * stores under mu, read lock-free by anyone (see the header). */
    uint64_t epochs[TR_HEAP_LEVELS];
};

/* ---- ordering and levels ----------------------------------------------- */

static inline int before(const heap_item *a, const heap_item *b)
{
    if (a->priority != b->priority)
        return a->priority > b->priority;
    return a->seq < b->seq;
}

static inline int level_of(int32_t priority)
{
    if (priority < 0)
        return 0;
    if (priority >= TR_HEAP_LEVELS)
        return TR_HEAP_LEVELS - 1;
    return (int)priority;
}

static inline int is_low(const tr_heap *h, int32_t priority)
{
    return h->low_limit != 0 && priority <= h->low_max_priority;
}

/* ---- the token index --------------------------------------------------- */

static inline size_t hash_token(uint64_t x)
{
    /* splitmix64 finaliser: tokens are often sequential, spread them. */
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebULL;
    x ^= x >> 31;
    return (size_t)x;
}

/* The slot holding token, or NULL. */
static index_slot *index_find(tr_heap *h, uint64_t token)
{
    size_t mask = h->index_cap - 1;
    for (size_t i = hash_token(token) & mask;; i = (i + 1) & mask) {
        index_slot *s = &h->index[i];
        if (s->pos == 0)
            return NULL;
        if (s->token == token)
            return s;
    }
}

/* Inserts a token known to be absent; the index has room (kept half empty).
 * Returns the slot it took. */
static uint32_t index_put(index_slot *index, size_t cap, uint64_t token, size_t pos)
{
    size_t mask = cap - 1;
    size_t i = hash_token(token) & mask;
    while (index[i].pos != 0)
        i = (i + 1) & mask;
    index[i].token = token;
    index[i].pos = pos;
    return (uint32_t)i;
}

/* Deletes a slot by backward shifting the probe run that follows it. */
static void index_delete(tr_heap *h, index_slot *slot)
{
    size_t mask = h->index_cap - 1;
    size_t hole = (size_t)(slot - h->index);
    size_t i = hole;
    for (;;) {
        i = (i + 1) & mask;
        index_slot *s = &h->index[i];
        if (s->pos == 0)
            break;
        size_t home = hash_token(s->token) & mask;
        /* Move s into the hole unless its home lies cyclically in (hole, i]. */
        int home_in_range = hole <= i ? (hole < home && home <= i) : (hole < home || home <= i);
        if (!home_in_range) {
            h->index[hole] = *s;
            h->items[s->pos - 1].slot = (uint32_t)hole;
            hole = i;
        }
    }
    h->index[hole].pos = 0;
}

static int index_grow(tr_heap *h, size_t need)
{
    size_t cap = h->index_cap;
    while (need * 2 > cap)
        cap *= 2;
    if (cap == h->index_cap)
        return TR_OK;
    if (cap > (size_t)UINT32_MAX + 1)
        return TR_NOMEM; /* slot numbers are 32-bit (invariant 6) */
    index_slot *fresh = calloc(cap, sizeof *fresh);
    if (fresh == NULL)
        return TR_NOMEM;
    for (size_t i = 0; i < h->index_cap; i++) {
        size_t pos = h->index[i].pos;
        if (pos != 0)
            h->items[pos - 1].slot = index_put(fresh, cap, h->index[i].token, pos);
    }
    free(h->index);
    h->index = fresh;
    h->index_cap = cap;
    return TR_OK;
}

/* ---- heap moves (each keeps the index in step) ------------------------- */

static inline void place(tr_heap *h, size_t pos, heap_item item)
{
    h->items[pos] = item;
    h->index[item.slot].pos = pos + 1;
}

static void sift_up(tr_heap *h, size_t pos)
{
    heap_item item = h->items[pos];
    while (pos > 0) {
        size_t parent = (pos - 1) / 2;
        if (!before(&item, &h->items[parent]))
            break;
        place(h, pos, h->items[parent]);
        pos = parent;
    }
    place(h, pos, item);
}

static void sift_down(tr_heap *h, size_t pos)
{
    heap_item item = h->items[pos];
    for (;;) {
        size_t child = 2 * pos + 1;
        if (child >= h->len)
            break;
        if (child + 1 < h->len && before(&h->items[child + 1], &h->items[child]))
            child++;
        if (!before(&h->items[child], &item))
            break;
        place(h, pos, h->items[child]);
        pos = child;
    }
    place(h, pos, item);
}

static int reserve(tr_heap *h, size_t extra)
{
    size_t need = h->len + extra;
    if (need < h->len)
        return TR_NOMEM;
    if (need > h->cap) {
        size_t cap = h->cap;
        while (cap < need)
            cap *= 2;
        heap_item *items = realloc(h->items, cap * sizeof *items);
        if (items == NULL)
            return TR_NOMEM;
        h->items = items;
        h->cap = cap;
    }
    return index_grow(h, need);
}

/* Adds one item; room was reserved and the token is known to be absent. */
static void insert_locked(tr_heap *h, uint64_t token, int32_t priority, uint64_t seq)
{
    heap_item item = {token, seq, priority, 0};
    size_t pos = h->len++;
    item.slot = index_put(h->index, h->index_cap, token, pos + 1);
    h->items[pos] = item;
    sift_up(h, pos);
    int level = level_of(priority);
    h->level_count[level]++;
    for (int i = 0; i < level; i++)
        __atomic_store_n(&h->epochs[i], h->epochs[i] + 1, __ATOMIC_RELAXED);
}

static inline void push_locked(tr_heap *h, uint64_t token, int32_t priority)
{
    insert_locked(h, token, priority, h->next_seq++);
    if (h->nappers != 0 && h->len == h->lazy_min_len)
        pthread_cond_broadcast(&h->nap_cv); /* a batch is there: end the naps */
}

/* Removes the item at pos and returns it. */
static heap_item remove_at(tr_heap *h, size_t pos)
{
    heap_item out = h->items[pos];
    index_delete(h, &h->index[out.slot]); /* may move other items' slots */
    h->level_count[level_of(out.priority)]--;
    h->len--;
    if (pos != h->len) {
        heap_item last = h->items[h->len];
        place(h, pos, last);
        if (pos > 0 && before(&last, &h->items[(pos - 1) / 2]))
            sift_up(h, pos);
        else
            sift_down(h, pos);
    }
    return out;
}

/* ---- waking ------------------------------------------------------------- */

/* Wakes one popper if one waits that no earlier signal is already meant
 * for, unless the lazy wake-up says a busy popper will come back for it. */
static inline void wake_popper(tr_heap *h)
{
    if (h->waiters <= h->signals)
        return;
    /* Lazy: a busy or napping popper will take it, and every sleeping waiter
     * re-checks within lazy_delay_ns anyway.  A waiter that went to sleep
     * untimed (the heap was idle then) must be signalled, or work could wait
     * behind a long task while it sleeps. */
    if (h->lazy_min_len != 0 && (h->in_flight != 0 || h->nappers != 0) &&
        h->len < h->lazy_min_len && h->timed_waiters == h->waiters)
        return;
    h->signals++;
    pthread_cond_signal(&h->work_cv);
}

static inline void maybe_idle(tr_heap *h)
{
    if (h->len == 0 && h->in_flight == 0 && h->idle_waiters > 0)
        pthread_cond_broadcast(&h->idle_cv);
}

/* 1 if the head may be popped now: there is one and the low cap allows it. */
static inline int head_available(const tr_heap *h)
{
    if (h->len == 0)
        return 0;
    if (is_low(h, h->items[0].priority) && h->low_in_flight >= h->low_limit)
        return 0;
    return 1;
}

static inline void count_popped(tr_heap *h, int32_t priority)
{
    h->in_flight++;
    if (is_low(h, priority))
        h->low_in_flight++;
}

static int retire_locked(tr_heap *h, size_t completed, size_t completed_low)
{
    if (completed_low > completed || completed > h->in_flight || completed_low > h->low_in_flight)
        return TR_INVALID;
    h->in_flight -= completed;
    h->low_in_flight -= completed_low;
    if (completed_low > 0 && h->len > 0)
        wake_popper(h); /* a capped low head may be available now */
    maybe_idle(h);
    return TR_OK;
}

/* ---- public API ---------------------------------------------------------- */

int tr_heap_new(tr_heap **out)
{
    tr_heap *h = calloc(1, sizeof *h);
    if (h == NULL)
        return TR_NOMEM;
    h->cap = 64;
    h->items = malloc(h->cap * sizeof *h->items);
    h->index_cap = 128;
    h->next_seq = UINT64_C(1) << 63;
    h->front_seq = (UINT64_C(1) << 63) - 1;
    h->index = calloc(h->index_cap, sizeof *h->index);
    if (h->items == NULL || h->index == NULL)
        goto fail;
    if (pthread_mutex_init(&h->mu, NULL) != 0)
        goto fail;
    if (tr_cond_init_monotonic(&h->work_cv) != 0) {
        pthread_mutex_destroy(&h->mu);
        goto fail;
    }
    if (tr_cond_init_monotonic(&h->idle_cv) != 0) {
        pthread_cond_destroy(&h->work_cv);
        pthread_mutex_destroy(&h->mu);
        goto fail;
    }
    if (tr_cond_init_monotonic(&h->nap_cv) != 0) {
        pthread_cond_destroy(&h->idle_cv);
        pthread_cond_destroy(&h->work_cv);
        pthread_mutex_destroy(&h->mu);
        goto fail;
    }
    *out = h;
    return TR_OK;
fail:
    free(h->items);
    free(h->index);
    free(h);
    return TR_NOMEM;
}

void tr_heap_free(tr_heap *h)
{
    if (h == NULL)
        return;
    pthread_cond_destroy(&h->nap_cv);
    pthread_cond_destroy(&h->idle_cv);
    pthread_cond_destroy(&h->work_cv);
    pthread_mutex_destroy(&h->mu);
    free(h->items);
    free(h->index);
    free(h);
}

int tr_heap_push(tr_heap *h, uint64_t token, int32_t priority)
{
    int rc;
    pthread_mutex_lock(&h->mu);
    if (h->closed)
        rc = TR_CLOSED;
    else if (index_find(h, token) != NULL)
        rc = TR_EXISTS;
    else if ((rc = reserve(h, 1)) == TR_OK) {
        push_locked(h, token, priority);
        wake_popper(h);
    }
    pthread_mutex_unlock(&h->mu);
    return rc;
}

int tr_heap_push_many(tr_heap *h, const uint64_t *tokens, const int32_t *priorities, size_t n)
{
    int rc;
    pthread_mutex_lock(&h->mu);
    if (h->closed) {
        rc = TR_CLOSED;
        goto out;
    }
    if ((rc = reserve(h, n)) != TR_OK)
        goto out;
    size_t pushed = 0;
    for (; pushed < n; pushed++) {
        if (index_find(h, tokens[pushed]) != NULL) {
            rc = TR_EXISTS;
            break;
        }
        push_locked(h, tokens[pushed], priorities[pushed]);
    }
    if (rc != TR_OK) {
        /* All or none: take back what this call pushed. */
        for (size_t i = 0; i < pushed; i++)
            remove_at(h, index_find(h, tokens[i])->pos - 1);
        h->next_seq -= pushed; /* nothing else could take a seq meanwhile */
        goto out;
    }
    for (size_t i = 0; i < n; i++)
        wake_popper(h);
out:
    pthread_mutex_unlock(&h->mu);
    return rc;
}

int tr_heap_pop(tr_heap *h, uint64_t *token, int32_t *priority)
{
    int rc;
    pthread_mutex_lock(&h->mu);
    if (!head_available(h)) {
        rc = (h->closed && h->len == 0) ? TR_CLOSED : TR_EMPTY;
    } else {
        heap_item it = remove_at(h, 0);
        count_popped(h, it.priority);
        *token = it.token;
        if (priority != NULL)
            *priority = it.priority;
        rc = TR_OK;
    }
    pthread_mutex_unlock(&h->mu);
    return rc;
}

int tr_heap_pop_many(tr_heap *h, uint64_t *out, size_t max, size_t *n)
{
    size_t got = 0;
    int rc = TR_OK;
    pthread_mutex_lock(&h->mu);
    while (got < max && head_available(h)) {
        heap_item it = remove_at(h, 0);
        count_popped(h, it.priority);
        out[got++] = it.token;
    }
    if (got == 0 && h->closed && h->len == 0)
        rc = TR_CLOSED;
    pthread_mutex_unlock(&h->mu);
    *n = got;
    return rc;
}

int tr_heap_pop_wait(tr_heap *h, uint64_t *out, size_t max, size_t *n, int32_t *priority,
                     size_t completed, size_t completed_low, int64_t timeout_ns)
{
    *n = 0;
    if (max == 0)
        return TR_INVALID;
    pthread_mutex_lock(&h->mu);
    int rc = retire_locked(h, completed, completed_low);
    if (rc != TR_OK) {
        pthread_mutex_unlock(&h->mu);
        return rc;
    }
    struct timespec deadline;
    if (timeout_ns > 0)
        deadline = tr_deadline_after(timeout_ns);
    if (h->lazy_min_len != 0 && completed > 0 && timeout_ns != 0) {
        /* Back from a batch into a trickle: nap for a batch to build up. */
        struct timespec nap = tr_deadline_after(h->lazy_delay_ns);
        if (timeout_ns > 0 && (deadline.tv_sec < nap.tv_sec ||
                               (deadline.tv_sec == nap.tv_sec && deadline.tv_nsec < nap.tv_nsec)))
            nap = deadline;
        h->nappers++;
        while (h->len > 0 && h->len < h->lazy_min_len && !h->closed &&
               tr_cond_wait_until(&h->nap_cv, &h->mu, &nap) != ETIMEDOUT)
            ;
        h->nappers--;
    }
    while (!head_available(h)) {
        if (h->closed && h->len == 0) {
            pthread_mutex_unlock(&h->mu);
            return TR_CLOSED;
        }
        if (timeout_ns == 0) {
            pthread_mutex_unlock(&h->mu);
            return TR_TIMEOUT;
        }
        /* With lazy wake-ups and a busy popper, nap at most lazy_delay_ns:
         * a push may have left an item for us without a signal. */
        const struct timespec *until = timeout_ns > 0 ? &deadline : NULL;
        struct timespec nap;
        int napping = 0;
        if (h->lazy_min_len != 0 && h->in_flight != 0) {
            nap = tr_deadline_after(h->lazy_delay_ns);
            if (until == NULL || nap.tv_sec < until->tv_sec ||
                (nap.tv_sec == until->tv_sec && nap.tv_nsec < until->tv_nsec)) {
                until = &nap;
                napping = 1;
            }
        }
        h->waiters++;
        h->timed_waiters += napping;
        int wrc = tr_cond_wait_until(&h->work_cv, &h->mu, until);
        h->timed_waiters -= napping;
        h->waiters--;
        if (h->signals > 0)
            h->signals--;
        if (wrc == ETIMEDOUT && !napping && !head_available(h)) {
            pthread_mutex_unlock(&h->mu);
            return (h->closed && h->len == 0) ? TR_CLOSED : TR_TIMEOUT;
        }
    }

    /* A batch of the head's priority, at most a fair share of what is queued. */
    int32_t prio = h->items[0].priority;
    size_t share = h->len / (h->waiters + 1);
    size_t take = max < share ? max : share;
    if (take == 0)
        take = 1;
    if (is_low(h, prio)) {
        size_t room = h->low_limit - h->low_in_flight;
        if (take > room)
            take = room;
    }
    size_t got = 0;
    while (got < take && h->len > 0 && h->items[0].priority == prio) {
        heap_item it = remove_at(h, 0);
        count_popped(h, it.priority);
        out[got++] = it.token;
    }
    if (head_available(h))
        wake_popper(h); /* work is left: hand it to another waiter */
    pthread_mutex_unlock(&h->mu);
    *n = got;
    if (priority != NULL)
        *priority = prio;
    return TR_OK;
}

int tr_heap_unpop(tr_heap *h, const uint64_t *tokens, size_t n, int32_t priority)
{
    pthread_mutex_lock(&h->mu);
    size_t low = is_low(h, priority) ? n : 0;
    int rc = TR_OK;
    if (n > h->in_flight || low > h->low_in_flight)
        rc = TR_INVALID;
    for (size_t i = 0; rc == TR_OK && i < n; i++)
        if (index_find(h, tokens[i]) != NULL)
            rc = TR_EXISTS;
    if (rc == TR_OK)
        rc = reserve(h, n);
    if (rc == TR_OK) {
        /* Last first, so the first token gets the smallest seq. */
        for (size_t i = n; i-- > 0;)
            insert_locked(h, tokens[i], priority, h->front_seq--);
        h->in_flight -= n;
        h->low_in_flight -= low;
        for (size_t i = 0; i < n; i++)
            wake_popper(h);
    }
    pthread_mutex_unlock(&h->mu);
    return rc;
}

int tr_heap_complete(tr_heap *h, size_t completed, size_t completed_low)
{
    pthread_mutex_lock(&h->mu);
    int rc = retire_locked(h, completed, completed_low);
    pthread_mutex_unlock(&h->mu);
    return rc;
}

int tr_heap_peek(tr_heap *h, uint64_t *token, int32_t *priority)
{
    int rc = TR_EMPTY;
    pthread_mutex_lock(&h->mu);
    if (h->len > 0) {
        *token = h->items[0].token;
        if (priority != NULL)
            *priority = h->items[0].priority;
        rc = TR_OK;
    }
    pthread_mutex_unlock(&h->mu);
    return rc;
}

int tr_heap_remove(tr_heap *h, uint64_t token)
{
    int rc = TR_NOT_FOUND;
    pthread_mutex_lock(&h->mu);
    index_slot *s = index_find(h, token);
    if (s != NULL) {
        remove_at(h, s->pos - 1);
        maybe_idle(h);
        rc = TR_OK;
    }
    pthread_mutex_unlock(&h->mu);
    return rc;
}

size_t tr_heap_len(tr_heap *h)
{
    pthread_mutex_lock(&h->mu);
    size_t n = h->len;
    pthread_mutex_unlock(&h->mu);
    return n;
}

size_t tr_heap_in_flight(tr_heap *h)
{
    pthread_mutex_lock(&h->mu);
    size_t n = h->in_flight;
    pthread_mutex_unlock(&h->mu);
    return n;
}

size_t tr_heap_waiters(tr_heap *h)
{
    pthread_mutex_lock(&h->mu);
    size_t n = h->waiters;
    pthread_mutex_unlock(&h->mu);
    return n;
}

void tr_heap_level_counts(tr_heap *h, size_t *counts)
{
    pthread_mutex_lock(&h->mu);
    memcpy(counts, h->level_count, sizeof h->level_count);
    pthread_mutex_unlock(&h->mu);
}

size_t tr_heap_memory(tr_heap *h)
{
    pthread_mutex_lock(&h->mu);
    size_t bytes = sizeof *h + h->cap * sizeof *h->items + h->index_cap * sizeof *h->index;
    pthread_mutex_unlock(&h->mu);
    return bytes;
}

int tr_heap_check(tr_heap *h)
{
    int ok = 1;
    size_t counts[TR_HEAP_LEVELS] = {0};
    size_t indexed = 0;
    pthread_mutex_lock(&h->mu);
    for (size_t i = 0; i < h->len; i++) {
        const heap_item *it = &h->items[i];
        if (i > 0 && before(it, &h->items[(i - 1) / 2]))
            ok = 0; /* invariant 1 */
        if (it->slot >= h->index_cap || h->index[it->slot].token != it->token ||
            h->index[it->slot].pos != i + 1)
            ok = 0; /* invariants 2 and 6 */
        counts[level_of(it->priority)]++;
    }
    for (size_t i = 0; i < h->index_cap; i++)
        indexed += h->index[i].pos != 0;
    if (indexed != h->len || memcmp(counts, h->level_count, sizeof counts) != 0)
        ok = 0; /* invariants 2 and 3 */
    if (h->low_in_flight > h->in_flight)
        ok = 0; /* invariant 5 */
    pthread_mutex_unlock(&h->mu);
    return ok ? TR_OK : TR_INVALID;
}

const uint64_t *tr_heap_epochs(tr_heap *h)
{
    return h->epochs;
}

int tr_heap_set_lazy_wake(tr_heap *h, size_t min_len, int64_t delay_ns)
{
    if (min_len != 0 && delay_ns <= 0)
        return TR_INVALID;
    pthread_mutex_lock(&h->mu);
    h->lazy_min_len = min_len;
    h->lazy_delay_ns = delay_ns;
    pthread_cond_broadcast(&h->work_cv); /* waiters pick up the new rule */
    pthread_cond_broadcast(&h->nap_cv);
    pthread_mutex_unlock(&h->mu);
    return TR_OK;
}

int tr_heap_set_low_limit(tr_heap *h, int32_t max_low_priority, size_t limit)
{
    pthread_mutex_lock(&h->mu);
    h->low_max_priority = max_low_priority;
    h->low_limit = limit;
    if (limit == 0)
        h->low_in_flight = 0;
    pthread_cond_broadcast(&h->work_cv); /* a raised cap may free a low head */
    pthread_mutex_unlock(&h->mu);
    return TR_OK;
}

int tr_heap_wait_idle(tr_heap *h, int64_t timeout_ns)
{
    int rc = TR_OK;
    struct timespec deadline;
    if (timeout_ns > 0)
        deadline = tr_deadline_after(timeout_ns);
    pthread_mutex_lock(&h->mu);
    while (h->len > 0 || h->in_flight > 0) {
        if (timeout_ns == 0) {
            rc = TR_TIMEOUT;
            break;
        }
        h->idle_waiters++;
        int wrc = tr_cond_wait_until(&h->idle_cv, &h->mu, timeout_ns > 0 ? &deadline : NULL);
        h->idle_waiters--;
        if (wrc == ETIMEDOUT && (h->len > 0 || h->in_flight > 0)) {
            rc = TR_TIMEOUT;
            break;
        }
    }
    pthread_mutex_unlock(&h->mu);
    return rc;
}

int tr_heap_close(tr_heap *h)
{
    pthread_mutex_lock(&h->mu);
    h->closed = 1;
    pthread_cond_broadcast(&h->work_cv);
    pthread_cond_broadcast(&h->nap_cv);
    pthread_cond_broadcast(&h->idle_cv);
    pthread_mutex_unlock(&h->mu);
    return TR_OK;
}

int tr_heap_is_closed(tr_heap *h)
{
    pthread_mutex_lock(&h->mu);
    int closed = h->closed;
    pthread_mutex_unlock(&h->mu);
    return closed;
}
