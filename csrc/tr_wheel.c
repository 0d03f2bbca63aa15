/*
 * tr_wheel.c - the hierarchical timing wheel behind tr_wheel.h.
 *
 * LEVELS.  Time is counted in ticks of tick_ns from the wheel's origin (its
 * start_ns): a deadline d lies in tick k(d) = floor((d - origin) / tick_ns).
 * The wheel has `levels` levels of LVL_SIZE = 2^LVL_BITS = 64 slots each.  A
 * slot of level n spans LVL_GRAN(n) = 64^n ticks, so level n covers
 * LVL_GRAN(n + 1) ticks ahead.  The number of levels is chosen per wheel, the
 * fewest (at most LVL_MAX) whose 64^levels ticks reach WHEEL_MIN_RANGE_NS
 * (30 days).  With the default 1 ms tick that is six levels:
 *
 *   level  granularity        holds timers due within (from the current tick)
 *     0        1 ms           [0, 64 ms)
 *     1       64 ms           [64 ms, 4.1 s)
 *     2      4.1 s            [4.1 s, 4.4 min)
 *     3      4.4 min          [4.4 min, 4.7 h)
 *     4      4.7 h            [4.7 h, 12.4 days)
 *     5     12.4 days         [12.4 days, ~795 days)
 *   overflow                  everything later, in one unsorted list
 *
 * (A 1 us tick needs seven levels for 50.9 days, a 1 ns tick nine for 208
 * days, a 1 s tick four for 194 days.)
 *
 * CASCADING.  clk is the next tick the wheel has not yet processed.  A timer
 * due in tick k >= clk sits in the lowest level n whose range holds k - clk,
 * in slot (k >> 6n) & 63.  When clk reaches the first tick of a level-n slot's
 * span (its low 6n bits are zero), that slot "cascades": its timers are placed
 * again, relative to the new clk, into lower levels.  When clk reaches tick k,
 * level-0 slot k & 63 holds exactly the timers of tick k; they are collected.
 * A timer is therefore never late because of its level, and moves down at most
 * levels - 1 times.  Unlike Linux's non-cascading wheel (kernel/time/timer.c),
 * which trades precision for never cascading, a timer here fires in its own
 * tick whatever its level.  The top level accepts any tick whose slot span
 * starts fewer than 64 top spans after clk ("the horizon"); overflow timers
 * move into the wheel when the horizon passes them: one scan of the overflow
 * at most once per top-level slot span of wheel time (12.4 days at a 1 ms
 * tick), plus once after a cancel made the overflow's remembered minimum stale.
 *
 * SKIPPING.  Each level keeps a 64-bit occupancy word, so the next tick at
 * which anything happens (a level-0 slot to collect, a slot to cascade, the
 * overflow to migrate) is found with one rotate and count-trailing-zeros per
 * level, and an advance jumps straight to it.  Advancing over a year of idle
 * time costs nothing; advancing costs O(timers collected + cascaded).
 *
 * DUE TIMERS.  A collected tick's timers are sorted by (deadline, sequence)
 * with a merge sort on their list and appended to the "due" list; every timer
 * there lies in an earlier tick than anything still in the levels, so the due
 * list stays sorted.  A timer inserted into a tick already collected (its
 * deadline is in the current, partly elapsed tick or already past) goes to
 * the small "late" binary heap instead.  Advance hands out the smaller head of
 * the two while its deadline <= now, so a timer is returned exactly when now
 * reaches its deadline, never earlier, and the earliest pending deadline is
 * always a head when either holds anything.
 *
 * MEMORY.  Timers are 32-byte nodes in a pool that grows by chunks of
 * CHUNK_SIZE nodes and recycles freed nodes through a free list, so an insert
 * allocates only when the pool or an index must grow.  Lists are circular and
 * doubly linked through 32-bit node indices; every list (each slot, the
 * overflow, the due list) has a sentinel node at a fixed index, so unlinking
 * needs no knowledge of which list a node is in.  A node in the late heap has
 * prev == MARK_LATE and its heap position in next.  The token index is an
 * open-addressing table (linear probing, load <= 1/2, backward-shift
 * deletion) of 32-bit node indices.  About 32 + 8..16 bytes per timer.
 *
 * LOCKING.  One mutex, w->mu, guards every mutable field of struct tr_wheel
 * and every node; w->cv (monotonic clock) is where tr_wheel_wait sleeps.
 */
#include "tr_wheel.h"

#include <stdlib.h>
#include <string.h>

#include "tr_sync.h"

/* The two constants everything below is derived from. */
#define LVL_BITS 6 /* log2 of the slots per level */
#define LVL_MAX 10 /* most levels a wheel may have (60 bits of ticks) */

#define LVL_SIZE (1u << LVL_BITS)
#define LVL_MASK (LVL_SIZE - 1u)
#define LVL_SHIFT(n) ((unsigned)(n) * LVL_BITS)
#define LVL_GRAN(n) ((uint64_t)1 << LVL_SHIFT(n))
#define LVL_RANGE(n) LVL_GRAN((n) + 1)

/* The wheel levels reach at least this far past the current tick. */
#define WHEEL_MIN_RANGE_NS ((int64_t)30 * 24 * 3600 * 1000000000LL)

/* Ticks are capped here so that clk = tick + 1 never wraps. */
#define TICK_CAP (UINT64_MAX - 1u)

/* Node pool. */
#define CHUNK_BITS 10
#define CHUNK_SIZE (1u << CHUNK_BITS)
#define CHUNK_MASK (CHUNK_SIZE - 1u)

/* Sentinel node indices: one per slot, then the overflow and due lists. */
#define SENT_SLOT(n, j) ((uint32_t)((n) * LVL_SIZE + (j)))
#define SENT_OVF SENT_SLOT(LVL_MAX, 0)
#define SENT_DUE (SENT_OVF + 1u)
#define NSENT (SENT_DUE + 1u)

#define MARK_LATE UINT32_MAX        /* node->prev of a node in the late heap */
#define MARK_FREE (UINT32_MAX - 1u) /* node->prev of a free node */
#define NIL UINT32_MAX              /* end of a free list or a chain being sorted */
#define NODE_LIMIT (UINT32_MAX - 2u) /* node indices stay below the marks */

#define HASH_MIN 64u

typedef struct node {
    uint64_t token;
    int64_t deadline;
    uint64_t seq; /* insertion order, breaks ties between equal deadlines */
    uint32_t next, prev;
} node;

struct tr_wheel {
    /* Immutable after tr_wheel_new: no lock needed. */
    int64_t tick;
    int64_t origin;
    unsigned levels;

    /* w->mu guards every field below and every node. */
    pthread_mutex_t mu;
    pthread_cond_t cv; /* waiters of tr_wheel_wait, on generation change or close */

    int64_t now;  /* the latest now_ns advanced to (start_ns at first) */
    uint64_t clk; /* next tick whose events (cascades, collect) are not processed */
    uint64_t occupied[LVL_MAX]; /* bit j of occupied[n]: slot j of level n is non-empty */
    uint64_t ovf_min;           /* lower bound of the overflow's ticks (UINT64_MAX: empty) */

    node **chunks;      /* the node pool; node i is chunks[i >> CHUNK_BITS][i & CHUNK_MASK] */
    uint32_t nchunks;   /* chunks allocated */
    uint32_t chunk_cap; /* length of the chunks array */
    uint32_t used;      /* nodes ever handed out (sentinels included) */
    uint32_t free_head; /* free list through node->next, NIL-terminated */

    uint32_t *index;   /* token -> node index, 0 = empty (node 0 is a sentinel) */
    size_t index_cap;  /* power of two, or 0 */
    uint32_t *late;    /* binary min-heap of node indices on (deadline, seq) */
    size_t late_len, late_cap;

    size_t count; /* pending timers */
    uint64_t seq; /* next insertion sequence number */

    int64_t wheel_min; /* exact earliest deadline in levels + overflow, if wheel_min_ok */
    int wheel_min_ok;

    uint64_t gen;     /* wake-up generation */
    int64_t wake_at;  /* an insert earlier than this bumps gen (if wake_ok) */
    int wake_ok;      /* 0: any insert bumps gen (nothing reported yet, or empty) */
    unsigned waiters; /* threads inside tr_wheel_wait */
    int closed;
};

/* ---- helpers ----------------------------------------------------------------------------- */

static inline node *N(const tr_wheel *w, uint32_t i)
{
    return &w->chunks[i >> CHUNK_BITS][i & CHUNK_MASK];
}

static inline int before(const node *a, const node *b)
{
    return a->deadline < b->deadline || (a->deadline == b->deadline && a->seq < b->seq);
}

static inline uint64_t rotr64(uint64_t x, unsigned s)
{
    return s ? (x >> s) | (x << (64u - s)) : x;
}

static inline uint64_t mix64(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebULL;
    x ^= x >> 31;
    return x;
}

/* Tick of a deadline after the origin (d > origin), capped at TICK_CAP. */
static inline uint64_t tick_of(const tr_wheel *w, int64_t d)
{
    uint64_t k = ((uint64_t)d - (uint64_t)w->origin) / (uint64_t)w->tick;
    return k > TICK_CAP ? TICK_CAP : k;
}

/* origin + t * tick, saturated to the int64 range. */
static inline int64_t tick_start_ns(const tr_wheel *w, uint64_t t)
{
    __int128 v = (__int128)w->origin + (__int128)t * w->tick;
    return v > INT64_MAX ? INT64_MAX : (int64_t)v;
}

/* ---- lists (circular, with sentinels) ---------------------------------------------------- */

static inline void list_init(tr_wheel *w, uint32_t s)
{
    N(w, s)->next = N(w, s)->prev = s;
}

static inline int list_empty(const tr_wheel *w, uint32_t s)
{
    return N(w, s)->next == s;
}

static inline void list_push(tr_wheel *w, uint32_t s, uint32_t i)
{
    node *h = N(w, s), *x = N(w, i);
    uint32_t t = h->prev;
    x->prev = t;
    x->next = s;
    N(w, t)->next = i;
    h->prev = i;
}

/* Unlinks node i; returns the sentinel if its list became empty, else NIL. */
static inline uint32_t list_unlink(tr_wheel *w, uint32_t i)
{
    node *x = N(w, i);
    uint32_t p = x->prev, nx = x->next;
    N(w, p)->next = nx;
    N(w, nx)->prev = p;
    return p == nx ? p : NIL; /* a two-node circle left only the sentinel */
}

/* Detaches every node of list s into a NIL-terminated chain (through next). */
static uint32_t list_take(tr_wheel *w, uint32_t s)
{
    node *h = N(w, s);
    if (h->next == s)
        return NIL;
    uint32_t first = h->next;
    N(w, h->prev)->next = NIL;
    h->next = h->prev = s;
    return first;
}

/* ---- node pool ------------------------------------------------------------------------------ */

/* Makes sure node_take() can succeed.  TR_OK or TR_NOMEM (nothing changed). */
static int node_reserve(tr_wheel *w)
{
    if (w->free_head != NIL || w->used < (uint64_t)w->nchunks * CHUNK_SIZE)
        return TR_OK;
    if ((uint64_t)w->nchunks * CHUNK_SIZE + CHUNK_SIZE > NODE_LIMIT)
        return TR_NOMEM;
    if (w->nchunks == w->chunk_cap) {
        uint32_t cap = w->chunk_cap ? w->chunk_cap * 2 : 16;
        node **c = realloc(w->chunks, cap * sizeof *c);
        if (c == NULL)
            return TR_NOMEM;
        w->chunks = c;
        w->chunk_cap = cap;
    }
    node *chunk = malloc(CHUNK_SIZE * sizeof *chunk);
    if (chunk == NULL)
        return TR_NOMEM;
    w->chunks[w->nchunks++] = chunk;
    return TR_OK;
}

static inline uint32_t node_take(tr_wheel *w)
{
    uint32_t i = w->free_head;
    if (i != NIL)
        w->free_head = N(w, i)->next;
    else
        i = w->used++;
    return i;
}

static inline void node_free(tr_wheel *w, uint32_t i)
{
    node *x = N(w, i);
    x->prev = MARK_FREE;
    x->next = w->free_head;
    w->free_head = i;
}

/* ---- token index ---------------------------------------------------------------------------- */

/* The node holding token (0 if none); *pos is its index position, or where it would go. */
static inline uint32_t index_find(const tr_wheel *w, uint64_t token, size_t *pos)
{
    if (w->index_cap == 0) {
        *pos = 0;
        return 0;
    }
    size_t mask = w->index_cap - 1, i = (size_t)mix64(token) & mask;
    for (;;) {
        uint32_t e = w->index[i];
        if (e == 0 || N(w, e)->token == token) {
            *pos = i;
            return e;
        }
        i = (i + 1) & mask;
    }
}

/* Grows the index so that one more token keeps the load <= 1/2.  TR_OK or TR_NOMEM. */
static int index_reserve(tr_wheel *w)
{
    if ((w->count + 1) * 2 <= w->index_cap)
        return TR_OK;
    size_t cap = w->index_cap ? w->index_cap * 2 : HASH_MIN;
    uint32_t *t = calloc(cap, sizeof *t);
    if (t == NULL)
        return TR_NOMEM;
    size_t mask = cap - 1;
    for (size_t k = 0; k < w->index_cap; k++) {
        uint32_t e = w->index[k];
        if (e == 0)
            continue;
        size_t i = (size_t)mix64(N(w, e)->token) & mask;
        while (t[i] != 0)
            i = (i + 1) & mask;
        t[i] = e;
    }
    free(w->index);
    w->index = t;
    w->index_cap = cap;
    return TR_OK;
}

/* Empties position pos, shifting later entries of its probe run back (no tombstones). */
static void index_delete(tr_wheel *w, size_t pos)
{
    size_t mask = w->index_cap - 1, i = pos, j = pos;
    for (;;) {
        j = (j + 1) & mask;
        uint32_t e = w->index[j];
        if (e == 0)
            break;
        size_t home = (size_t)mix64(N(w, e)->token) & mask;
        /* Entry j may move to i unless its home lies cyclically in (i, j]. */
        int stays = (i <= j) ? (i < home && home <= j) : (i < home || home <= j);
        if (!stays) {
            w->index[i] = e;
            i = j;
        }
    }
    w->index[i] = 0;
}

/* ---- late heap ------------------------------------------------------------------------------ */

static int late_reserve(tr_wheel *w)
{
    if (w->late_len < w->late_cap)
        return TR_OK;
    size_t cap = w->late_cap ? w->late_cap * 2 : 16;
    uint32_t *h = realloc(w->late, cap * sizeof *h);
    if (h == NULL)
        return TR_NOMEM;
    w->late = h;
    w->late_cap = cap;
    return TR_OK;
}

static inline void late_set(tr_wheel *w, size_t pos, uint32_t i)
{
    w->late[pos] = i;
    N(w, i)->next = (uint32_t)pos;
}

static void late_up(tr_wheel *w, size_t pos)
{
    uint32_t i = w->late[pos];
    node *x = N(w, i);
    while (pos > 0) {
        size_t parent = (pos - 1) / 2;
        uint32_t p = w->late[parent];
        if (!before(x, N(w, p)))
            break;
        late_set(w, pos, p);
        pos = parent;
    }
    late_set(w, pos, i);
}

static void late_down(tr_wheel *w, size_t pos)
{
    uint32_t i = w->late[pos];
    node *x = N(w, i);
    for (;;) {
        size_t c = 2 * pos + 1;
        if (c >= w->late_len)
            break;
        if (c + 1 < w->late_len && before(N(w, w->late[c + 1]), N(w, w->late[c])))
            c++;
        if (!before(N(w, w->late[c]), x))
            break;
        late_set(w, pos, w->late[c]);
        pos = c;
    }
    late_set(w, pos, i);
}

/* Capacity was reserved by late_reserve(). */
static void late_push(tr_wheel *w, uint32_t i)
{
    N(w, i)->prev = MARK_LATE;
    w->late[w->late_len] = i;
    late_up(w, w->late_len++);
}

static void late_remove(tr_wheel *w, size_t pos)
{
    uint32_t last = w->late[--w->late_len];
    if (pos == w->late_len)
        return;
    late_set(w, pos, last);
    if (pos > 0 && before(N(w, last), N(w, w->late[(pos - 1) / 2])))
        late_up(w, pos);
    else
        late_down(w, pos);
}

/* ---- the levels ----------------------------------------------------------------------------- */

/* The first tick past what the top level may hold, relative to clk (saturated). */
static inline uint64_t horizon(const tr_wheel *w)
{
    unsigned sh = LVL_SHIFT(w->levels - 1);
    uint64_t span = (w->clk >> sh) + ((w->clk & (LVL_GRAN(w->levels - 1) - 1)) != 0);
    uint64_t h = span + LVL_SIZE;
    return h > (UINT64_MAX >> sh) ? UINT64_MAX : h << sh;
}

/* Places node i, due in tick k >= clk, into its level slot or the overflow. */
static void wheel_place(tr_wheel *w, uint32_t i, uint64_t k)
{
    uint64_t ahead = k - w->clk;
    unsigned n = 0;
    for (; n + 1 < w->levels; n++)
        if (ahead < LVL_RANGE(n))
            break;
    if (n + 1 == w->levels && k >= horizon(w)) {
        list_push(w, SENT_OVF, i);
        if (k < w->ovf_min)
            w->ovf_min = k;
        return;
    }
    unsigned j = (unsigned)(k >> LVL_SHIFT(n)) & LVL_MASK;
    list_push(w, SENT_SLOT(n, j), i);
    w->occupied[n] |= (uint64_t)1 << j;
}

/*
 * The tick at which level n's first non-empty slot is due for processing
 * (level 0: collected; above: cascaded), and that slot in *slot.  UINT64_MAX
 * if the level is empty.  Slot j of level n >= 1 cascades at the first tick
 * >= clk whose low 6n bits are zero and whose level-n digit is j.
 */
static uint64_t level_event(const tr_wheel *w, unsigned n, unsigned *slot)
{
    uint64_t occ = w->occupied[n];
    if (occ == 0)
        return UINT64_MAX;
    unsigned sh = LVL_SHIFT(n);
    uint64_t base = w->clk >> sh;
    unsigned aligned = (w->clk & (LVL_GRAN(n) - 1)) == 0;
    unsigned c = (unsigned)base & LVL_MASK;
    unsigned s = aligned ? c : ((c + 1) & LVL_MASK);
    unsigned d = (unsigned)__builtin_ctzll(rotr64(occ, s));
    *slot = (s + d) & LVL_MASK;
    uint64_t b = base + d + !aligned;
    if (b < base || b > (UINT64_MAX >> sh))
        return UINT64_MAX;
    return b << sh;
}

/* The tick at which the overflow must be migrated (UINT64_MAX if empty). */
static uint64_t overflow_event(const tr_wheel *w)
{
    if (list_empty(w, SENT_OVF))
        return UINT64_MAX;
    unsigned sh = LVL_SHIFT(w->levels - 1);
    uint64_t span = w->ovf_min >> sh;
    /* The horizon passes ovf_min once ceil(clk / gran) + LVL_SIZE > span. */
    uint64_t t = span < LVL_SIZE ? 0 : ((span - LVL_SIZE) << sh) + 1;
    return t < w->clk ? w->clk : t;
}

/* Re-places every node of list s relative to the current clk. */
static void replace_list(tr_wheel *w, uint32_t s)
{
    uint32_t i = list_take(w, s);
    while (i != NIL) {
        uint32_t nx = N(w, i)->next;
        wheel_place(w, i, tick_of(w, N(w, i)->deadline));
        i = nx;
    }
}

static uint32_t merge(tr_wheel *w, uint32_t a, uint32_t b)
{
    uint32_t head = NIL, *tail = &head;
    while (a != NIL && b != NIL) {
        if (before(N(w, b), N(w, a))) {
            *tail = b;
            tail = &N(w, b)->next;
            b = *tail;
        } else {
            *tail = a;
            tail = &N(w, a)->next;
            a = *tail;
        }
    }
    *tail = a != NIL ? a : b;
    return head;
}

/* Sorts a NIL-terminated chain by (deadline, seq): bottom-up merge sort, no allocation. */
static uint32_t sort_chain(tr_wheel *w, uint32_t chain)
{
    uint32_t bins[33];
    unsigned top = 0;
    while (chain != NIL) {
        uint32_t carry = chain;
        chain = N(w, chain)->next;
        N(w, carry)->next = NIL;
        unsigned b = 0;
        for (; b < top && bins[b] != NIL; b++) {
            carry = merge(w, bins[b], carry);
            bins[b] = NIL;
        }
        if (b == top)
            top++;
        bins[b] = carry;
    }
    uint32_t out = NIL;
    for (unsigned b = 0; b < top; b++)
        if (bins[b] != NIL)
            out = merge(w, bins[b], out);
    return out;
}

/* Moves level-0 slot j (the timers of tick clk) to the end of the due list, sorted. */
static void collect(tr_wheel *w, unsigned j)
{
    uint32_t s = SENT_SLOT(0, j);
    w->occupied[0] &= ~((uint64_t)1 << j);
    uint32_t i = sort_chain(w, list_take(w, s));
    node *due = N(w, SENT_DUE);
    uint32_t prev = due->prev;
    for (; i != NIL; i = N(w, i)->next) {
        N(w, i)->prev = prev;
        N(w, prev)->next = i;
        prev = i;
    }
    N(w, prev)->next = SENT_DUE;
    due->prev = prev;
    w->wheel_min_ok = 0;
}

/* Processes every event of ticks <= target, then sets clk = target + 1. */
static void run_wheel(tr_wheel *w, uint64_t target)
{
    for (;;) {
        uint64_t t = UINT64_MAX;
        unsigned slot;
        for (unsigned n = 0; n < w->levels; n++) {
            uint64_t e = level_event(w, n, &slot);
            if (e < t)
                t = e;
        }
        uint64_t t_ovf = overflow_event(w);
        if (t_ovf < t)
            t = t_ovf;
        if (t > target)
            break;
        w->clk = t;
        if (t_ovf == t) {
            /* The horizon passed the overflow's minimum: move what now fits. */
            w->ovf_min = UINT64_MAX;
            replace_list(w, SENT_OVF);
            continue;
        }
        /* Cascade from the top so each timer lands below its old level at once. */
        for (unsigned n = w->levels - 1; n > 0; n--) {
            if ((t & (LVL_GRAN(n) - 1)) != 0)
                continue;
            unsigned j = (unsigned)(t >> LVL_SHIFT(n)) & LVL_MASK;
            if (w->occupied[n] & ((uint64_t)1 << j)) {
                w->occupied[n] &= ~((uint64_t)1 << j);
                replace_list(w, SENT_SLOT(n, j));
            }
        }
        unsigned j0 = (unsigned)t & LVL_MASK;
        if (w->occupied[0] & ((uint64_t)1 << j0))
            collect(w, j0);
        w->clk = t + 1;
    }
    w->clk = target + 1;
}

/* The minimum deadline in list s, or INT64_MAX. */
static int64_t list_min(const tr_wheel *w, uint32_t s)
{
    int64_t best = INT64_MAX;
    for (uint32_t i = N(w, s)->next; i != s; i = N(w, i)->next)
        if (N(w, i)->deadline < best)
            best = N(w, i)->deadline;
    return best;
}

/*
 * The exact earliest deadline held in the levels and the overflow.  Within a
 * level, the slot processed first holds its earliest ticks, so only one slot
 * per level (and the overflow) can hold the minimum; candidates are scanned in
 * order of their first tick and the scan stops once a candidate's first tick
 * starts after the best deadline found.
 */
static int64_t wheel_min(tr_wheel *w)
{
    uint64_t when[LVL_MAX + 1];
    uint32_t sent[LVL_MAX + 1];
    unsigned m = 0;
    for (unsigned n = 0; n < w->levels; n++) {
        unsigned slot;
        uint64_t e = level_event(w, n, &slot);
        if (e != UINT64_MAX) {
            when[m] = e;
            sent[m++] = SENT_SLOT(n, slot);
        }
    }
    if (!list_empty(w, SENT_OVF)) {
        when[m] = w->ovf_min;
        sent[m++] = SENT_OVF;
    }
    int64_t best = INT64_MAX;
    int found = 0;
    while (m > 0) {
        unsigned k = 0;
        for (unsigned q = 1; q < m; q++)
            if (when[q] < when[k])
                k = q;
        if (found && tick_start_ns(w, when[k]) >= best)
            break;
        int64_t v = list_min(w, sent[k]);
        if (sent[k] == SENT_OVF)
            w->ovf_min = tick_of(w, v); /* exact again */
        if (v < best)
            best = v;
        found = 1;
        when[k] = when[--m];
        sent[k] = sent[m];
    }
    return best;
}

/* ---- the API -------------------------------------------------------------------------------- */

int tr_wheel_new(int64_t tick_ns, int64_t start_ns, tr_wheel **out)
{
    if (out == NULL || tick_ns <= 0)
        return TR_INVALID;
    *out = NULL;
    tr_wheel *w = calloc(1, sizeof *w);
    if (w == NULL)
        return TR_NOMEM;
    unsigned levels = 1;
    while (levels < LVL_MAX && (__int128)LVL_RANGE(levels - 1) * tick_ns < WHEEL_MIN_RANGE_NS)
        levels++;
    w->tick = tick_ns;
    w->origin = start_ns;
    w->levels = levels;
    w->now = start_ns;
    w->clk = 0;
    w->ovf_min = UINT64_MAX;
    w->free_head = NIL;
    if (pthread_mutex_init(&w->mu, NULL) != 0) {
        free(w);
        return TR_NOMEM;
    }
    if (tr_cond_init_monotonic(&w->cv) != 0) {
        pthread_mutex_destroy(&w->mu);
        free(w);
        return TR_NOMEM;
    }
    if (node_reserve(w) != TR_OK) {
        tr_wheel_free(w);
        return TR_NOMEM;
    }
    w->used = NSENT;
    for (uint32_t s = 0; s < NSENT; s++) {
        N(w, s)->token = 0;
        N(w, s)->deadline = 0;
        N(w, s)->seq = 0;
        list_init(w, s);
    }
    *out = w;
    return TR_OK;
}

void tr_wheel_free(tr_wheel *w)
{
    if (w == NULL)
        return;
    for (uint32_t c = 0; c < w->nchunks; c++)
        free(w->chunks[c]);
    free(w->chunks);
    free(w->index);
    free(w->late);
    pthread_cond_destroy(&w->cv);
    pthread_mutex_destroy(&w->mu);
    free(w);
}

int tr_wheel_insert(tr_wheel *w, uint64_t token, int64_t deadline_ns)
{
    pthread_mutex_lock(&w->mu);
    int rc;
    size_t pos;
    if (w->closed) {
        rc = TR_CLOSED;
        goto out;
    }
    if (index_find(w, token, &pos) != 0) {
        rc = TR_EXISTS;
        goto out;
    }
    /* Everything that can fail comes first, so a failure changes nothing. */
    int late = deadline_ns <= w->now;
    uint64_t k = late ? 0 : tick_of(w, deadline_ns);
    late = late || k < w->clk;
    if ((rc = index_reserve(w)) != TR_OK || (rc = node_reserve(w)) != TR_OK ||
        (late && (rc = late_reserve(w)) != TR_OK))
        goto out;
    index_find(w, token, &pos); /* the index may have been rebuilt */

    uint32_t i = node_take(w);
    node *x = N(w, i);
    x->token = token;
    x->deadline = deadline_ns;
    x->seq = w->seq++;
    if (late) {
        late_push(w, i);
    } else {
        wheel_place(w, i, k);
        if (w->wheel_min_ok && deadline_ns < w->wheel_min)
            w->wheel_min = deadline_ns;
    }
    w->index[pos] = i;
    w->count++;
    if (!w->wake_ok || deadline_ns < w->wake_at) {
        /* Earlier than any deadline a waiter was told: wake it to re-plan. */
        w->gen++;
        w->wake_at = deadline_ns;
        w->wake_ok = 1;
        if (w->waiters)
            pthread_cond_broadcast(&w->cv);
    }
    rc = TR_OK;
out:
    pthread_mutex_unlock(&w->mu);
    return rc;
}

int tr_wheel_cancel(tr_wheel *w, uint64_t token)
{
    pthread_mutex_lock(&w->mu);
    size_t pos;
    uint32_t i = index_find(w, token, &pos);
    if (i == 0) {
        pthread_mutex_unlock(&w->mu);
        return TR_NOT_FOUND;
    }
    node *x = N(w, i);
    if (x->prev == MARK_LATE) {
        late_remove(w, x->next);
    } else {
        uint32_t s = list_unlink(w, i);
        if (s < SENT_OVF)
            w->occupied[s / LVL_SIZE] &= ~((uint64_t)1 << (s % LVL_SIZE));
        else if (s == SENT_OVF)
            w->ovf_min = UINT64_MAX;
        if (w->wheel_min_ok && x->deadline == w->wheel_min)
            w->wheel_min_ok = 0;
    }
    index_delete(w, pos);
    node_free(w, i);
    w->count--;
    pthread_mutex_unlock(&w->mu);
    return TR_OK;
}

/* The pending timer with the earliest (deadline, seq) among the due list and late heap, or 0. */
static inline uint32_t due_head(const tr_wheel *w)
{
    uint32_t a = N(w, SENT_DUE)->next;
    if (w->late_len == 0)
        return a == SENT_DUE ? 0 : a;
    uint32_t b = w->late[0];
    if (a == SENT_DUE || before(N(w, b), N(w, a)))
        return b;
    return a;
}

int tr_wheel_advance(tr_wheel *w, int64_t now_ns, uint64_t *out, int64_t *deadlines, size_t max,
                     size_t *n)
{
    if (n == NULL || (max > 0 && out == NULL))
        return TR_INVALID;
    pthread_mutex_lock(&w->mu);
    if (now_ns > w->now)
        w->now = now_ns;
    uint64_t target = ((uint64_t)w->now - (uint64_t)w->origin) / (uint64_t)w->tick;
    if (target > TICK_CAP)
        target = TICK_CAP;
    if (target >= w->clk)
        run_wheel(w, target);
    size_t got = 0;
    while (got < max) {
        uint32_t i = due_head(w);
        if (i == 0)
            break;
        node *x = N(w, i);
        if (x->deadline > w->now)
            break;
        if (x->prev == MARK_LATE)
            late_remove(w, 0);
        else
            list_unlink(w, i);
        size_t pos;
        index_find(w, x->token, &pos);
        index_delete(w, pos);
        out[got] = x->token;
        if (deadlines != NULL)
            deadlines[got] = x->deadline;
        got++;
        node_free(w, i);
        w->count--;
    }
    *n = got;
    pthread_mutex_unlock(&w->mu);
    return TR_OK;
}

int tr_wheel_next_deadline(tr_wheel *w, int64_t *deadline_ns, uint64_t *generation)
{
    pthread_mutex_lock(&w->mu);
    int rc = TR_OK;
    int64_t d = 0;
    uint32_t i = due_head(w);
    if (i != 0) {
        d = N(w, i)->deadline;
    } else if (w->count > 0) {
        if (!w->wheel_min_ok) {
            w->wheel_min = wheel_min(w);
            w->wheel_min_ok = 1;
        }
        d = w->wheel_min;
    } else {
        rc = TR_EMPTY;
    }
    /* Remember what was reported so an earlier insert changes the generation. */
    w->wake_ok = rc == TR_OK;
    w->wake_at = d;
    if (deadline_ns != NULL && rc == TR_OK)
        *deadline_ns = d;
    if (generation != NULL)
        *generation = w->gen;
    pthread_mutex_unlock(&w->mu);
    return rc;
}

int tr_wheel_wait(tr_wheel *w, uint64_t generation, int64_t timeout_ns)
{
    pthread_mutex_lock(&w->mu);
    int rc;
    if (w->closed) {
        rc = TR_CLOSED;
    } else if (w->gen != generation) {
        rc = TR_OK;
    } else if (timeout_ns == 0) {
        rc = TR_TIMEOUT;
    } else {
        struct timespec until;
        const struct timespec *dl = NULL;
        if (timeout_ns > 0) {
            until = tr_deadline_after(timeout_ns);
            dl = &until;
        }
        w->waiters++;
        for (;;) {
            int e = tr_cond_wait_until(&w->cv, &w->mu, dl);
            if (w->closed) {
                rc = TR_CLOSED;
                break;
            }
            if (w->gen != generation) {
                rc = TR_OK;
                break;
            }
            if (e == ETIMEDOUT) {
                rc = TR_TIMEOUT;
                break;
            }
        }
        w->waiters--;
    }
    pthread_mutex_unlock(&w->mu);
    return rc;
}

void tr_wheel_kick(tr_wheel *w)
{
    pthread_mutex_lock(&w->mu);
    w->gen++;
    if (w->waiters)
        pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

size_t tr_wheel_len(tr_wheel *w)
{
    pthread_mutex_lock(&w->mu);
    size_t n = w->count;
    pthread_mutex_unlock(&w->mu);
    return n;
}

int64_t tr_wheel_now(tr_wheel *w)
{
    pthread_mutex_lock(&w->mu);
    int64_t now = w->now;
    pthread_mutex_unlock(&w->mu);
    return now;
}

int64_t tr_wheel_tick(tr_wheel *w)
{
    return w->tick; /* immutable */
}

size_t tr_wheel_memory(tr_wheel *w)
{
    pthread_mutex_lock(&w->mu);
    size_t bytes = sizeof *w + (size_t)w->nchunks * CHUNK_SIZE * sizeof(node) +
                   (size_t)w->chunk_cap * sizeof(node *) + w->index_cap * sizeof(uint32_t) +
                   w->late_cap * sizeof(uint32_t);
    pthread_mutex_unlock(&w->mu);
    return bytes;
}

size_t tr_wheel_waiters(tr_wheel *w)
{
    pthread_mutex_lock(&w->mu);
    size_t n = w->waiters;
    pthread_mutex_unlock(&w->mu);
    return n;
}

int tr_wheel_close(tr_wheel *w)
{
    pthread_mutex_lock(&w->mu);
    w->closed = 1;
    w->gen++;
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
    return TR_OK;
}

int tr_wheel_is_closed(tr_wheel *w)
{
    pthread_mutex_lock(&w->mu);
    int c = w->closed;
    pthread_mutex_unlock(&w->mu);
    return c;
}
