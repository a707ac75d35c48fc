/*
 * test_idindex.c - the store's in-memory index of job ids: add, find, remove,
 * several rows per hash (a collision, or stale hints), growth, and removed
 * slots reused without breaking the walks of other hashes.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "gw.h"
#include "store/idindex.h"

/* The seqs a walk for hash finds, summed and counted. */
static size_t walk(const struct gw_idindex *ix, uint64_t hash, int64_t *sum)
{
    size_t pos = 0, n = 0;
    int64_t seq;

    *sum = 0;
    while ((seq = gw_idindex_next(ix, hash, &pos)) != 0) {
        n++;
        *sum += seq;
    }
    return n;
}

static void test_hash(void **state)
{
    (void)state;
    assert_int_equal(gw_idindex_hash("video_1", 7), gw_idindex_hash("video_1", 7));
    assert_true(gw_idindex_hash("video_1", 7) != gw_idindex_hash("video_2", 7));
    assert_true(gw_idindex_hash("", 0) != gw_idindex_hash("a", 1));
}

static void test_empty(void **state)
{
    struct gw_idindex ix = { 0 };
    int64_t sum;

    (void)state;
    assert_int_equal(walk(&ix, 42, &sum), 0);
    gw_idindex_remove(&ix, 42, 1); /* nothing there: no crash */
    gw_idindex_free(&ix);
}

static void test_add_find_remove(void **state)
{
    struct gw_idindex ix = { 0 };
    int64_t sum;

    (void)state;
    assert_int_equal(gw_idindex_add(&ix, 7, 1), GW_OK);
    assert_int_equal(gw_idindex_add(&ix, 7, 1), GW_OK); /* once */
    assert_int_equal(ix.used, 1);
    assert_int_equal(walk(&ix, 7, &sum), 1);
    assert_int_equal(sum, 1);
    /* the same hash, another row: both found (a collision, or a stale hint) */
    assert_int_equal(gw_idindex_add(&ix, 7, 5), GW_OK);
    assert_int_equal(walk(&ix, 7, &sum), 2);
    assert_int_equal(sum, 6);
    /* a neighbour hash landing in the next slot is not found for 7 */
    assert_int_equal(gw_idindex_add(&ix, 8, 9), GW_OK);
    assert_int_equal(walk(&ix, 7, &sum), 2);
    gw_idindex_remove(&ix, 7, 1);
    assert_int_equal(walk(&ix, 7, &sum), 1);
    assert_int_equal(sum, 5);
    /* removing the first of a chain keeps the rest reachable */
    assert_int_equal(walk(&ix, 8, &sum), 1);
    assert_int_equal(sum, 9);
    gw_idindex_remove(&ix, 7, 77); /* not there */
    assert_int_equal(ix.used, 2);
    gw_idindex_free(&ix);
}

static void test_growth_and_reuse(void **state)
{
    struct gw_idindex ix = { 0 };
    enum { N = 100000 };
    int64_t sum;

    (void)state;
    for (int64_t i = 1; i <= N; i++)
        assert_int_equal(gw_idindex_add(&ix, gw_idindex_hash((char *)&i, sizeof(i)), i), GW_OK);
    assert_int_equal(ix.used, N);
    assert_true(ix.cap >= 2 * N);
    for (int64_t i = 1; i <= N; i++) {
        assert_int_equal(walk(&ix, gw_idindex_hash((char *)&i, sizeof(i)), &sum), 1);
        assert_int_equal(sum, i);
    }
    /* remove every other one, then add new ones: removed slots are reused, and
     * the survivors are still found */
    for (int64_t i = 1; i <= N; i += 2)
        gw_idindex_remove(&ix, gw_idindex_hash((char *)&i, sizeof(i)), i);
    assert_int_equal(ix.used, N / 2);
    size_t cap = ix.cap;
    for (int64_t i = N + 1; i <= N + N / 2; i++)
        assert_int_equal(gw_idindex_add(&ix, gw_idindex_hash((char *)&i, sizeof(i)), i), GW_OK);
    assert_int_equal(ix.used, N);
    assert_true(ix.cap <= 2 * cap); /* removed slots did not make it grow without bound */
    assert_true((ix.used + ix.removed) * 2 <= ix.cap);
    for (int64_t i = 1; i <= N + N / 2; i++) {
        size_t n = walk(&ix, gw_idindex_hash((char *)&i, sizeof(i)), &sum);
        if (i <= N && i % 2 == 1)
            assert_int_equal(n, 0);
        else {
            assert_int_equal(n, 1);
            assert_int_equal(sum, i);
        }
    }
    gw_idindex_free(&ix);
    assert_null(ix.slots);
}

/* After gw_idindex_reserve, the next add needs no memory: the table is
 * already large enough (op_put reserves before its INSERT). */
static void test_reserve(void **state)
{
    struct gw_idindex ix = { 0 };

    (void)state;
    assert_int_equal(gw_idindex_reserve(&ix), GW_OK);
    assert_true(ix.cap > 0);
    for (int64_t i = 1; i <= 5000; i++) {
        assert_int_equal(gw_idindex_reserve(&ix), GW_OK);
        size_t cap = ix.cap;
        struct gw_idindex_slot *slots = ix.slots;
        assert_true((ix.used + ix.removed + 1) * 2 <= ix.cap);
        assert_int_equal(gw_idindex_add(&ix, gw_idindex_hash((char *)&i, sizeof(i)), i), GW_OK);
        assert_int_equal(ix.cap, cap); /* no rehash inside the add */
        assert_ptr_equal(ix.slots, slots);
    }
    gw_idindex_free(&ix);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hash),
        cmocka_unit_test(test_empty),
        cmocka_unit_test(test_add_find_remove),
        cmocka_unit_test(test_growth_and_reuse),
        cmocka_unit_test(test_reserve),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
