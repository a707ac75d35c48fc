/*
 * test_config.c - gw_config_load: defaults, every value type good and bad, the exact
 * error text (file, line, section.key, expected, got), several errors at once,
 * includes, secrets, aliases, keys, URLs, the shipped example, and a
 * failing-allocation sweep.
 *
 * Every test runs in a fresh temporary directory (the cwd), and loads "gw.conf"
 * by a relative path, so error lines read "gw.conf:LINE: ...".
 */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <ftw.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"

#define KIB 1024ULL
#define MIB (1024 * KIB)
#define GIB (1024 * MIB)

/* The smallest valid config: 3 lines, so a section added after it starts at line 4. */
#define MIN_CONF "[upstream]\nurl = http://up.test\nkey = env:GW_TEST_KEY\n"

static char test_dir[64];
static char start_dir[4096];

/* ------------------------------------------------------------------------------------------ */
/* Helpers                                                                                    */

static void write_file(const char *path, const char *text)
{
    FILE *fp = fopen(path, "w");

    assert_non_null(fp);
    assert_int_equal(fputs(text, fp) >= 0, 1);
    assert_int_equal(fclose(fp), 0);
}

/* Load path; *errs gets everything written to the error stream (caller frees). */
static struct gw_config *load(const char *path, char **errs)
{
    struct gw_config *cfg;
    size_t len;
    FILE *fp = open_memstream(errs, &len);

    assert_non_null(fp);
    cfg = gw_config_load(path, fp);
    fclose(fp);
    return cfg;
}

/* Write text to gw.conf, load it, and expect success with no error output. */
static struct gw_config *load_ok(const char *text)
{
    struct gw_config *cfg;
    char *errs = NULL;

    write_file("gw.conf", text);
    cfg = load("gw.conf", &errs);
    if (cfg == NULL || errs[0] != '\0')
        fprintf(stderr, "unexpected errors:\n%s", errs);
    assert_non_null(cfg);
    assert_string_equal(errs, "");
    free(errs);
    return cfg;
}

/* Write text to gw.conf, load it, and expect exactly these errors (lines, in order). */
static void expect_errors(const char *text, const char *expected)
{
    struct gw_config *cfg;
    char *errs = NULL;

    write_file("gw.conf", text);
    cfg = load("gw.conf", &errs);
    assert_null(cfg);
    assert_string_equal(errs, expected);
    free(errs);
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static int setup(void **state)
{
    (void)state;
    strcpy(test_dir, "/tmp/gw_test_config.XXXXXX");
    if (getcwd(start_dir, sizeof(start_dir)) == NULL || mkdtemp(test_dir) == NULL ||
        chdir(test_dir) != 0)
        return -1;
    setenv("GW_TEST_KEY", "sk-test-123", 1);
    unsetenv("GW_TEST_UNSET");
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    if (chdir(start_dir) != 0)
        return -1;
    return nftw(test_dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}


/* ------------------------------------------------------------------------------------------ */
/* Keys, limits, store, jobs, admin (issue 6)                                                 */

#define SHA_A "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
#define MODELS "[model veo_3_1]\nfamily = frames\n[model veo3]\nfamily = frames\n" \
               "[aliases]\nveo3.1 = veo_3_1\n"

static void test_limits_store_admin(void **state)
{
    struct gw_config *cfg;

    (void)state;
    cfg = load_ok(MIN_CONF);
    assert_null(cfg->store_path);
    assert_int_equal(cfg->store_sync_full, 0);
    assert_int_equal(cfg->jobs_refresh_ms, 30000);
    assert_true(cfg->jobs_retention_ms == 30LL * 24 * 3600 * 1000);
    assert_null(cfg->admin.host);
    assert_int_equal(cfg->limits.rpm, 0);
    assert_int_equal(cfg->limits.daily_seconds, 0);
    assert_int_equal(cfg->upstream_queue_ms, 10000);
    assert_string_equal(cfg->upstream_key_labels[0], "env:GW_TEST_KEY");
    gw_config_free(cfg);

    cfg = load_ok(MIN_CONF "[store]\npath = data/gw.db\nsynchronous = full\n"
                  "[jobs]\nrefresh = 5s\nretention = 7d\n[admin]\nlisten = 127.0.0.1:8081\n"
                  "[limits]\nrpm = 10\nburst = 3\nconcurrency = 2\ndaily_seconds = 600\n"
                  "upstream_rpm = 100\nupstream_queue = 2s\n" MODELS
                  "[key alice]\nsha256 = " SHA_A "\nrpm = 1\nmodels = veo3.1, veo3\n"
                  "expires = 2027-06-30\nadmin = yes\n"
                  "[key bob]\nsha256 = " SHA_A "\ndaily_seconds = 0\n");
    assert_string_equal(cfg->store_path, "data/gw.db");
    assert_int_equal(cfg->store_sync_full, 1);
    assert_int_equal(cfg->jobs_refresh_ms, 5000);
    assert_true(cfg->jobs_retention_ms == 7LL * 24 * 3600 * 1000);
    assert_string_equal(cfg->admin.host, "127.0.0.1");
    assert_int_equal(cfg->admin.port, 8081);
    assert_int_equal(cfg->upstream_rpm, 100);
    assert_int_equal(cfg->upstream_queue_ms, 2000);
    /* alice overrides rpm, inherits the rest */
    assert_int_equal(cfg->keys[0].limits.rpm, 1);
    assert_int_equal(cfg->keys[0].limits.burst, 3);
    assert_int_equal(cfg->keys[0].limits.concurrency, 2);
    assert_int_equal(cfg->keys[0].limits.daily_seconds, 600);
    /* the allowlist is kept as the names sent upstream */
    assert_int_equal(cfg->keys[0].models.n, 2);
    assert_string_equal(cfg->keys[0].models.v[0], "veo_3_1");
    assert_string_equal(cfg->keys[0].models.v[1], "veo3");
    assert_true(cfg->keys[0].expires_ms == 1814313600000LL); /* 2027-06-30T00:00:00Z */
    assert_int_equal(cfg->keys[0].admin, 1);
    /* bob: an explicit 0 is unlimited, not the default */
    assert_int_equal(cfg->keys[1].limits.daily_seconds, 0);
    assert_int_equal(cfg->keys[1].limits.rpm, 10);
    assert_int_equal(cfg->keys[1].models.n, 0);
    assert_true(cfg->keys[1].expires_ms == 0);
    assert_int_equal(cfg->keys[1].admin, 0);
    gw_config_free(cfg);
}

static void test_load_refs_resolves_no_secret(void **state)
{
    struct gw_config *cfg;
    char *errs = NULL;

    (void)state;
    /* the variable is not set and the file does not exist: only their shapes count */
    write_file("gw.conf", "[upstream]\nurl = http://up.test\nkey = env:GW_TEST_NEVER_SET\n"
                          "key = file:/nonexistent/key\n[store]\npath = x.db\n");
    unsetenv("GW_TEST_NEVER_SET");
    FILE *fp = open_memstream(&errs, &(size_t){ 0 });
    cfg = gw_config_load_refs("gw.conf", fp);
    fclose(fp);
    assert_non_null(cfg);
    assert_string_equal(errs, "");
    assert_int_equal(cfg->nupstream_keys, 2);
    assert_string_equal(cfg->upstream_key_labels[0], "env:GW_TEST_NEVER_SET");
    assert_string_equal(cfg->upstream_key_labels[1], "file:/nonexistent/key");
    assert_string_equal(cfg->upstream_keys[0], "-"); /* a placeholder, never a secret */
    assert_string_equal(cfg->store_path, "x.db");
    gw_config_free(cfg);
    free(errs);
    /* the normal load refuses the same file */
    assert_null(load("gw.conf", &errs));
    free(errs);
    /* a malformed reference is still an error */
    write_file("gw.conf", "[upstream]\nurl = http://up.test\nkey = inline-secret\n");
    fp = open_memstream(&errs, &(size_t){ 0 });
    cfg = gw_config_load_refs("gw.conf", fp);
    fclose(fp);
    assert_null(cfg);
    assert_non_null(strstr(errs, "upstream.key"));
    assert_null(strstr(errs, "inline-secret"));
    free(errs);
}

static void test_limits_bad_values(void **state)
{
    (void)state;
    expect_errors(MIN_CONF MODELS "[key a]\nsha256 = " SHA_A "\nexpires = 2027-02-29\n"
                  "models = veo3.1, nope\nrpm = -1\n",
                  "gw.conf:12: key a.expires: expected a date YYYY-MM-DD (UTC), got \"2027-02-29\"\n"
                  "gw.conf:14: key a.rpm: expected integer 0..100000, got \"-1\"\n"
                  "gw.conf:13: key a.models: expected models or aliases of the catalog, "
                  "got \"nope\"\n");
    expect_errors(MIN_CONF "[jobs]\nretention = 30\n[store]\nsynchronous = extra\n"
                  "[admin]\nlisten = nowhere\n[key a]\nsha256 = " SHA_A "\nmodels = a,,b\n",
                  "gw.conf:5: jobs.retention: expected duration 1h..3650d (with a ms/s/m/h/d "
                  "suffix), got \"30\"\n"
                  "gw.conf:7: store.synchronous: expected one of normal|full, got \"extra\"\n"
                  "gw.conf:9: admin.listen: expected HOST:PORT with PORT 1..65535 (IPv6 as "
                  "[ADDR]:PORT), got \"nowhere\"\n"
                  "gw.conf:12: key a.models: expected a comma-separated list of model names, "
                  "got \"a,,b\"\n");
}

/* [store] on Redis (issue 7)                                                                 */

static void test_store_redis(void **state)
{
    struct gw_config *cfg;

    (void)state;
    cfg = load_ok(MIN_CONF);
    assert_int_equal(cfg->store_backend, GW_STORE_SQLITE);
    assert_string_equal(cfg->redis_host, "127.0.0.1");
    assert_int_equal(cfg->redis_port, 6379);
    assert_null(cfg->redis_unix);
    assert_null(cfg->redis_password);
    assert_int_equal(cfg->redis_db, 0);
    assert_string_equal(cfg->redis_prefix, "videogw:");
    assert_int_equal(cfg->redis_timeout_ms, 250);
    assert_int_equal(cfg->redis_on_failure, GW_STORE_FAIL_REFUSE);
    gw_config_free(cfg);

    setenv("GW_TEST_REDIS_PW", "s3cret-pw", 1);
    cfg = load_ok(MIN_CONF "[store]\nbackend = redis\nredis = [::1]:6380\n"
                  "password = env:GW_TEST_REDIS_PW\ndb = 3\nprefix = team{a}:gw.\n"
                  "timeout = 1s\non_failure = local\n");
    assert_int_equal(cfg->store_backend, GW_STORE_REDIS);
    assert_string_equal(cfg->redis_host, "::1");
    assert_int_equal(cfg->redis_port, 6380);
    assert_string_equal(cfg->redis_password, "s3cret-pw");
    assert_int_equal(cfg->redis_db, 3);
    assert_string_equal(cfg->redis_prefix, "team{a}:gw.");
    assert_int_equal(cfg->redis_timeout_ms, 1000);
    assert_int_equal(cfg->redis_on_failure, GW_STORE_FAIL_LOCAL);
    gw_config_free(cfg);

    /* a unix socket, relative to the file's directory; the password from a file */
    write_file("pw.txt", "from-file\n");
    cfg = load_ok(MIN_CONF "[store]\nbackend = redis\nredis = unix:run/redis.sock\n"
                  "password = file:pw.txt\n");
    assert_string_equal(cfg->redis_unix, "run/redis.sock");
    assert_null(cfg->redis_host);
    assert_string_equal(cfg->redis_password, "from-file");
    gw_config_free(cfg);

    /* gateway usage (refs mode) resolves the password: it talks to Redis with it */
    write_file("gw.conf", "[upstream]\nurl = http://up.test\nkey = env:GW_TEST_NEVER_SET\n"
                          "[store]\nbackend = redis\npassword = env:GW_TEST_REDIS_PW\n");
    unsetenv("GW_TEST_NEVER_SET");
    cfg = gw_config_load_refs("gw.conf", NULL);
    assert_non_null(cfg);
    assert_string_equal(cfg->redis_password, "s3cret-pw");
    gw_config_free(cfg);
}

static void test_store_redis_bad_values(void **state)
{
    (void)state;
    setenv("GW_TEST_REDIS_PW", "has space", 1);
    unsetenv("GW_TEST_NEVER_SET");
    expect_errors(MIN_CONF "[store]\nbackend = postgres\nredis = localhost\n"
                  "db = -1\nprefix = a b\ntimeout = 250\non_failure = ignore\n"
                  "password = hunter2\n",
                  "gw.conf:5: store.backend: expected one of sqlite|redis, got \"postgres\"\n"
                  "gw.conf:6: store.redis: expected HOST:PORT (IPv6 as [ADDR]:PORT) or "
                  "unix:PATH, got \"localhost\"\n"
                  "gw.conf:7: store.db: expected integer 0..100000, got \"-1\"\n"
                  "gw.conf:8: store.prefix: expected 1..64 characters of A-Za-z0-9 and :_.-{}, "
                  "got \"a b\"\n"
                  "gw.conf:9: store.timeout: expected duration 10ms..1m (with a ms/s/m/h "
                  "suffix), got \"250\"\n"
                  "gw.conf:10: store.on_failure: expected one of refuse|local, got \"ignore\"\n"
                  "gw.conf:11: store.password: expected env:NAME or file:PATH (the key itself "
                  "never goes in the config), got 7 characters of neither form (not shown)\n");
    expect_errors(MIN_CONF "[store]\nredis = unix:\nredis = 127.0.0.1:0\ntimeout = 5ms\n"
                  "password = env:GW_TEST_REDIS_PW\nprefix = a*\n",
                  "gw.conf:5: store.redis: expected HOST:PORT (IPv6 as [ADDR]:PORT) or "
                  "unix:PATH, got \"unix:\"\n"
                  "gw.conf:6: store.redis: expected a single value (first set at gw.conf:5), "
                  "got \"127.0.0.1:0\"\n"
                  "gw.conf:7: store.timeout: expected duration 10ms..1m (with a ms/s/m/h "
                  "suffix), got \"5ms\"\n"
                  "gw.conf:8: store.password: expected env:NAME or file:PATH holding a key of "
                  "visible ASCII on one line, got \"env:GW_TEST_REDIS_PW\" (spaces or control "
                  "characters)\n"
                  "gw.conf:9: store.prefix: expected 1..64 characters of A-Za-z0-9 and :_.-{}, "
                  "got \"a*\"\n");
    expect_errors(MIN_CONF "[store]\nredis = 127.0.0.1:0\n",
                  "gw.conf:5: store.redis: expected HOST:PORT (IPv6 as [ADDR]:PORT) or "
                  "unix:PATH, got \"127.0.0.1:0\"\n");
    /* the password is never echoed */
    write_file("gw.conf", MIN_CONF "[store]\npassword = env:GW_TEST_NEVER_SET\n");
    char *errs = NULL;
    assert_null(load("gw.conf", &errs));
    assert_non_null(strstr(errs, "store.password"));
    free(errs);
    unsetenv("GW_TEST_REDIS_PW");
}

/* ------------------------------------------------------------------------------------------ */
/* Defaults and good values                                                                   */

static void test_defaults(void **state)
{
    struct gw_config *cfg = load_ok(MIN_CONF);

    (void)state;
    assert_string_equal(cfg->path, "gw.conf");
    assert_string_equal(cfg->listen.host, "127.0.0.1");
    assert_int_equal(cfg->listen.port, 8080);
    assert_int_equal(cfg->threads, 0);
    assert_int_equal(cfg->handover, 1);
    assert_null(cfg->tls_cert);
    assert_null(cfg->tls_key);
    assert_true(cfg->max_body == 2 * GIB);
    assert_true(cfg->max_json_body == 1 * MIB);
    assert_true(cfg->max_header_bytes == 32 * KIB);
    assert_true(cfg->lookahead == 256 * KIB);
    assert_int_equal(cfg->fallback, GW_FALLBACK_CHUNKED);
    assert_string_equal(cfg->spool_dir, "/tmp");
    assert_int_equal(cfg->client_timeout_ms, 60000);
    assert_string_equal(cfg->access_log, "-");
    assert_int_equal(cfg->log_level, 2);

    assert_string_equal(cfg->upstream_url, "http://up.test");
    assert_int_equal(cfg->upstream_tls, 0);
    assert_string_equal(cfg->upstream_host, "up.test");
    assert_int_equal(cfg->upstream_port, 80);
    assert_string_equal(cfg->upstream_base, "");
    assert_null(cfg->ca_file);
    assert_int_equal(cfg->tls_verify, 1);
    assert_int_equal(cfg->connect_timeout_ms, 5000);
    assert_int_equal(cfg->response_timeout_ms, 120000);
    assert_int_equal(cfg->idle_timeout_ms, 30000);
    assert_int_equal(cfg->pool_size, 16);
    assert_int_equal(cfg->nupstream_keys, 1);
    assert_string_equal(cfg->upstream_keys[0], "sk-test-123");

    assert_int_equal(cfg->catalog.nmodels, 0);
    assert_int_equal(cfg->catalog.naliases, 0);
    assert_int_equal(cfg->catalog.allow_unknown, 0);
    assert_int_equal(cfg->nkeys, 0);
    gw_config_free(cfg);
}

static void test_good_values(void **state)
{
    struct gw_config *cfg;

    (void)state;
    write_file("cert.pem", "cert\n");
    write_file("key.pem", "key\n");
    write_file("ca.pem", "ca\n");
    cfg = load_ok(MIN_CONF
                  "[server]\n"
                  "listen = [::1]:9000\n"
                  "threads = 64\n"
                  "handover = off\n"
                  "tls_cert = cert.pem\n"
                  "tls_key = /dev/null\n" /* absolute: as written */
                  "max_body = 3G\n"
                  "max_json_body = 1048576\n"
                  "max_header_bytes = 1m\n"
                  "lookahead = 0\n"
                  "fallback = spool\n"
                  "spool_dir = /var/spool/gw\n"
                  "client_timeout = 90s\n"
                  "access_log = off\n"
                  "log_level = DEBUG\n"
                  "[upstream]\n"
                  "ca_file = ca.pem\n"
                  "tls_verify = no\n"
                  "connect_timeout = 250ms\n"
                  "response_timeout = 2m\n"
                  "idle_timeout = 1h\n"
                  "pool_size = 0\n"
                  "[models]\n"
                  "unknown = pass\n");
    assert_string_equal(cfg->listen.host, "::1");
    assert_int_equal(cfg->listen.port, 9000);
    assert_int_equal(cfg->threads, 64);
    assert_int_equal(cfg->handover, 0);
    assert_string_equal(cfg->tls_cert, "cert.pem");
    assert_string_equal(cfg->tls_key, "/dev/null");
    assert_true(cfg->max_body == 3 * GIB);
    assert_true(cfg->max_json_body == 1 * MIB);
    assert_true(cfg->max_header_bytes == 1 * MIB);
    assert_true(cfg->lookahead == 0);
    assert_int_equal(cfg->fallback, GW_FALLBACK_SPOOL);
    assert_string_equal(cfg->spool_dir, "/var/spool/gw");
    assert_int_equal(cfg->client_timeout_ms, 90000);
    assert_string_equal(cfg->access_log, "off");
    assert_int_equal(cfg->log_level, 3);
    assert_string_equal(cfg->ca_file, "ca.pem");
    assert_int_equal(cfg->tls_verify, 0);
    assert_int_equal(cfg->connect_timeout_ms, 250);
    assert_int_equal(cfg->response_timeout_ms, 120000);
    assert_int_equal(cfg->idle_timeout_ms, 3600000);
    assert_int_equal(cfg->pool_size, 0);
    assert_int_equal(cfg->catalog.allow_unknown, 1);
    gw_config_free(cfg);
}

static void test_bool_spellings(void **state)
{
    static const struct {
        const char *v;
        int want;
    } cases[] = {
        { "on", 1 },  { "true", 1 }, { "yes", 1 }, { "1", 1 }, { "ON", 1 }, { "True", 1 },
        { "off", 0 }, { "false", 0 }, { "no", 0 }, { "0", 0 }, { "Off", 0 }, { "NO", 0 },
    };

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char text[256];
        struct gw_config *cfg;

        snprintf(text, sizeof(text), MIN_CONF "tls_verify = %s\n", cases[i].v);
        cfg = load_ok(text);
        assert_int_equal(cfg->tls_verify, cases[i].want);
        gw_config_free(cfg);
    }
}

static void test_size_and_duration_units(void **state)
{
    struct gw_config *cfg;

    (void)state;
    cfg = load_ok(MIN_CONF "[server]\nmax_body = 1024g\nmax_json_body = 1k\nlookahead = 64m\n"
                  "client_timeout = 1s\n[upstream]\nconnect_timeout = 5m\n"
                  "response_timeout = 3600s\nidle_timeout = 1000ms\n");
    assert_true(cfg->max_body == 1024 * GIB);
    assert_true(cfg->max_json_body == KIB);
    assert_true(cfg->lookahead == 64 * MIB);
    assert_int_equal(cfg->client_timeout_ms, 1000);
    assert_int_equal(cfg->connect_timeout_ms, 300000);
    assert_int_equal(cfg->response_timeout_ms, 3600000);
    assert_int_equal(cfg->idle_timeout_ms, 1000);
    gw_config_free(cfg);
}

/* Indentation is ignored (no multi-line continuation), inline comments are stripped,
 * a UTF-8 BOM is skipped, CRLF line ends work, "key: value" works as in inih. */
static void test_syntax_conveniences(void **state)
{
    struct gw_config *cfg;

    (void)state;
    cfg = load_ok("\xef\xbb\xbf; comment\n# another\n"
                  "  [upstream]  \n"
                  "    url = http://up.test   ; the service\n"
                  "    key = env:GW_TEST_KEY\n"
                  "[server] ; the client side\r\n"
                  "threads: 4\r\n"
                  "    listen = 0.0.0.0:81\n"
                  "\n");
    assert_int_equal(cfg->threads, 4);
    assert_string_equal(cfg->listen.host, "0.0.0.0");
    assert_int_equal(cfg->listen.port, 81);
    assert_string_equal(cfg->upstream_url, "http://up.test");
    gw_config_free(cfg);
}

/* Relative paths are relative to the file they are written in. */
static void test_relative_paths(void **state)
{
    struct gw_config *cfg;
    char *errs = NULL;

    (void)state;
    assert_int_equal(mkdir("etc", 0700), 0);
    write_file("etc/cert.pem", "c\n");
    write_file("etc/key.pem", "k\n");
    write_file("etc/up.key", "sk-from-file\n");
    write_file("etc/gw.conf", "[server]\ntls_cert = cert.pem\ntls_key = key.pem\n"
                              "spool_dir = spool\naccess_log = log/access.log\n"
                              "[upstream]\nurl = http://up.test\nkey = file:up.key\n");
    cfg = load("etc/gw.conf", &errs);
    assert_string_equal(errs, "");
    assert_non_null(cfg);
    assert_string_equal(cfg->tls_cert, "etc/cert.pem");
    assert_string_equal(cfg->tls_key, "etc/key.pem");
    assert_string_equal(cfg->spool_dir, "etc/spool");
    assert_string_equal(cfg->access_log, "etc/log/access.log");
    assert_string_equal(cfg->upstream_keys[0], "sk-from-file");
    gw_config_free(cfg);
    free(errs);
}

/* ------------------------------------------------------------------------------------------ */
/* Bad values, one per type, with the exact error text                                       */

static void test_bad_values(void **state)
{
    static const struct {
        const char *section;
        const char *line;
        const char *error; /* after "gw.conf:5: " */
    } cases[] = {
        { "server", "threads = 65", "server.threads: expected integer 0..64, got \"65\"" },
        { "server", "threads = ten", "server.threads: expected integer 0..64, got \"ten\"" },
        { "server", "threads = -1", "server.threads: expected integer 0..64, got \"-1\"" },
        { "server", "threads = 4x", "server.threads: expected integer 0..64, got \"4x\"" },
        { "server", "threads = 99999999999999999999999",
          "server.threads: expected integer 0..64, got \"99999999999999999999999\"" },
        { "server", "max_body = 2t",
          "server.max_body: expected size 1k..1024g (bytes, or with a k/m/g suffix), "
          "got \"2t\"" },
        { "server", "max_body = 1000",
          "server.max_body: expected size 1k..1024g (bytes, or with a k/m/g suffix), "
          "got \"1000\"" },
        { "server", "max_body = 1025g",
          "server.max_body: expected size 1k..1024g (bytes, or with a k/m/g suffix), "
          "got \"1025g\"" },
        { "server", "max_body = 2gb",
          "server.max_body: expected size 1k..1024g (bytes, or with a k/m/g suffix), "
          "got \"2gb\"" },
        { "server", "max_body = 99999999999999999999g",
          "server.max_body: expected size 1k..1024g (bytes, or with a k/m/g suffix), "
          "got \"99999999999999999999g\"" },
        { "server", "lookahead = -1",
          "server.lookahead: expected size 0..64m (bytes, or with a k/m/g suffix), "
          "got \"-1\"" },
        { "server", "max_header_bytes = ",
          "server.max_header_bytes: expected size 1k..1m (bytes, or with a k/m/g suffix), "
          "got \"\"" },
        { "server", "client_timeout = 60",
          "server.client_timeout: expected duration 1s..1h (with a ms/s/m/h suffix), "
          "got \"60\"" },
        { "server", "client_timeout = 2h",
          "server.client_timeout: expected duration 1s..1h (with a ms/s/m/h suffix), "
          "got \"2h\"" },
        { "server", "client_timeout = 5sec",
          "server.client_timeout: expected duration 1s..1h (with a ms/s/m/h suffix), "
          "got \"5sec\"" },
        { "server", "client_timeout = 999ms",
          "server.client_timeout: expected duration 1s..1h (with a ms/s/m/h suffix), "
          "got \"999ms\"" },
        { "server", "fallback = disk",
          "server.fallback: expected one of chunked|spool, got \"disk\"" },
        { "server", "log_level = loud",
          "server.log_level: expected one of error|warn|info|debug, got \"loud\"" },
        { "server", "listen = 8080",
          "server.listen: expected HOST:PORT with PORT 1..65535 (IPv6 as [ADDR]:PORT), "
          "got \"8080\"" },
        { "server", "listen = host:0",
          "server.listen: expected HOST:PORT with PORT 1..65535 (IPv6 as [ADDR]:PORT), "
          "got \"host:0\"" },
        { "server", "listen = host:65536",
          "server.listen: expected HOST:PORT with PORT 1..65535 (IPv6 as [ADDR]:PORT), "
          "got \"host:65536\"" },
        { "server", "listen = ::1:80",
          "server.listen: expected HOST:PORT with PORT 1..65535 (IPv6 as [ADDR]:PORT), "
          "got \"::1:80\"" },
        { "server", "listen = [::1]",
          "server.listen: expected HOST:PORT with PORT 1..65535 (IPv6 as [ADDR]:PORT), "
          "got \"[::1]\"" },
        { "server", "listen = [zz]:80",
          "server.listen: expected HOST:PORT with PORT 1..65535 (IPv6 as [ADDR]:PORT), "
          "got \"[zz]:80\"" },
        { "server", "access_log = ", "server.access_log: expected -, off or a file path, "
                                     "got \"\"" },
        { "server", "spool_dir = ", "server.spool_dir: expected a directory path, got \"\"" },
        { "upstream", "tls_verify = maybe",
          "upstream.tls_verify: expected on|off|true|false|yes|no|1|0, got \"maybe\"" },
        { "upstream", "pool_size = 1025",
          "upstream.pool_size: expected integer 0..1024, got \"1025\"" },
        { "upstream", "connect_timeout = 50ms",
          "upstream.connect_timeout: expected duration 100ms..5m (with a ms/s/m/h suffix), "
          "got \"50ms\"" },
        { "upstream", "ca_file = /nonexistent/ca.pem",
          "upstream.ca_file: expected a readable file, got \"/nonexistent/ca.pem\" "
          "(No such file or directory)" },
        { "models", "unknown = allow",
          "models.unknown: expected one of reject|pass, got \"allow\"" },
        /* control bytes and quotes are escaped, long values cut */
        { "server", "fallback = \"a\\b\"\x01",
          "server.fallback: expected one of chunked|spool, got \"\\\"a\\\\b\\\"\\x01\"" },
        { "server", "fallback = 0123456789012345678901234567890123456789"
                    "0123456789012345678901234567890123456789XYZ",
          "server.fallback: expected one of chunked|spool, got \"0123456789012345678901234567"
          "8901234567890123456789012345678901234567890123456789...\"" },
    };

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char text[512], want[512];

        snprintf(text, sizeof(text), MIN_CONF "[%s]\n%s\n", cases[i].section, cases[i].line);
        snprintf(want, sizeof(want), "gw.conf:5: %s\n", cases[i].error);
        expect_errors(text, want);
    }
}

static void test_multiple_errors_reported_together(void **state)
{
    (void)state;
    expect_errors("[server]\n"                /* 1 */
                  "threads = many\n"          /* 2 */
                  "max_body = huge\n"         /* 3 */
                  "no equals sign here\n"     /* 4 */
                  "threads = 3\n"             /* 5: a duplicate, even after a bad value */
                  "[limitz]\n"                /* 6 */
                  "rpm = 10\n"                /* 7: ignored, its section was reported */
                  "[model m]\n"               /* 8: family missing */
                  "seconds = 4,eight\n"       /* 9 */
                  "[upstream]\n"              /* 10: url and key missing */
                  "pool_size = 3\n",          /* 11 */
                  "gw.conf:2: server.threads: expected integer 0..64, got \"many\"\n"
                  "gw.conf:3: server.max_body: expected size 1k..1024g (bytes, or with a k/m/g "
                  "suffix), got \"huge\"\n"
                  "gw.conf:4: server: expected KEY = VALUE, a [SECTION] header or a comment, "
                  "got a line without '=' (not shown)\n"
                  "gw.conf:5: server.threads: expected a single value (first set at gw.conf:2), "
                  "got \"3\"\n"
                  "gw.conf:6: section: expected server|upstream|models|aliases|store|jobs|"
                  "admin|limits|model NAME|key NAME, got \"limitz\"\n"
                  "gw.conf:9: model m.seconds: expected a comma list of at most 16 integers "
                  "1..3600, got \"4,eight\"\n"
                  "gw.conf:10: upstream.url: expected http(s)://HOST[:PORT][/BASE], "
                  "got nothing\n"
                  "gw.conf:10: upstream.key: expected env:NAME or file:PATH, got nothing\n"
                  "gw.conf:8: model m.family: expected one of first|frames|components, "
                  "got nothing\n");
}

static void test_missing_required_without_sections(void **state)
{
    (void)state;
    expect_errors("; nothing\n",
                  "gw.conf: upstream.url: expected http(s)://HOST[:PORT][/BASE], got nothing\n"
                  "gw.conf: upstream.key: expected env:NAME or file:PATH, got nothing\n");
}

static void test_missing_file(void **state)
{
    struct gw_config *cfg;
    char *errs = NULL;

    (void)state;
    cfg = load("nope.conf", &errs);
    assert_null(cfg);
    assert_string_equal(errs, "nope.conf: expected a readable configuration file "
                              "(No such file or directory)\n");
    free(errs);
    /* A NULL error stream is allowed. */
    assert_null(gw_config_load("nope.conf", NULL));
}

static void test_unknown_key_and_section(void **state)
{
    (void)state;
    expect_errors(MIN_CONF "[server]\nlisten_port = 80\n",
                  "gw.conf:5: server.listen_port: expected one of include|listen|threads|handover|"
                  "tls_cert|tls_key|max_body|max_json_body|max_header_bytes|lookahead|fallback|"
                  "spool_dir|client_timeout|header_timeout|access_log|log_level, got \"listen_port\"\n");
    expect_errors(MIN_CONF "[model m]\nfamily = first\nimages = 2\n",
                  "gw.conf:6: model m.images: expected one of include|family|seconds|sizes|edits|"
                  "extensions|extend_seconds, "
                  "got \"images\"\n");
    expect_errors(MIN_CONF "[Server]\nthreads = 1\n[server extra]\n[model]\n",
                  "gw.conf:4: section: expected server|upstream|models|aliases|store|jobs|"
                  "admin|limits|model NAME|key NAME, got \"Server\"\n"
                  "gw.conf:6: section: expected server|upstream|models|aliases|store|jobs|"
                  "admin|limits|model NAME|key NAME, got \"server extra\"\n"
                  "gw.conf:7: section: expected server|upstream|models|aliases|store|jobs|"
                  "admin|limits|model NAME|key NAME, got \"model\"\n");
    expect_errors("threads = 4\n" MIN_CONF,
                  "gw.conf:1: threads: expected a [SECTION] header before it (only include may "
                  "come first), got \"threads\"\n");
    expect_errors(MIN_CONF "[server\n",
                  "gw.conf:4: section: expected a [SECTION] header alone on its line, "
                  "got \"[server\"\n");
    expect_errors(MIN_CONF "[server] threads = 1\n",
                  "gw.conf:4: section: expected a [SECTION] header alone on its line, "
                  "got \"[server] threads = 1\"\n");
}

static void test_long_lines(void **state)
{
    char text[4096];
    char big[1500];

    (void)state;
    memset(big, 'a', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    /* 199 bytes: one more than inih's 200-byte buffer holds with "\n\0" */
    snprintf(text, sizeof(text), MIN_CONF "[server]\naccess_log = %.*s\nthreads = x\n", 186,
             big);
    expect_errors(text, "gw.conf:5: server: expected a line of at most 198 bytes, got a longer "
                        "one (not shown)\n"
                        "gw.conf:6: server.threads: expected integer 0..64, got \"x\"\n");
    /* longer than the raw buffer too: the rest of the line is skipped, counting goes on */
    snprintf(text, sizeof(text), MIN_CONF "[server]\naccess_log = %s\nthreads = x\n", big);
    expect_errors(text, "gw.conf:5: server: expected a line of at most 198 bytes, got a longer "
                        "one (not shown)\n"
                        "gw.conf:6: server.threads: expected integer 0..64, got \"x\"\n");
    /* 198 bytes is fine */
    snprintf(text, sizeof(text), MIN_CONF "[server]\naccess_log = /%.*s\n", 184, big);
    gw_config_free(load_ok(text));
}

/* ------------------------------------------------------------------------------------------ */
/* include                                                                                    */

static void test_include_relative_and_errors(void **state)
{
    struct gw_config *cfg;
    char *errs = NULL;

    (void)state;
    assert_int_equal(mkdir("inc", 0700), 0);
    /* inc/models.conf includes more.conf, i.e. inc/more.conf, inside [model m1] */
    write_file("inc/models.conf", "[model m1]\nfamily = frames\ninclude = more.conf\n"
                                  "[aliases]\nfriendly = m1\n");
    write_file("inc/more.conf", "seconds = 4, 8\nsizes = 16x9\n");
    write_file("gw.conf", "include = inc/models.conf\n" MIN_CONF);
    cfg = load("gw.conf", &errs);
    assert_string_equal(errs, "");
    assert_non_null(cfg);
    assert_int_equal(cfg->catalog.nmodels, 1);
    assert_string_equal(cfg->catalog.models[0].name, "m1");
    assert_int_equal(cfg->catalog.models[0].nseconds, 2);
    assert_string_equal(cfg->catalog.models[0].seconds[0], "4");
    assert_string_equal(cfg->catalog.models[0].seconds[1], "8");
    assert_int_equal(cfg->catalog.models[0].nsizes, 1);
    assert_int_equal(cfg->catalog.naliases, 1);
    assert_string_equal(cfg->catalog.aliases[0].from, "friendly");
    assert_ptr_equal(cfg->catalog.aliases[0].to, &cfg->catalog.models[0]);
    gw_config_free(cfg);
    free(errs);

    /* An error inside the included file names that file and its own line. */
    write_file("inc/more.conf", "seconds = 4,8\nsizes = 16x9,huge\nbogus = 1\n");
    expect_errors("include = inc/models.conf\n" MIN_CONF,
                  "inc/more.conf:2: model m1.sizes: expected a comma list of at most 16 "
                  "WIDTHxHEIGHT sizes, got \"16x9,huge\"\n"
                  "inc/more.conf:3: model m1.bogus: expected one of include|family|seconds|"
                  "sizes|edits|extensions|extend_seconds, got \"bogus\"\n");

    /* The including file's section is unchanged after the include. */
    write_file("inc/empty.conf", "[server]\nthreads = 2\n");
    cfg = load_ok("[upstream]\ninclude = inc/empty.conf\nurl = http://up.test\n"
                  "key = env:GW_TEST_KEY\n");
    assert_int_equal(cfg->threads, 2);
    gw_config_free(cfg);
}

static void test_include_missing_and_depth(void **state)
{
    (void)state;
    expect_errors(MIN_CONF "[server]\ninclude = nope.conf\ninclude =\n",
                  "gw.conf:5: server.include: expected a readable file, got \"nope.conf\" "
                  "(No such file or directory)\n"
                  "gw.conf:6: server.include: expected a file path, got \"\"\n");
    /* A file including itself stops at the depth limit, with one error. */
    write_file("self.conf", "include = self.conf\n");
    expect_errors("include = self.conf\n" MIN_CONF,
                  "self.conf:1: include: expected at most 4 nested includes, "
                  "got \"self.conf\"\n");
}

/* ------------------------------------------------------------------------------------------ */
/* Secrets                                                                                    */

static void test_secret_errors_never_show_values(void **state)
{
    char *errs = NULL;
    struct gw_config *cfg;

    (void)state;
    write_file("empty.key", "\n\n");
    write_file("spaced.key", "sk-SECRETPART with space\n");
    setenv("GW_TEST_NL", "sk-SECRETPART\r\nX-Injected: 1", 1);
    setenv("GW_TEST_EMPTY", "", 1);
    write_file("gw.conf", "[upstream]\n"                 /* 1 */
                          "url = http://up.test\n"       /* 2 */
                          "key = env:GW_TEST_UNSET\n"    /* 3 */
                          "key = file:nope.key\n"        /* 4 */
                          "key = sk-SECRETPART-inline\n" /* 5 */
                          "key = env:GW_TEST_NL\n"       /* 6 */
                          "key = env:GW_TEST_EMPTY\n"    /* 7 */
                          "key = file:empty.key\n"       /* 8 */
                          "key = file:spaced.key\n"      /* 9 */
                          "key = env:1BAD\n"             /* 10 */
                          "key = file:\n");              /* 11 */
    cfg = load("gw.conf", &errs);
    assert_null(cfg);
    assert_string_equal(errs,
        "gw.conf:3: upstream.key: expected env:NAME or file:PATH naming a set environment "
        "variable, got \"env:GW_TEST_UNSET\" (not set)\n"
        "gw.conf:4: upstream.key: expected env:NAME or file:PATH naming a readable file, "
        "got \"file:nope.key\" (No such file or directory)\n"
        "gw.conf:5: upstream.key: expected env:NAME or file:PATH (the key itself never goes "
        "in the config), got 20 characters of neither form (not shown)\n"
        "gw.conf:6: upstream.key: expected env:NAME or file:PATH holding a key of visible "
        "ASCII on one line, got \"env:GW_TEST_NL\" (spaces or control characters)\n"
        "gw.conf:7: upstream.key: expected env:NAME or file:PATH holding a key, "
        "got \"env:GW_TEST_EMPTY\" (empty)\n"
        "gw.conf:8: upstream.key: expected env:NAME or file:PATH holding a key, "
        "got \"file:empty.key\" (empty)\n"
        "gw.conf:9: upstream.key: expected env:NAME or file:PATH holding a key of visible "
        "ASCII on one line, got \"file:spaced.key\" (spaces or control characters)\n"
        "gw.conf:10: upstream.key: expected env:NAME or file:PATH with NAME of A-Za-z0-9_, "
        "got \"env:1BAD\"\n"
        "gw.conf:11: upstream.key: expected env:NAME or file:PATH naming a readable file, "
        "got \"file:\" (empty path)\n");
    assert_null(strstr(errs, "SECRETPART"));
    free(errs);
    unsetenv("GW_TEST_NL");
    unsetenv("GW_TEST_EMPTY");
}

static void test_secret_values(void **state)
{
    struct gw_config *cfg;
    char text[512];

    (void)state;
    write_file("up.key", "sk-from-file\r\n\n");
    write_file("abs.key", "sk-absolute");
    setenv("GW_TEST_KEY2", "sk-env-2", 1);
    /* repeatable, kept in order, also across a reopened [upstream] */
    snprintf(text, sizeof(text), "[upstream]\nurl = http://up.test\nkey = env:GW_TEST_KEY\n"
             "key = file:up.key\n[server]\n[upstream]\nkey = env:GW_TEST_KEY2\n"
             "key = file:%s/abs.key\n", test_dir);
    cfg = load_ok(text);
    assert_int_equal(cfg->nupstream_keys, 4);
    assert_string_equal(cfg->upstream_keys[0], "sk-test-123");
    assert_string_equal(cfg->upstream_keys[1], "sk-from-file");
    assert_string_equal(cfg->upstream_keys[2], "sk-env-2");
    assert_string_equal(cfg->upstream_keys[3], "sk-absolute");
    gw_config_free(cfg);
    unsetenv("GW_TEST_KEY2");
}

/* ------------------------------------------------------------------------------------------ */
/* Models, aliases, team keys                                                                 */

static void test_models_and_aliases(void **state)
{
    struct gw_config *cfg;
    const struct gw_catalog *cat;

    (void)state;
    cfg = load_ok(MIN_CONF
                  "[aliases]\n"
                  "early = late\n"           /* a forward reference is fine */
                  "same = same\n"            /* an alias may carry a model's own name */
                  "[model late]\n"
                  "family = components\n"
                  "[model same]\n"
                  "family = FIRST\n"
                  "seconds = 8\n"
                  "sizes = 720x1280 , 1280x720\n"
                  "[model a.b_c/d:e+f-g]\n"
                  "family = frames\n");
    cat = &cfg->catalog;
    assert_int_equal(cat->nmodels, 3);
    assert_string_equal(cat->models[0].name, "late");
    assert_int_equal(cat->models[0].family, GW_FAMILY_COMPONENTS);
    assert_int_equal(cat->models[0].max_images, 3);
    assert_int_equal(cat->models[0].nseconds, 0);
    assert_int_equal(cat->models[0].nsizes, 0);
    assert_int_equal(cat->models[1].family, GW_FAMILY_FIRST);
    assert_int_equal(cat->models[1].max_images, 1);
    assert_int_equal(cat->models[1].nseconds, 1);
    assert_int_equal(cat->models[1].nsizes, 2);
    assert_string_equal(cat->models[1].sizes[0], "720x1280");
    assert_string_equal(cat->models[1].sizes[1], "1280x720");
    assert_int_equal(cat->models[2].max_images, 2);
    assert_int_equal(cat->naliases, 2);
    assert_ptr_equal(cat->aliases[0].to, &cat->models[0]);
    assert_ptr_equal(cat->aliases[1].to, &cat->models[1]);
    gw_config_free(cfg);
}

static void test_model_and_alias_errors(void **state)
{
    (void)state;
    expect_errors(MIN_CONF
                  "[aliases]\n"               /* 4 */
                  "foo = nomodel\n"           /* 5 */
                  "foo = m\n"                 /* 6 */
                  "bad name = m\n"            /* 7 */
                  "ok = not a model\n"        /* 8 */
                  "[model m]\n"               /* 9 */
                  "family = frames\n"         /* 10 */
                  "family = first\n"          /* 11 */
                  "seconds = 4,08\n"          /* 12 */
                  "sizes = 16x9,0x9\n"        /* 13 */
                  "[model m]\n"               /* 14 */
                  "family = first\n"          /* 15: ignored */
                  "[model bad name]\n"        /* 16 */
                  "[model n]\n"               /* 17 */
                  "family = fourth\n"         /* 18 */
                  "seconds = 1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17\n" /* 19 */
                  "sizes = \n"                /* 20 */
                  "seconds = 3601\n",         /* 21 */
                  "gw.conf:6: aliases.foo: expected a single value (first set at gw.conf:5), "
                  "got \"m\"\n"
                  "gw.conf:7: aliases.bad name: expected an alias name of 1..128 characters "
                  "A-Za-z0-9._/+-, got \"bad name\"\n"
                  "gw.conf:8: aliases.ok: expected a model name of 1..128 characters "
                  "A-Za-z0-9._:/+-, got \"not a model\"\n"
                  "gw.conf:11: model m.family: expected a single value (first set at "
                  "gw.conf:10), got \"first\"\n"
                  "gw.conf:12: model m.seconds: expected a comma list of at most 16 integers "
                  "1..3600, got \"4,08\"\n"
                  "gw.conf:13: model m.sizes: expected a comma list of at most 16 WIDTHxHEIGHT "
                  "sizes, got \"16x9,0x9\"\n"
                  "gw.conf:14: model: expected a name not declared before (first at "
                  "gw.conf:9), got \"m\"\n"
                  "gw.conf:16: model: expected a name of 1..128 characters A-Za-z0-9._:/+-, "
                  "got \"bad name\"\n"
                  "gw.conf:18: model n.family: expected one of first|frames|components, "
                  "got \"fourth\"\n"
                  "gw.conf:19: model n.seconds: expected a comma list of at most 16 integers "
                  "1..3600, got \"1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17\"\n"
                  "gw.conf:20: model n.sizes: expected a comma list of at most 16 WIDTHxHEIGHT "
                  "sizes, got \"\"\n"
                  "gw.conf:21: model n.seconds: expected a single value (first set at "
                  "gw.conf:19), got \"3601\"\n"
                  "gw.conf:5: aliases.foo: expected a model declared with [model NAME], "
                  "got \"nomodel\"\n");
}

#define HASH_A "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"

static void test_team_keys(void **state)
{
    struct gw_config *cfg;

    (void)state;
    cfg = load_ok(MIN_CONF "[key team-a]\nsha256 = " HASH_A "\n"
                  "[key B_2.x]\nsha256 = 9F86D081884C7D659A2FEAA0C55AD015A3BF4F1B2B0B822CD15D6C15"
                  "B0F00A08\n");
    assert_int_equal(cfg->nkeys, 2);
    assert_string_equal(cfg->keys[0].name, "team-a");
    assert_int_equal(cfg->keys[0].sha256[0], 0x9f);
    assert_int_equal(cfg->keys[0].sha256[1], 0x86);
    assert_int_equal(cfg->keys[0].sha256[31], 0x08);
    assert_string_equal(cfg->keys[1].name, "B_2.x");
    assert_memory_equal(cfg->keys[0].sha256, cfg->keys[1].sha256, 32);
    gw_config_free(cfg);

    /* a 64-character name, longer than inih's 49-byte section buffer */
    cfg = load_ok(MIN_CONF "[key 0123456789012345678901234567890123456789012345678901234567"
                  "890123]\nsha256 = " HASH_A "\n");
    assert_int_equal(strlen(cfg->keys[0].name), 64);
    gw_config_free(cfg);
}

static void test_team_key_errors(void **state)
{
    (void)state;
    expect_errors(MIN_CONF
                  "[key a]\n"                                  /* 4 */
                  "sha256 = " HASH_A "\n"                      /* 5 */
                  "[key a]\n"                                  /* 6 */
                  "sha256 = " HASH_A "\n"                      /* 7: ignored */
                  "[key b]\n"                                  /* 8 */
                  "sha256 = sk-MYTEAMKEY\n"                    /* 9 */
                  "[key c]\n"                                  /* 10 */
                  "sha256 = 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a0g\n"
                  "sha256 = " HASH_A "\n"                      /* 12 */
                  "[key d]\n"                                  /* 13: no sha256 */
                  "[key bad/name]\n"                           /* 14 */
                  "[key 01234567890123456789012345678901234567890123456789012345678901234]\n",
                  "gw.conf:6: key: expected a name not declared before (first at gw.conf:4), "
                  "got \"a\"\n"
                  "gw.conf:9: key b.sha256: expected 64 hex digits (the SHA-256 of the key, "
                  "never the key), got 12 characters (not shown)\n"
                  "gw.conf:11: key c.sha256: expected 64 hex digits (the SHA-256 of the key, "
                  "never the key), got 64 characters (not shown)\n"
                  "gw.conf:12: key c.sha256: expected a single value (first set at gw.conf:11), "
                  "got another (not shown)\n"
                  "gw.conf:14: key: expected a name of 1..64 characters A-Za-z0-9._-, "
                  "got \"bad/name\"\n"
                  "gw.conf:15: key: expected a name of 1..64 characters A-Za-z0-9._-, "
                  "got \"0123456789012345678901234567890123456789012345678901234567890123"
                  "4\"\n"
                  "gw.conf:13: key d.sha256: expected 64 hex digits (the SHA-256 of the key, "
                  "never the key), got nothing\n");
}

/* ------------------------------------------------------------------------------------------ */
/* upstream.url and TLS files                                                                 */

static void test_url_parsing(void **state)
{
    static const struct {
        const char *url;
        int tls;
        const char *host;
        int port;
        const char *base;
    } cases[] = {
        { "http://up.test", 0, "up.test", 80, "" },
        { "https://up.test", 1, "up.test", 443, "" },
        { "HTTPS://Up.Test/", 1, "Up.Test", 443, "" },
        { "http://10.0.0.1:8080", 0, "10.0.0.1", 8080, "" },
        { "https://api.example.com:8443/base/v1/", 1, "api.example.com", 8443, "/base/v1" },
        { "https://api.example.com/v1//", 1, "api.example.com", 443, "/v1" },
        { "https://[::1]:9443/x", 1, "::1", 9443, "/x" },
        { "http://[2001:db8::7]", 0, "2001:db8::7", 80, "" },
        { "http://[fe80::1%eth0]:81", 0, "fe80::1%eth0", 81, "" },
    };

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char text[256];
        struct gw_config *cfg;

        snprintf(text, sizeof(text), "[upstream]\nurl = %s\nkey = env:GW_TEST_KEY\n",
                 cases[i].url);
        cfg = load_ok(text);
        assert_string_equal(cfg->upstream_url, cases[i].url);
        assert_int_equal(cfg->upstream_tls, cases[i].tls);
        assert_string_equal(cfg->upstream_host, cases[i].host);
        assert_int_equal(cfg->upstream_port, cases[i].port);
        assert_string_equal(cfg->upstream_base, cases[i].base);
        gw_config_free(cfg);
    }
}

static void test_url_errors(void **state)
{
    static const struct {
        const char *url;
        const char *why;
    } cases[] = {
        { "ftp://up.test", "scheme http or https" },
        { "up.test:80", "scheme http or https" },
        { "", "scheme http or https" },
        { "http://", "a host name, IPv4 or [IPv6] address, PORT 1..65535" },
        { "http:///v1", "a host name, IPv4 or [IPv6] address, PORT 1..65535" },
        { "http://up.test:", "a host name, IPv4 or [IPv6] address, PORT 1..65535" },
        { "http://up.test:0", "a host name, IPv4 or [IPv6] address, PORT 1..65535" },
        { "http://up.test:65536", "a host name, IPv4 or [IPv6] address, PORT 1..65535" },
        { "http://up.test:80x", "a host name, IPv4 or [IPv6] address, PORT 1..65535" },
        { "http://[::1", "a host name, IPv4 or [IPv6] address, PORT 1..65535" },
        { "http://[::1]x", "a host name, IPv4 or [IPv6] address, PORT 1..65535" },
        { "http://::1/", "a host name, IPv4 or [IPv6] address, PORT 1..65535" },
        { "http://up_test!/", "a host name, IPv4 or [IPv6] address, PORT 1..65535" },
        { "http://user:pw@up.test", "no user info, query or fragment" },
        { "http://up.test/v1?x=1", "no user info, query or fragment" },
        { "http://up.test/#frag", "no user info, query or fragment" },
        { "http://up.test/a b", "BASE without spaces or control characters" },
    };

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char text[256], want[512];

        snprintf(text, sizeof(text), "[upstream]\nkey = env:GW_TEST_KEY\nurl = %s\n",
                 cases[i].url);
        snprintf(want, sizeof(want), "gw.conf:3: upstream.url: expected "
                 "http(s)://HOST[:PORT][/BASE] (%s), got \"%s\"\n", cases[i].why, cases[i].url);
        expect_errors(text, want);
    }
}

static void test_tls_pair(void **state)
{
    struct gw_config *cfg;

    (void)state;
    write_file("cert.pem", "c\n");
    write_file("key.pem", "k\n");
    expect_errors(MIN_CONF "[server]\ntls_cert = cert.pem\n",
                  "gw.conf:5: server.tls_key: expected a file path (tls_cert and tls_key go "
                  "together), got nothing\n");
    expect_errors(MIN_CONF "[server]\ntls_key = key.pem\n",
                  "gw.conf:5: server.tls_cert: expected a file path (tls_cert and tls_key go "
                  "together), got nothing\n");
    /* an unreadable file is reported, and still counts as given for the pair check */
    expect_errors(MIN_CONF "[server]\ntls_cert = missing.pem\n",
                  "gw.conf:5: server.tls_cert: expected a readable file, got \"missing.pem\" "
                  "(No such file or directory)\n"
                  "gw.conf:5: server.tls_key: expected a file path (tls_cert and tls_key go "
                  "together), got nothing\n");
    cfg = load_ok(MIN_CONF "[server]\ntls_key = key.pem\ntls_cert = cert.pem\n");
    assert_string_equal(cfg->tls_cert, "cert.pem");
    assert_string_equal(cfg->tls_key, "key.pem");
    gw_config_free(cfg);
}

/* ------------------------------------------------------------------------------------------ */
/* The shipped files                                                                          */

static void test_example_config(void **state)
{
    struct gw_config *cfg;
    const struct gw_catalog *cat;
    char *errs = NULL;

    (void)state;
    setenv("VIDEO_UPSTREAM_KEY", "sk-example", 1);
    cfg = load(GW_SOURCE_DIR "/gateway.conf.example", &errs);
    assert_string_equal(errs, "");
    assert_non_null(cfg);
    assert_string_equal(cfg->listen.host, "127.0.0.1");
    assert_int_equal(cfg->listen.port, 8080);
    assert_int_equal(cfg->upstream_tls, 1);
    assert_string_equal(cfg->upstream_host, "video.example.com");
    assert_int_equal(cfg->nupstream_keys, 1);
    assert_string_equal(cfg->upstream_keys[0], "sk-example");
    assert_int_equal(cfg->nkeys, 1);
    assert_string_equal(cfg->keys[0].name, "demo");
    cat = &cfg->catalog;
    assert_int_equal(cat->allow_unknown, 0);
    assert_int_equal(cat->nmodels, 25);
    assert_int_equal(cat->naliases, 5);
    for (unsigned i = 0; i < cat->nmodels; i++) {
        assert_int_equal(cat->models[i].nseconds, 3);
        assert_int_equal(cat->models[i].nsizes, 4);
    }
    gw_config_free(cfg);
    free(errs);

    /* Without the variable, the error names the reference. */
    unsetenv("VIDEO_UPSTREAM_KEY");
    cfg = load(GW_SOURCE_DIR "/gateway.conf.example", &errs);
    assert_null(cfg);
    assert_non_null(strstr(errs, "upstream.key: expected env:NAME or file:PATH naming a set "
                                 "environment variable, got \"env:VIDEO_UPSTREAM_KEY\" "
                                 "(not set)\n"));
    free(errs);
}

/* models.conf alone is clean: the only errors are the [upstream] it does not have. */
static void test_models_conf_alone(void **state)
{
    char *errs = NULL;

    (void)state;
    assert_null(load(GW_SOURCE_DIR "/config/models.conf", &errs));
    assert_string_equal(errs,
                        GW_SOURCE_DIR "/config/models.conf: upstream.url: expected "
                        "http(s)://HOST[:PORT][/BASE], got nothing\n"
                        GW_SOURCE_DIR "/config/models.conf: upstream.key: expected env:NAME or "
                        "file:PATH, got nothing\n");
    free(errs);
}

/* Fail each allocation of a full load in turn: always NULL, "out of memory" once, no
 * leak (the sanitizer build checks that), no crash. */
static void test_failing_allocations(void **state)
{
    struct gw_config *cfg;
    long total;

    (void)state;
    setenv("VIDEO_UPSTREAM_KEY", "sk-example", 1);
    gw_config_test_fail_alloc(-1);
    cfg = gw_config_load(GW_SOURCE_DIR "/gateway.conf.example", NULL);
    total = gw_config_test_fail_alloc(-1);
    assert_non_null(cfg);
    gw_config_free(cfg);
    assert_true(total > 100);
    for (long n = 0; n < total; n++) {
        char *errs = NULL, *oom;

        gw_config_test_fail_alloc(n);
        cfg = load(GW_SOURCE_DIR "/gateway.conf.example", &errs);
        assert_null(cfg);
        oom = strstr(errs, "out of memory\n");
        assert_non_null(oom);
        assert_null(strstr(oom + 1, "out of memory\n"));
        free(errs);
    }
    gw_config_test_fail_alloc(-1);
    unsetenv("VIDEO_UPSTREAM_KEY");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_defaults, setup, teardown),
        cmocka_unit_test_setup_teardown(test_good_values, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bool_spellings, setup, teardown),
        cmocka_unit_test_setup_teardown(test_size_and_duration_units, setup, teardown),
        cmocka_unit_test_setup_teardown(test_syntax_conveniences, setup, teardown),
        cmocka_unit_test_setup_teardown(test_relative_paths, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_values, setup, teardown),
        cmocka_unit_test_setup_teardown(test_multiple_errors_reported_together, setup, teardown),
        cmocka_unit_test_setup_teardown(test_limits_store_admin, setup, teardown),
        cmocka_unit_test_setup_teardown(test_limits_bad_values, setup, teardown),
        cmocka_unit_test_setup_teardown(test_store_redis, setup, teardown),
        cmocka_unit_test_setup_teardown(test_store_redis_bad_values, setup, teardown),
        cmocka_unit_test_setup_teardown(test_load_refs_resolves_no_secret, setup, teardown),
        cmocka_unit_test_setup_teardown(test_missing_required_without_sections, setup, teardown),
        cmocka_unit_test_setup_teardown(test_missing_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unknown_key_and_section, setup, teardown),
        cmocka_unit_test_setup_teardown(test_long_lines, setup, teardown),
        cmocka_unit_test_setup_teardown(test_include_relative_and_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_include_missing_and_depth, setup, teardown),
        cmocka_unit_test_setup_teardown(test_secret_values, setup, teardown),
        cmocka_unit_test_setup_teardown(test_secret_errors_never_show_values, setup, teardown),
        cmocka_unit_test_setup_teardown(test_models_and_aliases, setup, teardown),
        cmocka_unit_test_setup_teardown(test_model_and_alias_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_team_keys, setup, teardown),
        cmocka_unit_test_setup_teardown(test_team_key_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_url_parsing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_url_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tls_pair, setup, teardown),
        cmocka_unit_test_setup_teardown(test_example_config, setup, teardown),
        cmocka_unit_test_setup_teardown(test_models_conf_alone, setup, teardown),
        cmocka_unit_test_setup_teardown(test_failing_allocations, setup, teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
