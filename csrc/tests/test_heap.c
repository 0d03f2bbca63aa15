/*
 * test_heap.c - functional checks and a multi-thread hammer for tr_heap.
 * Run by `make check-c` under ASan+UBSan and, separately, under TSan.
 */
#include "tr_heap.h"
#include "tr_sync.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(__SANITIZE_THREAD__)
#define HAMMER_OPS 200000
#else
#define HAMMER_OPS 400000
#endif
#define THREADS 8

static int failures;
#define CHECK(cond)                                                               \
    do {                                                                          \
        if (!(cond)) {                                                            \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
            failures++;                                                           \
        }                                                                         \
    } while (0)

static uint64_t rng_next(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

static void test_order(void)
{
    tr_heap *h;
    CHECK(tr_heap_new(&h) == TR_OK);
    /* tokens encode (priority, fifo index); pushed interleaved */
    for (uint64_t i = 0; i < 3000; i++) {
        int32_t prio = (int32_t)(i % 3);
        CHECK(tr_heap_push(h, prio * 100000 + i, prio) == TR_OK);
    }
    CHECK(tr_heap_len(h) == 3000);
    CHECK(tr_heap_push(h, 5, 1) == TR_OK);
    CHECK(tr_heap_push(h, 5, 2) == TR_EXISTS);
    CHECK(tr_heap_remove(h, 5) == TR_OK);
    CHECK(tr_heap_remove(h, 5) == TR_NOT_FOUND);
    int32_t last_prio = 1 << 30;
    uint64_t last_token = 0;
    for (int i = 0; i < 3000; i++) {
        uint64_t t;
        int32_t p;
        CHECK(tr_heap_pop(h, &t, &p) == TR_OK);
        CHECK(p <= last_prio);
        if (p == last_prio)
            CHECK(t > last_token); /* FIFO within a priority */
        last_prio = p;
        last_token = t;
    }
    uint64_t t;
    CHECK(tr_heap_pop(h, &t, NULL) == TR_EMPTY);
    CHECK(tr_heap_in_flight(h) == 3000);
    CHECK(tr_heap_complete(h, 3001, 0) == TR_INVALID);
    CHECK(tr_heap_complete(h, 3000, 0) == TR_OK);
    CHECK(tr_heap_wait_idle(h, 0) == TR_OK);
    tr_heap_free(h);
}

static void test_remove_random(void)
{
    tr_heap *h;
    CHECK(tr_heap_new(&h) == TR_OK);
    enum { N = 20000 };
    static char removed[N];
    memset(removed, 0, sizeof removed);
    uint64_t s = 88172645463325252ULL;
    for (uint64_t i = 0; i < N; i++)
        CHECK(tr_heap_push(h, i, (int32_t)(rng_next(&s) % 5)) == TR_OK);
    CHECK(tr_heap_check(h) == TR_OK);
    for (int i = 0; i < N / 2; i++) {
        uint64_t t = rng_next(&s) % N;
        int rc = tr_heap_remove(h, t);
        CHECK(rc == (removed[t] ? TR_NOT_FOUND : TR_OK));
        removed[t] = 1;
        if (i % 997 == 0)
            CHECK(tr_heap_check(h) == TR_OK);
    }
    CHECK(tr_heap_check(h) == TR_OK);
    size_t expect = 0;
    for (int i = 0; i < N; i++)
        expect += !removed[i];
    CHECK(tr_heap_len(h) == expect);
    size_t counts[TR_HEAP_LEVELS], total = 0;
    tr_heap_level_counts(h, counts);
    for (int i = 0; i < TR_HEAP_LEVELS; i++)
        total += counts[i];
    CHECK(total == expect);
    int32_t lastp = 1 << 30;
    uint64_t lastt = 0, out[64];
    size_t n;
    size_t seen = 0;
    for (;;) {
        CHECK(tr_heap_pop_many(h, out, 64, &n) == TR_OK);
        CHECK(tr_heap_check(h) == TR_OK);
        if (n == 0)
            break;
        for (size_t i = 0; i < n; i++) {
            CHECK(!removed[out[i]]);
            seen++;
            (void)lastp;
            (void)lastt;
        }
    }
    CHECK(seen == expect);
    tr_heap_free(h);
}

static void test_batch_and_cap(void)
{
    tr_heap *h;
    CHECK(tr_heap_new(&h) == TR_OK);
    for (uint64_t i = 0; i < 10; i++)
        CHECK(tr_heap_push(h, i, 0) == TR_OK);
    for (uint64_t i = 10; i < 15; i++)
        CHECK(tr_heap_push(h, i, 2) == TR_OK);
    uint64_t out[32];
    size_t n;
    int32_t prio;
    /* A batch never mixes priorities. */
    CHECK(tr_heap_pop_wait(h, out, 32, &n, &prio, 0, 0, 0) == TR_OK);
    CHECK(n == 5 && prio == 2 && out[0] == 10 && out[4] == 14);
    /* Low cap: priority <= 0 limited to 2 in flight. */
    CHECK(tr_heap_set_low_limit(h, 0, 2) == TR_OK);
    CHECK(tr_heap_pop_wait(h, out, 32, &n, &prio, 5, 0, 0) == TR_OK);
    CHECK(n == 2 && prio == 0 && out[0] == 0 && out[1] == 1);
    CHECK(tr_heap_pop_wait(h, out, 32, &n, &prio, 0, 0, 1000000) == TR_TIMEOUT);
    /* A higher priority item is not blocked by the cap. */
    CHECK(tr_heap_push(h, 99, 1) == TR_OK);
    const uint64_t *ep = tr_heap_epochs(h);
    CHECK(__atomic_load_n(&ep[0], __ATOMIC_RELAXED) == 6); /* 5 prio-2 pushes + 1 prio-1 */
    CHECK(tr_heap_pop_wait(h, out, 32, &n, &prio, 0, 0, 0) == TR_OK);
    CHECK(n == 1 && out[0] == 99);
    CHECK(tr_heap_pop_wait(h, out, 32, &n, &prio, 1, 1, 0) == TR_OK);
    CHECK(n == 1 && out[0] == 2);
    CHECK(tr_heap_wait_idle(h, 1000000) == TR_TIMEOUT);
    /* Close: remaining items drain, then TR_CLOSED; pushes refused. */
    CHECK(tr_heap_close(h) == TR_OK);
    CHECK(tr_heap_push(h, 1000, 0) == TR_CLOSED);
    CHECK(tr_heap_set_low_limit(h, 0, 0) == TR_OK);
    size_t drained = 0;
    while (tr_heap_pop_wait(h, out, 32, &n, &prio, 0, 0, -1) == TR_OK)
        drained += n;
    CHECK(drained == 7);
    CHECK(tr_heap_complete(h, tr_heap_in_flight(h), 0) == TR_OK);
    CHECK(tr_heap_wait_idle(h, -1) == TR_OK);
    tr_heap_free(h);
}

static void test_unpop(void)
{
    tr_heap *h;
    CHECK(tr_heap_new(&h) == TR_OK);
    for (uint64_t i = 0; i < 6; i++)
        CHECK(tr_heap_push(h, i, 1) == TR_OK);
    uint64_t out[8];
    size_t n;
    int32_t prio;
    CHECK(tr_heap_pop_wait(h, out, 3, &n, &prio, 0, 0, 0) == TR_OK && n == 3);
    CHECK(tr_heap_push(h, 50, 2) == TR_OK);
    /* give back tokens 1 and 2: they must come before 3, 4, 5 */
    CHECK(tr_heap_unpop(h, out + 1, 2, 1) == TR_OK);
    CHECK(tr_heap_unpop(h, out + 1, 1, 1) == TR_EXISTS);
    CHECK(tr_heap_in_flight(h) == 1);
    uint64_t expect[] = {50, 1, 2, 3, 4, 5};
    for (int i = 0; i < 6; i++) {
        uint64_t t;
        CHECK(tr_heap_pop(h, &t, NULL) == TR_OK && t == expect[i]);
    }
    CHECK(tr_heap_unpop(h, out, 8, 1) == TR_INVALID);
    tr_heap_free(h);
}

/* Random pushes, batch pushes, removes, pops and unpops, with growth of the
 * index along the way: the invariants (tr_heap_check) hold after every step. */
static void test_random_ops_keep_invariants(void)
{
    tr_heap *h;
    CHECK(tr_heap_new(&h) == TR_OK);
    uint64_t s = 0x9E3779B97F4A7C15ULL, next = 1;
    uint64_t popped[64];
    size_t npopped = 0;
    for (int step = 0; step < 20000; step++) {
        uint64_t r = rng_next(&s) % 100;
        int32_t prio = (int32_t)(rng_next(&s) % 7) - 1;
        if (r < 45) {
            CHECK(tr_heap_push(h, next++, prio) == TR_OK);
        } else if (r < 55) {
            uint64_t toks[5];
            int32_t prios[5];
            for (int i = 0; i < 5; i++) {
                toks[i] = next++;
                prios[i] = prio + i;
            }
            CHECK(tr_heap_push_many(h, toks, prios, 5) == TR_OK);
        } else if (r < 70) {
            int rc = tr_heap_remove(h, 1 + rng_next(&s) % next);
            CHECK(rc == TR_OK || rc == TR_NOT_FOUND);
        } else if (r < 90 && npopped == 0) {
            size_t n;
            int32_t p;
            CHECK(tr_heap_pop_wait(h, popped, 1 + rng_next(&s) % 64, &n, &p, 0, 0, 0) ==
                  (tr_heap_len(h) ? TR_OK : TR_TIMEOUT));
            if (n > 1 && rng_next(&s) % 2) {
                CHECK(tr_heap_unpop(h, popped + 1, n - 1, p) == TR_OK);
                n = 1;
            }
            npopped = n;
        } else if (npopped != 0) {
            CHECK(tr_heap_complete(h, npopped, 0) == TR_OK);
            npopped = 0;
        }
        CHECK(tr_heap_check(h) == TR_OK);
    }
    tr_heap_free(h);
}

static void test_push_many_all_or_none(void)
{
    tr_heap *h;
    CHECK(tr_heap_new(&h) == TR_OK);
    uint64_t toks[4] = {1, 2, 3, 2};
    int32_t prios[4] = {0, 1, 2, 0};
    CHECK(tr_heap_push_many(h, toks, prios, 4) == TR_EXISTS);
    CHECK(tr_heap_len(h) == 0);
    CHECK(tr_heap_push_many(h, toks, prios, 3) == TR_OK);
    uint64_t t;
    CHECK(tr_heap_peek(h, &t, NULL) == TR_OK && t == 3);
    CHECK(tr_heap_len(h) == 3);
    tr_heap_free(h);
}

/* ---- hammer: 4 producers, 4 consumers (blocking batch pops), removers ---- */

typedef struct {
    tr_heap *h;
    int id;
    unsigned char *seen; /* per token: 1 popped, 2 removed */
} hammer_arg;

static void *producer(void *p)
{
    hammer_arg *a = p;
    uint64_t s = 0x9E3779B97F4A7C15ULL * (uint64_t)(a->id + 1);
    for (uint64_t i = 0; i < HAMMER_OPS; i++) {
        uint64_t token = (uint64_t)a->id * HAMMER_OPS + i;
        int rc = tr_heap_push(a->h, token, (int32_t)(rng_next(&s) % 3));
        if (rc != TR_OK) {
            fprintf(stderr, "push failed %d\n", rc);
            abort();
        }
        if (i % 7 == 0 && tr_heap_remove(a->h, token) == TR_OK)
            __atomic_fetch_add(&a->seen[token], 2, __ATOMIC_RELAXED);
    }
    return NULL;
}

static void *consumer(void *p)
{
    hammer_arg *a = p;
    uint64_t out[16];
    size_t n = 0, done = 0;
    int32_t prio;
    for (;;) {
        int rc = tr_heap_pop_wait(a->h, out, 16, &n, &prio, done, 0, -1);
        if (rc == TR_CLOSED)
            break;
        if (rc != TR_OK) {
            fprintf(stderr, "pop_wait failed %d\n", rc);
            abort();
        }
        for (size_t i = 0; i < n; i++)
            __atomic_fetch_add(&a->seen[out[i]], 1, __ATOMIC_RELAXED);
        done = n;
    }
    tr_heap_complete(a->h, done, 0);
    return NULL;
}

/* ---- lazy wake-up: a waiter still gets work pushed while another is busy --- */

typedef struct {
    tr_heap *h;
    uint64_t token;
    int rc;
} lazy_arg;

static void *lazy_waiter(void *p)
{
    lazy_arg *a = p;
    size_t n;
    int32_t prio;
    a->rc = tr_heap_pop_wait(a->h, &a->token, 1, &n, &prio, 0, 0, 2000000000LL);
    return NULL;
}

static void test_lazy_wake(void)
{
    tr_heap *h;
    CHECK(tr_heap_new(&h) == TR_OK);
    CHECK(tr_heap_set_lazy_wake(h, 4, 0) == TR_INVALID);
    CHECK(tr_heap_set_lazy_wake(h, 4, 2000000) == TR_OK); /* re-check every 2 ms */
    uint64_t t;
    CHECK(tr_heap_push(h, 1, 0) == TR_OK);
    CHECK(tr_heap_pop(h, &t, NULL) == TR_OK); /* a busy popper: 1 in flight */
    lazy_arg a = {h, 0, -1};
    pthread_t th;
    pthread_create(&th, NULL, lazy_waiter, &a);
    while (tr_heap_waiters(h) == 0)
        ; /* until the waiter sleeps */
    int64_t t0 = tr_monotonic_ns();
    CHECK(tr_heap_push(h, 2, 0) == TR_OK); /* below min_len: no signal, found on a re-check */
    pthread_join(th, NULL);
    int64_t waited = tr_monotonic_ns() - t0;
    CHECK(a.rc == TR_OK && a.token == 2);
    CHECK(waited < 1000000000LL); /* long before the waiter's own 2 s timeout */
    /* On an idle heap (nothing in flight) a push wakes at once. */
    CHECK(tr_heap_complete(h, 2, 0) == TR_OK);
    a.rc = -1;
    pthread_create(&th, NULL, lazy_waiter, &a);
    while (tr_heap_waiters(h) == 0)
        ;
    CHECK(tr_heap_push(h, 3, 0) == TR_OK);
    pthread_join(th, NULL);
    CHECK(a.rc == TR_OK && a.token == 3);
    tr_heap_free(h);
}

static void test_hammer(int lazy)
{
    tr_heap *h;
    CHECK(tr_heap_new(&h) == TR_OK);
    if (lazy)
        CHECK(tr_heap_set_lazy_wake(h, 16, 200000) == TR_OK);
    size_t total = (size_t)(THREADS / 2) * HAMMER_OPS;
    unsigned char *seen = calloc(total, 1);
    pthread_t th[THREADS];
    hammer_arg args[THREADS];
    for (int i = 0; i < THREADS; i++) {
        args[i] = (hammer_arg){h, i < THREADS / 2 ? i : i - THREADS / 2, seen};
        pthread_create(&th[i], NULL, i < THREADS / 2 ? producer : consumer, &args[i]);
    }
    for (int i = 0; i < THREADS / 2; i++)
        pthread_join(th[i], NULL);
    CHECK(tr_heap_wait_idle(h, -1) == TR_OK);
    tr_heap_close(h);
    for (int i = THREADS / 2; i < THREADS; i++)
        pthread_join(th[i], NULL);
    size_t bad = 0, removed = 0;
    for (size_t i = 0; i < total; i++) {
        if (seen[i] != 1 && seen[i] != 2)
            bad++;
        removed += seen[i] == 2;
    }
    CHECK(bad == 0);
    CHECK(tr_heap_len(h) == 0 && tr_heap_in_flight(h) == 0);
    printf("heap hammer (%s wake-up): %zu tokens through %d threads, %zu removed, "
           "%zu lost/duplicated\n", lazy ? "lazy" : "eager", total, THREADS, removed, bad);
    free(seen);
    tr_heap_free(h);
}

int main(void)
{
    test_order();
    test_remove_random();
    test_batch_and_cap();
    test_push_many_all_or_none();
    test_random_ops_keep_invariants();
    test_unpop();
    test_lazy_wake();
    test_hammer(0);
    test_hammer(1);
    if (failures) {
        fprintf(stderr, "test_heap: %d failure(s)\n", failures);
        return 1;
    }
    printf("test_heap: ok\n");
    return 0;
}
