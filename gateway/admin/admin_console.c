/*
 * admin_console.c - the console's files (GET /admin/ and what it loads). Not
 * yet: every path falls through to the API.
 */
#include "admin_int.h"

int gw_admin_console(evhtp_request_t *req, const char *method, const char *path)
{
    (void)req;
    (void)method;
    (void)path;
    return GW_ERR;
}
