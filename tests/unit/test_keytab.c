/*
 * test_keytab.c - the store's keys as the loops see them (keytab.c): active keys
 * only, a config key's name left out, [limits] defaults for -1, model names
 * resolved by the catalog, lookup by digest at every size; the values the admin
 * API and `gateway keys` take (limits' bounds, expiry dates).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "keytab.h"

static struct gw_config *load(void)
{
    char path[] = "/tmp/gw-keytab-XXXXXX";
    int fd = mkstemp(path);
    FILE *f = fdopen(fd, "w");
    struct gw_config *cfg;

    fprintf(f, "include = %s/config/models.conf\n[upstream]\nurl = http://127.0.0.1:1\n"
               "key = env:HOME\n[limits]\nrpm = 30\ndaily_seconds = 600\n"
               "[key cfgkey]\nsha256 = %064d\n", GW_SOURCE_DIR, 1);
    fclose(f);
    cfg = gw_config_load(path, stderr);
    remove(path);
    assert_non_null(cfg);
    return cfg;
}

static struct gw_store_key row(const char *name, unsigned char fill)
{
    struct gw_store_key k = { .name = name, .rpm = -1, .burst = -1, .concurrency = -1,
                              .daily_seconds = -1, .models = "" };
    memset(k.sha256, fill, sizeof(k.sha256));
    return k;
}

static void test_build(void **state)
{
    struct gw_config *cfg = load();
    struct gw_store_key rows[4] = { row("zed", 9), row("amy", 1), row("cfgkey", 2),
                                    row("gone", 3) };
    rows[0].daily_seconds = 0; /* unlimited, not the default */
    rows[0].models = "veo3.1, veo3 ,";
    rows[0].expires_at = 2000000000;
    rows[3].revoked_at = 5;
    struct gw_keytab *t = gw_keytab_build(cfg, rows, 4, 7);

    assert_non_null(t);
    assert_int_equal(t->nkeys, 2);   /* revoked and the config's name left out */
    assert_int_equal(t->skipped, 1);
    assert_int_equal(t->version, 7);
    unsigned char d[32];
    memset(d, 9, sizeof(d));
    const struct gw_team_key *k = gw_keytab_lookup(t, d);
    assert_non_null(k);
    assert_string_equal(k->name, "zed");
    assert_int_equal(k->limits.rpm, 30);
    assert_int_equal(k->limits.daily_seconds, 0);
    assert_int_equal(k->expires_ms, INT64_C(2000000000000));
    assert_int_equal(k->models.n, 2);
    assert_string_equal(k->models.v[0], "veo_3_1"); /* the alias, as sent upstream */
    assert_string_equal(k->models.v[1], "veo3");
    assert_false(k->admin);
    memset(d, 1, sizeof(d));
    assert_int_equal(gw_keytab_lookup(t, d)->limits.daily_seconds, 600);
    memset(d, 3, sizeof(d));
    assert_null(gw_keytab_lookup(t, d));
    assert_string_equal(gw_keytab_find(cfg, t, "cfgkey")->name, "cfgkey");
    assert_ptr_equal(gw_keytab_find(cfg, t, "amy"), gw_keytab_lookup(t, (unsigned char[32]){
                                                                          [0 ... 31] = 1 }));
    assert_null(gw_keytab_find(cfg, t, "gone"));
    gw_keytab_hold(t);
    gw_keytab_release(t);
    gw_keytab_release(t);
    gw_config_free(cfg);
}

static void test_lookup_many(void **state)
{
    struct gw_config cfg;
    enum { N = 1000 };
    struct gw_store_key *rows = calloc(N, sizeof(*rows));
    char (*names)[16] = calloc(N, 16);

    memset(&cfg, 0, sizeof(cfg));
    for (unsigned i = 0; i < N; i++) {
        snprintf(names[i], 16, "k%u", i);
        rows[i] = row(names[i], 0);
        for (int b = 0; b < 32; b++) /* spread over the digest space */
            rows[i].sha256[b] = (unsigned char)((i * 2654435761u) >> (b % 4 * 8));
        rows[i].sha256[31] = (unsigned char)i;
        rows[i].sha256[30] = (unsigned char)(i >> 8);
    }
    struct gw_keytab *t = gw_keytab_build(&cfg, rows, N, 1);
    assert_int_equal(t->nkeys, N);
    for (unsigned i = 0; i < N; i++) {
        const struct gw_team_key *k = gw_keytab_lookup(t, rows[i].sha256);
        assert_non_null(k);
        assert_string_equal(k->name, names[i]);
    }
    unsigned char none[32] = { 0xff };
    assert_null(gw_keytab_lookup(t, none));
    assert_null(gw_keytab_lookup(NULL, none));
    gw_keytab_release(t);
    free(rows);
    free(names);
}

static void test_values(void **state)
{
    struct gw_error err;
    int64_t t;

    assert_int_equal(gw_keytab_check_limit(GW_KEY_RPM, 100000, &err), GW_OK);
    assert_int_equal(gw_keytab_check_limit(GW_KEY_RPM, -1, &err), GW_OK);
    assert_int_equal(gw_keytab_check_limit(GW_KEY_RPM, 100001, &err), GW_ERR);
    assert_string_equal(err.param, "rpm");
    assert_int_equal(gw_keytab_check_limit(GW_KEY_DAILY_SECONDS, -2, &err), GW_ERR);
    assert_int_equal(err.status, 400);
    assert_int_equal(gw_keytab_check_limit(GW_KEY_DAILY_SECONDS, 100000000, &err), GW_OK);

    assert_int_equal(gw_keytab_parse_expires("2030-01-01", 0, &t, &err), GW_OK);
    assert_int_equal(t, 1893456000);
    assert_int_equal(gw_keytab_parse_expires("2030-01-01T12:30:15Z", 0, &t, &err), GW_OK);
    assert_int_equal(t, 1893456000 + 12 * 3600 + 30 * 60 + 15);
    assert_int_equal(gw_keytab_parse_expires("2028-02-29", 0, &t, &err), GW_OK);
    static const char *const bad[] = { "2027-02-29", "2030-13-01", "2030-01-00", "2030-1-01",
                                       "2030-01-01T24:00:00Z", "2030-01-01T12:00:00",
                                       "2030-01-01 12:00:00Z", "tomorrow", "", "+030-01-01" };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(gw_keytab_parse_expires(bad[i], 0, &t, &err), GW_ERR);
        assert_string_equal(err.param, "expires");
    }
    /* not after now: refused */
    assert_int_equal(gw_keytab_parse_expires("2030-01-01", 1893456000, &t, &err), GW_ERR);
    assert_non_null(strstr(err.message, "past"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_build),
        cmocka_unit_test(test_lookup_many),
        cmocka_unit_test(test_values),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
