/*
 * test_wheel.c - checks csrc/tr_wheel.c against its contract in tr_wheel.h.
 *
 * Built by `make check-c` with every core source file, once under ASan+UBSan and once
 * under TSan.  Sections: functional checks, a randomised comparison with a
 * brute-force model at several tick lengths (overflow migration included),
 * wait/kick/generation semantics with a real waiting thread, a hammer of 8
 * threads inserting, cancelling and advancing (every token must end up either
 * cancelled once or fired once), and one million pending timers with the
 * memory per timer printed.
 */
#include <inttypes.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "tr_wheel.h"

#if defined(__SANITIZE_THREAD__)
#define UNDER_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define UNDER_TSAN 1
#endif
#endif
#ifndef UNDER_TSAN
#define UNDER_TSAN 0
#endif

#define MS 1000000LL
#define SEC 1000000000LL
#define DAY (86400LL * SEC)

static int failures;

#define CHECK(cond)                                                                       \
    do {                                                                                  \
        if (!(cond)) {                                                                    \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);      \
            failures++;                                                                   \
            exit(1);                                                                      \
        }                                                                                 \
    } while (0)

#define CHECK_EQ(a, b)                                                                    \
    do {                                                                                  \
        long long a_ = (long long)(a), b_ = (long long)(b);                               \
        if (a_ != b_) {                                                                   \
            fprintf(stderr, "%s:%d: CHECK_EQ failed: %s = %lld, %s = %lld\n", __FILE__,   \
                    __LINE__, #a, a_, #b, b_);                                            \
            exit(1);                                                                      \
        }                                                                                 \
    } while (0)

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* xorshift64*: deterministic per seed, one per thread. */
static uint64_t rnd(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * 0x2545F4914F6CDD1DULL;
}

static uint64_t rnd_below(uint64_t *s, uint64_t n)
{
    return n ? rnd(s) % n : 0;
}

static tr_wheel *new_wheel(int64_t tick, int64_t start)
{
    tr_wheel *w = NULL;
    CHECK_EQ(tr_wheel_new(tick, start, &w), TR_OK);
    CHECK(w != NULL);
    return w;
}

/* Advances to now and returns how many came out (at most max). */
static size_t adv(tr_wheel *w, int64_t now, uint64_t *out, int64_t *dl, size_t max)
{
    size_t n = 12345;
    CHECK_EQ(tr_wheel_advance(w, now, out, dl, max, &n), TR_OK);
    CHECK(n <= max);
    return n;
}

/* ---- functional ---------------------------------------------------------------------------- */

static void test_new_and_invalid(void)
{
    tr_wheel *w = NULL;
    CHECK_EQ(tr_wheel_new(0, 0, &w), TR_INVALID);
    CHECK_EQ(tr_wheel_new(-5, 0, &w), TR_INVALID);
    CHECK_EQ(tr_wheel_new(MS, 0, NULL), TR_INVALID);
    w = new_wheel(MS, 123);
    CHECK_EQ(tr_wheel_tick(w), MS);
    CHECK_EQ(tr_wheel_now(w), 123);
    CHECK_EQ(tr_wheel_len(w), 0);
    CHECK(tr_wheel_memory(w) > 0);
    int64_t d;
    uint64_t g = 99;
    CHECK_EQ(tr_wheel_next_deadline(w, &d, &g), TR_EMPTY);
    CHECK(g != 99);
    size_t n;
    uint64_t out[4];
    CHECK_EQ(tr_wheel_advance(w, 0, out, NULL, 4, NULL), TR_INVALID);
    CHECK_EQ(tr_wheel_advance(w, 0, NULL, NULL, 4, &n), TR_INVALID);
    CHECK_EQ(tr_wheel_advance(w, 500, NULL, NULL, 0, &n), TR_OK);
    CHECK_EQ(n, 0);
    CHECK_EQ(tr_wheel_now(w), 500);
    tr_wheel_free(w);
    tr_wheel_free(NULL);
}

static void test_order_and_ties(void)
{
    tr_wheel *w = new_wheel(MS, 0);
    /* Several in one tick, out of order, with ties; plus later ticks. */
    const int64_t dls[] = {5 * MS + 700, 5 * MS + 100, 5 * MS + 700, 9 * MS, 5 * MS + 100,
                           5 * MS + 999999, 5 * MS, 70 * MS, 6 * MS};
    const size_t nd = sizeof dls / sizeof dls[0];
    for (size_t i = 0; i < nd; i++)
        CHECK_EQ(tr_wheel_insert(w, 100 + i, dls[i]), TR_OK);
    CHECK_EQ(tr_wheel_len(w), nd);
    uint64_t out[16];
    int64_t got[16];
    /* Nothing before 5 ms. */
    CHECK_EQ(adv(w, 5 * MS - 1, out, got, 16), 0);
    /* Exactly at 5 ms + 100: the 5 ms one and both ties at +100, in insertion order. */
    size_t n = adv(w, 5 * MS + 100, out, got, 16);
    CHECK_EQ(n, 3);
    CHECK_EQ(out[0], 106);
    CHECK_EQ(out[1], 101);
    CHECK_EQ(out[2], 104);
    CHECK_EQ(got[1], 5 * MS + 100);
    /* Never early: +699 gives nothing. */
    CHECK_EQ(adv(w, 5 * MS + 699, out, got, 16), 0);
    n = adv(w, 10 * MS, out, got, 16);
    CHECK_EQ(n, 5);
    const uint64_t want[] = {100, 102, 105, 108, 103};
    for (size_t i = 0; i < 5; i++)
        CHECK_EQ(out[i], want[i]);
    for (size_t i = 1; i < n; i++)
        CHECK(got[i - 1] <= got[i]);
    n = adv(w, 70 * MS, out, got, 16);
    CHECK_EQ(n, 1);
    CHECK_EQ(out[0], 107);
    CHECK_EQ(tr_wheel_len(w), 0);
    tr_wheel_free(w);
}

static void test_past_and_current_tick(void)
{
    tr_wheel *w = new_wheel(MS, 1000 * MS);
    uint64_t out[8];
    int64_t got[8];
    /* A deadline in the past or at now is due at the next advance, even without moving. */
    CHECK_EQ(tr_wheel_insert(w, 1, 3), TR_OK);
    CHECK_EQ(tr_wheel_insert(w, 2, 1000 * MS), TR_OK);
    CHECK_EQ(tr_wheel_insert(w, 3, INT64_MIN), TR_OK);
    size_t n = adv(w, 0, out, got, 8); /* earlier than now: ignored, but due ones come out */
    CHECK_EQ(n, 3);
    CHECK_EQ(out[0], 3);
    CHECK_EQ(out[1], 1);
    CHECK_EQ(out[2], 2);
    CHECK_EQ(tr_wheel_now(w), 1000 * MS);
    /* Inside the current (already collected) tick: goes to the late heap, still exact. */
    CHECK_EQ(adv(w, 1000 * MS + 300, out, got, 8), 0);
    CHECK_EQ(tr_wheel_insert(w, 10, 1000 * MS + 900), TR_OK);
    CHECK_EQ(tr_wheel_insert(w, 11, 1000 * MS + 500), TR_OK);
    CHECK_EQ(tr_wheel_insert(w, 12, 1000 * MS + 900), TR_OK);
    CHECK_EQ(tr_wheel_insert(w, 13, 1001 * MS + 1), TR_OK);
    int64_t d;
    CHECK_EQ(tr_wheel_next_deadline(w, &d, NULL), TR_OK);
    CHECK_EQ(d, 1000 * MS + 500);
    CHECK_EQ(adv(w, 1000 * MS + 499, out, got, 8), 0);
    n = adv(w, 1000 * MS + 900, out, got, 8);
    CHECK_EQ(n, 3);
    CHECK_EQ(out[0], 11);
    CHECK_EQ(out[1], 10);
    CHECK_EQ(out[2], 12);
    CHECK_EQ(tr_wheel_next_deadline(w, &d, NULL), TR_OK);
    CHECK_EQ(d, 1001 * MS + 1);
    CHECK_EQ(tr_wheel_cancel(w, 13), TR_OK);
    CHECK_EQ(tr_wheel_next_deadline(w, &d, NULL), TR_EMPTY);
    tr_wheel_free(w);
}

static void test_cancel_and_duplicates(void)
{
    tr_wheel *w = new_wheel(MS, 0);
    CHECK_EQ(tr_wheel_insert(w, 7, 10 * MS), TR_OK);
    CHECK_EQ(tr_wheel_insert(w, 7, 20 * MS), TR_EXISTS);
    CHECK_EQ(tr_wheel_insert(w, 0, 20 * MS), TR_OK);          /* token 0 is fine */
    CHECK_EQ(tr_wheel_insert(w, UINT64_MAX, 30 * MS), TR_OK); /* and the largest */
    CHECK_EQ(tr_wheel_len(w), 3);
    CHECK_EQ(tr_wheel_cancel(w, 8), TR_NOT_FOUND);
    CHECK_EQ(tr_wheel_cancel(w, 7), TR_OK);
    CHECK_EQ(tr_wheel_cancel(w, 7), TR_NOT_FOUND);
    CHECK_EQ(tr_wheel_len(w), 2);
    CHECK_EQ(tr_wheel_insert(w, 7, 5 * MS), TR_OK); /* reusable after cancel */
    uint64_t out[8];
    int64_t got[8];
    size_t n = adv(w, 100 * MS, out, got, 8);
    CHECK_EQ(n, 3);
    CHECK_EQ(out[0], 7);
    CHECK_EQ(out[1], 0);
    CHECK_EQ(out[2], UINT64_MAX);
    CHECK_EQ(tr_wheel_cancel(w, 0), TR_NOT_FOUND); /* fired */
    CHECK_EQ(tr_wheel_insert(w, 0, 200 * MS), TR_OK);
    /* Cancel in every structure: level, overflow, due list, late heap. */
    CHECK_EQ(tr_wheel_insert(w, 1, 100 * MS + 800 * 1000), TR_OK); /* current tick: late heap */
    CHECK_EQ(tr_wheel_insert(w, 2, 3000 * DAY), TR_OK);            /* overflow */
    CHECK_EQ(tr_wheel_insert(w, 3, 40 * DAY), TR_OK);              /* top level */
    CHECK_EQ(tr_wheel_insert(w, 4, 300 * MS), TR_OK);
    CHECK_EQ(tr_wheel_insert(w, 5, 300 * MS + 5), TR_OK);
    CHECK_EQ(adv(w, 300 * MS, out, got, 0), 0); /* collects tick 300 ms into the due list */
    CHECK_EQ(tr_wheel_len(w), 6);
    for (uint64_t t = 1; t <= 5; t++)
        CHECK_EQ(tr_wheel_cancel(w, t), TR_OK);
    n = adv(w, 400 * MS, out, got, 8);
    CHECK_EQ(n, 1);
    CHECK_EQ(out[0], 0);
    CHECK_EQ(tr_wheel_len(w), 0);
    int64_t d;
    CHECK_EQ(tr_wheel_next_deadline(w, &d, NULL), TR_EMPTY);
    CHECK_EQ(adv(w, INT64_MAX, out, got, 8), 0);
    tr_wheel_free(w);
}

static void test_never_early_at_most_one_tick_late(void)
{
    /* Advancing once a tick: every timer comes out at the first tick boundary >= its deadline. */
    const int64_t tick = 250 * 1000;
    tr_wheel *w = new_wheel(tick, 17);
    uint64_t seed = 42;
    enum { COUNT = 3000 };
    static int64_t dl[COUNT];
    for (uint64_t i = 0; i < COUNT; i++) {
        dl[i] = 17 + 1 + (int64_t)rnd_below(&seed, 2 * SEC);
        CHECK_EQ(tr_wheel_insert(w, i, dl[i]), TR_OK);
    }
    uint64_t out[COUNT];
    int64_t got[COUNT];
    size_t total = 0;
    int64_t last = INT64_MIN;
    for (int64_t now = 17; total < COUNT; now += tick) {
        size_t n = adv(w, now, out, got, COUNT);
        for (size_t i = 0; i < n; i++) {
            CHECK_EQ(got[i], dl[out[i]]);
            CHECK(got[i] <= now);        /* never early */
            CHECK(now - got[i] < tick);  /* at most one tick late */
            CHECK(got[i] >= last);       /* earliest first, across calls too */
            last = got[i];
        }
        total += n;
    }
    tr_wheel_free(w);
}

static void test_advance_max(void)
{
    tr_wheel *w = new_wheel(MS, 0);
    for (uint64_t i = 0; i < 100; i++)
        CHECK_EQ(tr_wheel_insert(w, i, (int64_t)(100 - i / 2) * MS), TR_OK);
    uint64_t out[7];
    int64_t got[7];
    int64_t last = INT64_MIN;
    uint64_t last_tok = 0;
    size_t total = 0;
    int rounds = 0;
    for (;;) {
        size_t n = adv(w, 200 * MS, out, got, 7);
        if (n == 0)
            break;
        rounds++;
        for (size_t i = 0; i < n; i++) {
            if (got[i] == last)
                CHECK(out[i] == last_tok + 1); /* ties: insertion order (i, i + 1 share) */
            CHECK(got[i] >= last);
            last = got[i];
            last_tok = out[i];
        }
        total += n;
        /* A later insert already due joins in order. */
        if (rounds == 3)
            CHECK_EQ(tr_wheel_insert(w, 1000, 99 * MS + 1), TR_OK);
    }
    CHECK_EQ(total, 101);
    CHECK_EQ(rounds, 15);
    CHECK_EQ(tr_wheel_len(w), 0);
    tr_wheel_free(w);
}

static void test_far_deadlines_overflow(void)
{
    tr_wheel *w = new_wheel(MS, 5);
    const int64_t far[] = {31 * DAY, 800 * DAY, 3 * 365 * DAY, 10 * 365 * DAY,
                           100 * 365 * DAY, INT64_MAX, 800 * DAY + 1};
    const size_t nf = sizeof far / sizeof far[0];
    for (size_t i = 0; i < nf; i++)
        CHECK_EQ(tr_wheel_insert(w, i, far[i]), TR_OK);
    uint64_t out[8];
    int64_t got[8];
    int64_t d;
    CHECK_EQ(tr_wheel_next_deadline(w, &d, NULL), TR_OK);
    CHECK_EQ(d, 31 * DAY);
    CHECK_EQ(tr_wheel_cancel(w, 0), TR_OK);
    CHECK_EQ(tr_wheel_next_deadline(w, &d, NULL), TR_OK);
    CHECK_EQ(d, 800 * DAY);
    /* Walk through time in uneven jumps; each comes out exactly when reached. */
    const int64_t order[] = {800 * DAY, 800 * DAY + 1, 3 * 365 * DAY, 10 * 365 * DAY,
                             100 * 365 * DAY, INT64_MAX};
    for (size_t k = 0; k < 6; k++) {
        CHECK_EQ(adv(w, order[k] - 1, out, got, 8), 0);
        CHECK_EQ(tr_wheel_next_deadline(w, &d, NULL), TR_OK);
        CHECK_EQ(d, order[k]);
        size_t n = adv(w, order[k], out, got, 8);
        CHECK_EQ(n, 1);
        CHECK_EQ(got[0], order[k]);
    }
    CHECK_EQ(tr_wheel_len(w), 0);
    /* Overflow that migrates in while many hours pass in small steps. */
    tr_wheel_free(w);
    w = new_wheel(3600 * SEC, 0); /* 1 h tick: two levels, 4096 h, overflow beyond */
    for (uint64_t i = 0; i < 200; i++)
        CHECK_EQ(tr_wheel_insert(w, i, (int64_t)(i * 97 + 1) * 3600 * SEC + (int64_t)i), TR_OK);
    size_t total = 0;
    for (int64_t now = 0; total < 200; now += 3600 * SEC) {
        size_t n = adv(w, now, out, got, 8);
        for (size_t i = 0; i < n; i++) {
            CHECK(got[i] <= now && now - got[i] < 3600 * SEC);
            CHECK_EQ(got[i], (int64_t)(out[i] * 97 + 1) * 3600 * SEC + (int64_t)out[i]);
        }
        total += n;
    }
    tr_wheel_free(w);
}

static void test_next_deadline_exact(void)
{
    tr_wheel *w = new_wheel(MS, 0);
    int64_t d;
    uint64_t seed = 7;
    enum { COUNT = 2000 };
    static int64_t dl[COUNT];
    static int live[COUNT];
    for (int i = 0; i < COUNT; i++) {
        /* Spread over every level: up to 40 days. */
        int64_t span = (int64_t[]){64 * MS, 4 * SEC, 250 * SEC, 4 * 3600 * SEC, 40 * DAY}[i % 5];
        dl[i] = 1 + (int64_t)rnd_below(&seed, (uint64_t)span);
        live[i] = 1;
        CHECK_EQ(tr_wheel_insert(w, (uint64_t)i, dl[i]), TR_OK);
    }
    for (int round = 0; round < COUNT; round++) {
        int64_t best = INT64_MAX;
        int bi = -1;
        for (int i = 0; i < COUNT; i++)
            if (live[i] && dl[i] < best) {
                best = dl[i];
                bi = i;
            }
        CHECK_EQ(tr_wheel_next_deadline(w, &d, NULL), TR_OK);
        CHECK_EQ(d, best);
        /* Alternate: cancel the earliest, or advance exactly to it. */
        if (round % 2) {
            CHECK_EQ(tr_wheel_cancel(w, (uint64_t)bi), TR_OK);
            live[bi] = 0;
        } else {
            uint64_t out[COUNT];
            size_t n = adv(w, best, out, NULL, COUNT);
            CHECK(n >= 1);
            for (size_t k = 0; k < n; k++) {
                CHECK_EQ(dl[out[k]], best);
                live[out[k]] = 0;
            }
            round += (int)n - 1;
        }
    }
    CHECK_EQ(tr_wheel_next_deadline(w, &d, NULL), TR_EMPTY);
    tr_wheel_free(w);
}

static void test_late_heap(void)
{
    /* Timers inserted into the current, already collected tick live in a heap: random
     * deadlines there, cancels from its middle, and exact in-order firing. */
    const int64_t tick = 10 * SEC;
    tr_wheel *w = new_wheel(tick, 0);
    uint64_t out[64];
    int64_t got[64];
    CHECK_EQ(adv(w, 1, out, got, 64), 0); /* tick 0 collected */
    enum { COUNT = 3000 };
    static int64_t dl[COUNT];
    static int live[COUNT];
    uint64_t seed = 5;
    for (int i = 0; i < COUNT; i++) {
        dl[i] = 2 + (int64_t)rnd_below(&seed, (uint64_t)tick - 2);
        live[i] = 1;
        CHECK_EQ(tr_wheel_insert(w, (uint64_t)i, dl[i]), TR_OK);
    }
    for (int i = 0; i < COUNT; i++)
        if (rnd_below(&seed, 2)) {
            CHECK_EQ(tr_wheel_cancel(w, (uint64_t)i), TR_OK);
            live[i] = 0;
        }
    int64_t now = 1, last = INT64_MIN;
    size_t left = tr_wheel_len(w);
    while (left > 0) {
        int64_t d;
        CHECK_EQ(tr_wheel_next_deadline(w, &d, NULL), TR_OK);
        int64_t best = INT64_MAX;
        for (int i = 0; i < COUNT; i++)
            if (live[i] && dl[i] < best)
                best = dl[i];
        CHECK_EQ(d, best);
        now += (int64_t)rnd_below(&seed, tick / 500);
        size_t n = adv(w, now, out, got, 64);
        for (size_t i = 0; i < n; i++) {
            CHECK(got[i] >= last && got[i] <= now);
            CHECK(live[out[i]]);
            live[out[i]] = 0;
            last = got[i];
        }
        left -= n;
        /* Nothing due may be left behind. */
        if (n < 64)
            for (int i = 0; i < COUNT; i++)
                CHECK(!live[i] || dl[i] > now);
    }
    tr_wheel_free(w);
}

/* ---- randomised comparison with a brute-force model ------------------------------------------ */

typedef struct {
    uint64_t token;
    int64_t deadline;
    uint64_t seq;
} mtimer;

static int mcmp(const void *a, const void *b)
{
    const mtimer *x = a, *y = b;
    if (x->deadline != y->deadline)
        return x->deadline < y->deadline ? -1 : 1;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* tick * k, saturated at 2^62 so that offsets stay comfortably inside int64. */
static uint64_t ticks(int64_t tick, uint64_t k)
{
    uint64_t v;
    if (__builtin_mul_overflow((uint64_t)tick, k, &v) || v > ((uint64_t)1 << 62))
        return (uint64_t)1 << 62;
    return v;
}

/* A random insert offset, from the past through sub-tick to far beyond the wheel's range. */
static int64_t rnd_offset(uint64_t *s, int64_t tick)
{
    uint64_t r = rnd_below(s, 100);
    if (r < 8)
        return -(int64_t)rnd_below(s, ticks(tick, 3));
    if (r < 12)
        return 0;
    if (r < 30)
        return (int64_t)rnd_below(s, ticks(tick, 2));
    if (r < 50)
        return (int64_t)rnd_below(s, ticks(tick, 64));
    if (r < 70)
        return (int64_t)rnd_below(s, ticks(tick, 4096));
    if (r < 85)
        return (int64_t)rnd_below(s, ticks(tick, 1u << 18));
    if (r < 95)
        return (int64_t)rnd_below(s, ticks(tick, 1u << 24));
    return (int64_t)(rnd(s) >> (2 + rnd_below(s, 40))); /* far, often into the overflow */
}

/* A random advance step: mostly a few ticks, sometimes long idle stretches. */
static int64_t rnd_step(uint64_t *s, int64_t tick)
{
    uint64_t r = rnd_below(s, 100);
    if (r < 15)
        return 0;
    if (r < 55)
        return (int64_t)rnd_below(s, ticks(tick, 3));
    if (r < 80)
        return (int64_t)rnd_below(s, ticks(tick, 100));
    if (r < 92)
        return (int64_t)rnd_below(s, ticks(tick, 5000));
    if (r < 99)
        return (int64_t)rnd_below(s, ticks(tick, 1u << 20));
    return (int64_t)rnd_below(s, ticks(tick, 1u << 22));
}

/* One randomised run; `heavy` inserts more than it removes, building thousands of pending. */
static void model_run(int64_t tick, int64_t start, uint64_t seed, int steps, int heavy)
{
    tr_wheel *w = new_wheel(tick, start);
    enum { CAP = 4096 };
    static mtimer model[CAP];
    static mtimer due[CAP];
    size_t m = 0;
    uint64_t seq = 0, next_token = 1;
    int64_t now = start;
    uint64_t out[64];
    int64_t got[64];
    for (int step = 0; step < steps; step++) {
        uint64_t op = rnd_below(&seed, 100);
        if (heavy) { /* remap to insert 70%, cancel 3%, advance 20%, next_deadline 7% */
            if (op < 70)
                op = op * 50 / 70;
            else if (op < 73)
                op = 50 + (op - 70) * 7 / 3;
            else if (op < 93)
                op = 57 + (op - 73) * 33 / 20;
        }
        if (op < 50 && m < CAP) {
            int64_t off = rnd_offset(&seed, tick);
            int64_t d = (off > 0 && now > INT64_MAX - off) ? INT64_MAX : now + off;
            uint64_t tok = next_token++ * 0x9E3779B97F4A7C15ULL; /* scattered tokens */
            CHECK_EQ(tr_wheel_insert(w, tok, d), TR_OK);
            model[m++] = (mtimer){tok, d, seq++};
            if (m > 0 && rnd_below(&seed, 10) == 0)
                CHECK_EQ(tr_wheel_insert(w, model[rnd_below(&seed, m)].token, d), TR_EXISTS);
        } else if (op < 57) {
            if (m > 0 && rnd_below(&seed, 4) != 0) {
                size_t i = rnd_below(&seed, m);
                CHECK_EQ(tr_wheel_cancel(w, model[i].token), TR_OK);
                model[i] = model[--m];
            } else {
                CHECK_EQ(tr_wheel_cancel(w, 12345), TR_NOT_FOUND);
            }
        } else if (op < 90) {
            int64_t step_ns = rnd_step(&seed, tick);
            /* Keep a share of the remaining int64 range for the steps still to come. */
            uint64_t room = ((uint64_t)INT64_MAX - (uint64_t)now) / (uint64_t)(steps - step + 1);
            room = room > (uint64_t)INT64_MAX / 4 ? (uint64_t)INT64_MAX : room * 4;
            if ((uint64_t)step_ns > room)
                step_ns = (int64_t)rnd_below(&seed, room + 1);
            int64_t target = now > INT64_MAX - step_ns ? INT64_MAX : now + step_ns;
            int64_t call_now = rnd_below(&seed, 20) == 0 ? now - 5 : target; /* earlier: ignored */
            if (call_now > now)
                now = call_now;
            size_t max = (size_t)rnd_below(&seed, 64);
            size_t n = adv(w, call_now, out, got, max);
            /* Model: everything with deadline <= now, earliest first, first max of them. */
            size_t nd = 0;
            for (size_t i = 0; i < m; i++)
                if (model[i].deadline <= now)
                    due[nd++] = model[i];
            qsort(due, nd, sizeof due[0], mcmp);
            CHECK_EQ(n, nd < max ? nd : max);
            for (size_t k = 0; k < n; k++) {
                CHECK_EQ(out[k], due[k].token);
                CHECK_EQ(got[k], due[k].deadline);
                for (size_t i = 0; i < m; i++)
                    if (model[i].token == out[k]) {
                        model[i] = model[--m];
                        break;
                    }
            }
            CHECK_EQ(tr_wheel_now(w), now);
        } else {
            int64_t d;
            int rc = tr_wheel_next_deadline(w, &d, NULL);
            if (m == 0) {
                CHECK_EQ(rc, TR_EMPTY);
            } else {
                int64_t best = INT64_MAX;
                for (size_t i = 0; i < m; i++)
                    if (model[i].deadline < best)
                        best = model[i].deadline;
                CHECK_EQ(rc, TR_OK);
                CHECK_EQ(d, best);
            }
        }
        CHECK_EQ(tr_wheel_len(w), m);
    }
    /* Drain: everything comes out, in order. */
    qsort(model, m, sizeof model[0], mcmp);
    size_t k = 0;
    for (;;) {
        size_t n = adv(w, INT64_MAX, out, got, 64);
        if (n == 0)
            break;
        for (size_t i = 0; i < n; i++, k++)
            CHECK_EQ(out[i], model[k].token);
    }
    CHECK_EQ(k, m);
    CHECK_EQ(tr_wheel_len(w), 0);
    tr_wheel_free(w);
}

static void test_model(void)
{
    const int steps = UNDER_TSAN ? 4000 : 20000;
    const int64_t ticks[] = {1, 7, 1000, MS, 3600 * SEC, 40 * DAY};
    const int64_t starts[] = {0, -5 * SEC, INT64_MIN / 2, 123456789, 4 * DAY, -1};
    for (size_t t = 0; t < sizeof ticks / sizeof ticks[0]; t++)
        for (uint64_t s = 1; s <= 3; s++)
            model_run(ticks[t], starts[(t + s) % 6], s * 1000003 + t, steps, s == 3);
}

/* ---- waiting ------------------------------------------------------------------------------- */

typedef struct {
    tr_wheel *w;
    uint64_t gen;
    int64_t timeout;
    int rc;
} waiter_arg;

static void *waiter(void *p)
{
    waiter_arg *a = p;
    a->rc = tr_wheel_wait(a->w, a->gen, a->timeout);
    return NULL;
}

static void test_wait_kick_generation(void)
{
    tr_wheel *w = new_wheel(MS, 0);
    uint64_t g0, g1, g2;
    int64_t d;
    CHECK_EQ(tr_wheel_next_deadline(w, &d, &g0), TR_EMPTY);
    CHECK_EQ(tr_wheel_wait(w, g0, 0), TR_TIMEOUT);
    double t0 = now_s();
    CHECK_EQ(tr_wheel_wait(w, g0, 20 * MS), TR_TIMEOUT);
    CHECK(now_s() - t0 >= 0.019);
    CHECK_EQ(tr_wheel_wait(w, g0 + 1, -1), TR_OK); /* stale generation: at once */
    /* Told "empty": any insert changes the generation. */
    CHECK_EQ(tr_wheel_insert(w, 1, 100 * MS), TR_OK);
    CHECK_EQ(tr_wheel_next_deadline(w, &d, &g1), TR_OK);
    CHECK(g1 != g0);
    CHECK_EQ(d, 100 * MS);
    /* Later or equal deadlines do not; an earlier one does. */
    CHECK_EQ(tr_wheel_insert(w, 2, 200 * MS), TR_OK);
    CHECK_EQ(tr_wheel_insert(w, 3, 100 * MS), TR_OK);
    CHECK_EQ(tr_wheel_wait(w, g1, 0), TR_TIMEOUT);
    CHECK_EQ(tr_wheel_insert(w, 4, 50 * MS), TR_OK);
    CHECK_EQ(tr_wheel_wait(w, g1, 0), TR_OK);
    CHECK_EQ(tr_wheel_next_deadline(w, &d, &g2), TR_OK);
    CHECK_EQ(d, 50 * MS);
    /* kick bumps the generation. */
    tr_wheel_kick(w);
    CHECK_EQ(tr_wheel_wait(w, g2, 0), TR_OK);
    CHECK_EQ(tr_wheel_next_deadline(w, &d, &g2), TR_OK);

    tr_wheel_free(w);
}

/* Spins (yielding) until k threads are blocked in tr_wheel_wait; fails after 10 s. */
static void until_blocked(tr_wheel *w, size_t k)
{
    double t0 = now_s();
    while (tr_wheel_waiters(w) < k) {
        CHECK(now_s() - t0 < 10.0);
        sched_yield();
    }
    CHECK_EQ(tr_wheel_waiters(w), k);
}

static void start_waiters(tr_wheel *w, pthread_t *th, waiter_arg *a, size_t k, int64_t timeout)
{
    uint64_t g;
    int64_t d;
    tr_wheel_next_deadline(w, &d, &g);
    for (size_t i = 0; i < k; i++) {
        a[i] = (waiter_arg){w, g, timeout, -100};
        CHECK_EQ(pthread_create(&th[i], NULL, waiter, &a[i]), 0);
    }
    until_blocked(w, k);
}

static void join_waiters(pthread_t *th, waiter_arg *a, size_t k, int want)
{
    for (size_t i = 0; i < k; i++) {
        CHECK_EQ(pthread_join(th[i], NULL), 0);
        CHECK_EQ(a[i].rc, want);
    }
}

static void test_blocked_waiters(void)
{
    tr_wheel *w = new_wheel(MS, 0);
    pthread_t th[3];
    waiter_arg a[3];
    CHECK_EQ(tr_wheel_waiters(w), 0);
    /* Blocked with no timeout (told "empty"): the first insert wakes all of them. */
    start_waiters(w, th, a, 3, -1);
    CHECK_EQ(tr_wheel_insert(w, 1, 100 * MS), TR_OK);
    join_waiters(th, a, 3, TR_OK);
    /* Told 100 ms: an insert at 100 ms or later does not wake; the wait times out. */
    start_waiters(w, th, a, 1, 150 * MS);
    CHECK_EQ(tr_wheel_insert(w, 2, 100 * MS), TR_OK);
    CHECK_EQ(tr_wheel_insert(w, 3, 500 * MS), TR_OK);
    CHECK_EQ(tr_wheel_cancel(w, 2), TR_OK);
    size_t n;
    uint64_t out[4];
    CHECK_EQ(tr_wheel_advance(w, 10 * MS, out, NULL, 4, &n), TR_OK);
    join_waiters(th, a, 1, TR_TIMEOUT);
    /* An earlier one does. */
    start_waiters(w, th, a, 2, 60 * SEC);
    CHECK_EQ(tr_wheel_insert(w, 4, 99 * MS), TR_OK);
    join_waiters(th, a, 2, TR_OK);
    /* A kick does. */
    start_waiters(w, th, a, 2, -1);
    tr_wheel_kick(w);
    join_waiters(th, a, 2, TR_OK);
    /* Close does, and wins. */
    start_waiters(w, th, a, 3, 60 * SEC);
    CHECK_EQ(tr_wheel_is_closed(w), 0);
    CHECK_EQ(tr_wheel_close(w), TR_OK);
    join_waiters(th, a, 3, TR_CLOSED);
    CHECK_EQ(tr_wheel_close(w), TR_OK); /* idempotent */
    CHECK_EQ(tr_wheel_is_closed(w), 1);
    CHECK_EQ(tr_wheel_wait(w, 0, -1), TR_CLOSED);
    CHECK_EQ(tr_wheel_waiters(w), 0);
    tr_wheel_free(w);
}

static void test_close(void)
{
    tr_wheel *w = new_wheel(MS, 0);
    CHECK_EQ(tr_wheel_insert(w, 1, 10 * MS), TR_OK);
    CHECK_EQ(tr_wheel_insert(w, 2, 20 * MS), TR_OK);
    CHECK_EQ(tr_wheel_close(w), TR_OK);
    CHECK_EQ(tr_wheel_insert(w, 3, 10 * MS), TR_CLOSED);
    CHECK_EQ(tr_wheel_insert(w, 1, 10 * MS), TR_CLOSED);
    CHECK_EQ(tr_wheel_len(w), 2);
    int64_t d;
    CHECK_EQ(tr_wheel_next_deadline(w, &d, NULL), TR_OK);
    CHECK_EQ(tr_wheel_cancel(w, 2), TR_OK);
    uint64_t out[4];
    CHECK_EQ(adv(w, SEC, out, NULL, 4), 1);
    CHECK_EQ(out[0], 1);
    CHECK_EQ(tr_wheel_len(w), 0);
    tr_wheel_free(w);
}

/* ---- hammer --------------------------------------------------------------------------------- */

#define HAMMER_THREADS 8
#if UNDER_TSAN
#define HAMMER_OPS 25000
#else
#define HAMMER_OPS 300000
#endif

typedef struct {
    tr_wheel *w;
    int id;
    int64_t *clock; /* shared mock clock, moved forward with atomics */
    uint8_t *fate;  /* per token: 1 cancelled, 2 fired (atomic or) */
    uint64_t inserted, cancelled, fired;
} hammer_arg;

#define TOKEN(thread, i) (((uint64_t)(thread) << 32) | (uint64_t)(i))

static void mark(uint8_t *fate, uint64_t tok, uint8_t how)
{
    size_t i = (size_t)(tok >> 32) * HAMMER_OPS + (size_t)(tok & 0xffffffffu);
    uint8_t old = __atomic_fetch_or(&fate[i], how, __ATOMIC_RELAXED);
    CHECK(old == 0); /* never fired or cancelled twice, never both */
}

static void *hammer(void *p)
{
    hammer_arg *a = p;
    uint64_t seed = 0x1234567ULL + (uint64_t)a->id * 7919;
    uint32_t next = 0;
    uint64_t out[256];
    int64_t got[256];
    for (int op = 0; op < HAMMER_OPS; op++) {
        uint64_t r = rnd_below(&seed, 100);
        int64_t now = __atomic_load_n(a->clock, __ATOMIC_RELAXED);
        if (r < 50 && next < HAMMER_OPS) {
            int64_t off = (int64_t)rnd_below(&seed, 8) == 0
                              ? (int64_t)rnd_below(&seed, 40 * DAY)
                              : (int64_t)rnd_below(&seed, 200 * MS) - 2 * MS;
            CHECK_EQ(tr_wheel_insert(a->w, TOKEN(a->id, next), now + off), TR_OK);
            next++;
            a->inserted++;
        } else if (r < 75 && next > 0) {
            uint64_t tok = TOKEN(a->id, rnd_below(&seed, next));
            int rc = tr_wheel_cancel(a->w, tok);
            CHECK(rc == TR_OK || rc == TR_NOT_FOUND);
            if (rc == TR_OK) {
                mark(a->fate, tok, 1);
                a->cancelled++;
            }
        } else if (r < 97) {
            if (rnd_below(&seed, 4) == 0)
                __atomic_fetch_add(a->clock, (int64_t)rnd_below(&seed, 3 * MS), __ATOMIC_RELAXED);
            now = __atomic_load_n(a->clock, __ATOMIC_RELAXED);
            size_t n = adv(a->w, now, out, got, 1 + rnd_below(&seed, 256));
            for (size_t i = 0; i < n; i++) {
                CHECK(got[i] <= tr_wheel_now(a->w));
                if (i)
                    CHECK(got[i - 1] <= got[i]);
                mark(a->fate, out[i], 2);
            }
            a->fired += n;
        } else {
            int64_t d;
            uint64_t g;
            int rc = tr_wheel_next_deadline(a->w, &d, &g);
            CHECK(rc == TR_OK || rc == TR_EMPTY);
            CHECK(tr_wheel_wait(a->w, g - 1, -1) == TR_OK);
            (void)tr_wheel_len(a->w);
            (void)tr_wheel_memory(a->w);
        }
    }
    return NULL;
}

static void test_hammer(void)
{
    tr_wheel *w = new_wheel(MS, 0);
    int64_t clock = 0;
    uint8_t *fate = calloc((size_t)HAMMER_THREADS * HAMMER_OPS, 1);
    CHECK(fate != NULL);
    pthread_t th[HAMMER_THREADS];
    hammer_arg args[HAMMER_THREADS];
    double t0 = now_s();
    for (int i = 0; i < HAMMER_THREADS; i++) {
        args[i] = (hammer_arg){w, i, &clock, fate, 0, 0, 0};
        CHECK_EQ(pthread_create(&th[i], NULL, hammer, &args[i]), 0);
    }
    uint64_t inserted = 0, cancelled = 0, fired = 0;
    for (int i = 0; i < HAMMER_THREADS; i++) {
        CHECK_EQ(pthread_join(th[i], NULL), 0);
        inserted += args[i].inserted;
        cancelled += args[i].cancelled;
        fired += args[i].fired;
    }
    double secs = now_s() - t0;
    CHECK_EQ(tr_wheel_len(w), inserted - cancelled - fired);
    /* Drain everything left (up to 40 days ahead) and account for it. */
    uint64_t out[512];
    int64_t got[512];
    size_t n;
    int64_t last = INT64_MIN;
    while ((n = adv(w, INT64_MAX, out, got, 512)) > 0) {
        for (size_t i = 0; i < n; i++) {
            CHECK(got[i] >= last);
            last = got[i];
            mark(fate, out[i], 2);
        }
        fired += n;
    }
    CHECK_EQ(cancelled + fired, inserted);
    for (int t = 0; t < HAMMER_THREADS; t++)
        for (uint32_t i = 0; i < args[t].inserted; i++)
            CHECK(fate[(size_t)t * HAMMER_OPS + i] == 1 || fate[(size_t)t * HAMMER_OPS + i] == 2);
    CHECK_EQ(tr_wheel_len(w), 0);
    printf("  hammer: %d threads, %d ops, %" PRIu64 " inserted, %" PRIu64 " cancelled, %" PRIu64
           " fired, %.2f s\n",
           HAMMER_THREADS, HAMMER_THREADS * HAMMER_OPS, inserted, cancelled, fired, secs);
    free(fate);
    tr_wheel_free(w);
}

/* ---- a million pending timers ---------------------------------------------------------------- */

static void test_million(void)
{
    /* Single-threaded, so TSan has nothing to find here: a quarter of the size keeps it quick. */
    enum { COUNT = UNDER_TSAN ? 250000 : 1000000 };
    tr_wheel *w = new_wheel(MS, 0);
    size_t empty = tr_wheel_memory(w);
    uint64_t seed = 99;
    double t0 = now_s();
    for (uint64_t i = 0; i < COUNT; i++) {
        /* Spread over an hour, plus a few far ones. */
        int64_t d = 1 + (int64_t)rnd_below(&seed, i % 1000 == 0 ? 1000 * DAY : 3600 * SEC);
        CHECK_EQ(tr_wheel_insert(w, i * 2654435761u, d), TR_OK);
    }
    double t_ins = now_s() - t0;
    CHECK_EQ(tr_wheel_len(w), COUNT);
    size_t mem = tr_wheel_memory(w);
    printf("  %d pending timers: %zu bytes, %.1f bytes per timer (empty wheel %zu), "
           "insert %.0f ns each\n",
           COUNT, mem, (double)mem / COUNT, empty, t_ins / COUNT * 1e9);
    CHECK((double)mem / COUNT <= 64.0);
    /* Cancel a third, then fire the rest in order over simulated time. */
    t0 = now_s();
    size_t cancelled = 0;
    for (uint64_t i = 0; i < COUNT; i += 3, cancelled++)
        CHECK_EQ(tr_wheel_cancel(w, i * 2654435761u), TR_OK);
    double t_can = now_s() - t0;
    static uint64_t out[4096];
    static int64_t got[4096];
    size_t fired = 0;
    int64_t last = INT64_MIN;
    t0 = now_s();
    for (int64_t now = 0; fired + cancelled < COUNT; now += 7 * MS + 3) {
        size_t n;
        while ((n = adv(w, now, out, got, 4096)) > 0) {
            for (size_t i = 0; i < n; i++) {
                CHECK(got[i] >= last && got[i] <= now);
                last = got[i];
            }
            fired += n;
        }
        if (now > 3600 * SEC)
            now += 10 * DAY; /* the far ones */
    }
    double t_fire = now_s() - t0;
    printf("  cancel %.0f ns each; advance through all: %.0f ns per fired timer\n",
           t_can / (double)cancelled * 1e9, t_fire / (double)fired * 1e9);
    CHECK_EQ(tr_wheel_len(w), 0);
    CHECK_EQ(tr_wheel_memory(w), mem); /* storage kept for reuse */
    tr_wheel_free(w);
}

int main(void)
{
    alarm(300); /* a lost wake-up or an endless loop fails instead of hanging */
    struct {
        const char *name;
        void (*fn)(void);
    } tests[] = {
        {"new_and_invalid", test_new_and_invalid},
        {"order_and_ties", test_order_and_ties},
        {"past_and_current_tick", test_past_and_current_tick},
        {"cancel_and_duplicates", test_cancel_and_duplicates},
        {"never_early_at_most_one_tick_late", test_never_early_at_most_one_tick_late},
        {"advance_max", test_advance_max},
        {"late_heap", test_late_heap},
        {"far_deadlines_overflow", test_far_deadlines_overflow},
        {"next_deadline_exact", test_next_deadline_exact},
        {"model", test_model},
        {"wait_kick_generation", test_wait_kick_generation},
        {"blocked_waiters", test_blocked_waiters},
        {"close", test_close},
        {"hammer", test_hammer},
        {"million", test_million},
    };
    for (size_t i = 0; i < sizeof tests / sizeof tests[0]; i++) {
        double t0 = now_s();
        tests[i].fn();
        printf("ok   %-36s %.2f s\n", tests[i].name, now_s() - t0);
    }
    printf("test_wheel: all %zu passed%s\n", sizeof tests / sizeof tests[0],
           UNDER_TSAN ? " (TSan sizes)" : "");
    return failures != 0;
}
