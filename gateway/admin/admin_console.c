/*
 * admin_console.c - the console (gateway/admin/console/): GET /admin/ and the
 * files it loads, from the binary itself. No key is needed for these (the page
 * signs in from the browser, then calls the API with the key in a header); they
 * hold no data.
 *
 * Content-Security-Policy: scripts, styles and connections from this origin only,
 * nothing inline (uPlot's styles are its .css file; the bars' widths are set
 * through the CSSOM, which style-src does not cover), no framing, no forms posting
 * elsewhere, no referrer.
 */
#include <stdio.h>
#include <string.h>

#include "admin_console.h"
#include "admin_int.h"

#define CSP                                                                                  \
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "     \
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

static void header(evhtp_request_t *req, const char *name, const char *value)
{
    evhtp_headers_add_header(req->headers_out, evhtp_header_new(name, value, 0, 0));
}

int gw_admin_console(evhtp_request_t *req, const char *method, const char *path,
                     size_t *bytes)
{
    const struct gw_console_file *f = NULL;

    *bytes = 0;
    if (strcmp(path, "/admin") == 0) { /* the page's relative links need the slash */
        header(req, "Location", "/admin/");
        evhtp_send_reply(req, EVHTP_RES_MOVEDPERM);
        return 301;
    }
    for (size_t i = 0; i < gw_console_nfiles; i++) {
        if (strcmp(gw_console_files[i].path, path) == 0)
            f = &gw_console_files[i];
    }
    if (f == NULL || (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0))
        return 0;
    char ctype[64];
    snprintf(ctype, sizeof(ctype), "%s; charset=utf-8", f->ctype); /* all text */
    header(req, "Content-Type", ctype);
    header(req, "Content-Security-Policy", CSP);
    header(req, "X-Content-Type-Options", "nosniff");
    header(req, "X-Frame-Options", "DENY");
    header(req, "Referrer-Policy", "no-referrer");
    header(req, "Cache-Control", "no-cache");
    if (strcmp(method, "GET") == 0) {
        evbuffer_add_reference(req->buffer_out, f->data, f->len, NULL, NULL);
        *bytes = f->len;
    }
    evhtp_send_reply(req, EVHTP_RES_OK);
    return 200;
}
