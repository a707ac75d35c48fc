/*
 * admin_jobs.c - GET /admin/jobs?key=&status=&limit=: the newest jobs across
 * keys (or of one key, of one status), for the console's "recent jobs" and for
 * a team lead asking "what did alice just run?". limit: 1..100, 20 by default.
 * The job object itself is not included (the ledger's columns are).
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "admin_int.h"

static void listed(void *arg, const struct gw_store_res *res)
{
    struct admin_req *a = arg;
    struct evbuffer *b = gw_admin_answer_buffer(a, res);

    if (b == NULL)
        return;
    evbuffer_add(b, "{\"object\":\"list\",\"data\":[", 25);
    for (size_t i = 0; i < res->njobs; i++) {
        const struct gw_job *j = &res->jobs[i];
        evbuffer_add(b, i ? ",{\"id\":" : "{\"id\":", i ? 7 : 6);
        gw_admin_json_str(b, j->id);
        evbuffer_add(b, ",\"key\":", 7);
        gw_admin_json_str(b, j->key_name);
        evbuffer_add(b, ",\"model\":", 9);
        gw_admin_json_str(b, j->model_sent);
        evbuffer_add(b, ",\"model_asked\":", 15);
        gw_admin_json_str(b, j->model_asked);
        evbuffer_add(b, ",\"size\":", 8);
        gw_admin_json_str(b, j->size);
        evbuffer_add_printf(b, ",\"kind\":\"%s\",\"status\":\"%s\",\"seconds\":%d,"
                               "\"created_at\":%" PRId64 ",\"updated_at\":%" PRId64
                               ",\"deleted\":%s,\"refunded\":%s}",
                            gw_job_kind_name(j->kind), gw_job_status_name(j->status),
                            j->seconds, j->created_at, j->updated_at,
                            j->deleted_at ? "true" : "false", j->refunded ? "true" : "false");
    }
    evbuffer_add(b, "]}", 2);
    gw_admin_send(a, 200, "application/json", b);
    evbuffer_free(b);
}

void gw_admin_jobs(struct admin_req *a, const char *method)
{
    const char *key = gw_admin_query(a, "key"), *status = gw_admin_query(a, "status");
    const char *limit = gw_admin_query(a, "limit");
    struct gw_jobs_recent_query q = { NULL, -1, 20 };
    struct gw_error err;

    a->route = "admin.jobs";
    if (strcmp(method, "GET") != 0) {
        gw_admin_fail(a, 405, "method_not_allowed", NULL,
                      "Method not allowed; this path accepts GET");
        return;
    }
    if (key != NULL && key[0] != '\0') {
        if (gw_store_key_name_ok(key) != GW_OK) {
            gw_admin_fail(a, 400, "invalid_value", "key",
                          "Invalid 'key': a key name is 1 to 64 characters of A-Z a-z 0-9 _ . -");
            return;
        }
        q.key_name = key;
    }
    if (status != NULL && status[0] != '\0') {
        enum gw_job_status st;
        if (gw_job_status_parse(status, strlen(status), &st) != GW_OK) {
            gw_admin_fail(a, 400, "invalid_value", "status",
                          "Invalid 'status': expected queued, in_progress, completed or failed");
            return;
        }
        q.status = (int)st;
    }
    if (limit != NULL) {
        char *end;
        long n = strtol(limit, &end, 10);
        if (end == limit || *end != '\0' || n < 1 || n > GW_STORE_JOBS_RECENT_MAX) {
            gw_admin_fail(a, 400, "invalid_value", "limit",
                          "Invalid 'limit': expected an integer from 1 to 100");
            return;
        }
        q.limit = (unsigned)n;
    }
    if (gw_store_jobs_recent(a->w->store, &q, listed, a, &a->op, &err) != GW_AGAIN)
        gw_admin_error(a, &err);
}
