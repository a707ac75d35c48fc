/*
 * uptls.c - TLS to the upstream: the client context (one for all threads),
 * the session kept per upstream for resumption, each connection's SSL (SNI,
 * the name to verify, the session to resume), and what OpenSSL says when a
 * handshake fails. uptls_io.c runs the handshake and the I/O on the socket.
 */
#include <stdio.h>

#include <openssl/err.h>
#include <openssl/x509v3.h>

#include "upstream_int.h"

/* Bytes the SSL reads from the socket at once (read-ahead): four full records
 * per read() where the default reads a record header, then its body. Freed
 * while the connection has nothing buffered (SSL_MODE_RELEASE_BUFFERS): an idle
 * pooled connection keeps no buffers. */
#define UP_TLS_READ_BUF (4 * (16384 + 256))

/* ------------------------------------------------------------- the context */

/* New session (TLS 1.2 handshake, or a TLS 1.3 ticket arriving after it): keep
 * the latest per upstream. The SSL's app data is its upstream; that upstream
 * is alive, since the SSL belongs to one of its connections. */
static int tls_new_session(SSL *ssl, SSL_SESSION *sess)
{
    struct gw_upstream *u = SSL_get_app_data(ssl);

    if (u == NULL)
        return 0;
    SSL_SESSION_free(u->session);
    u->session = sess;
    return 1; /* we keep the reference */
}

static const char *tls_reason(unsigned long e)
{
    const char *r = e ? ERR_reason_error_string(e) : NULL;

    return r ? r : "unknown error";
}

/* tls_reason(), or for an error without a reason string its full code. */
void gw_uptls_error_string(unsigned long e, char *buf, size_t cap)
{
    if (e != 0 && ERR_reason_error_string(e) == NULL)
        ERR_error_string_n(e, buf, cap);
    else
        snprintf(buf, cap, "%s", tls_reason(e));
}

int gw_upstream_tls_ctx(const struct gw_config *cfg, SSL_CTX **out, struct gw_error *err)
{
    static const unsigned char alpn[] = "\x08http/1.1";
    SSL_CTX *ctx = NULL;
    int rc = GW_ERR;

    *out = NULL;
    if (!cfg->upstream_tls)
        return GW_OK;
    ERR_clear_error();
    ctx = SSL_CTX_new(TLS_client_method());
    if (ctx == NULL) {
        gw_error_set(err, 500, "server_error", "tls_setup", NULL,
                     "cannot create the upstream TLS context: %s", tls_reason(ERR_get_error()));
        goto out;
    }
    if (SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1) {
        gw_error_set(err, 500, "server_error", "tls_setup", NULL,
                     "cannot require TLS 1.2 upstream: %s", tls_reason(ERR_get_error()));
        goto out;
    }
    /* A close without close_notify is an EOF (SSL_ERROR_ZERO_RETURN) like
     * any other: the response framing detects a truncated body, as nginx
     * and curl do. */
    SSL_CTX_set_options(ctx, SSL_OP_IGNORE_UNEXPECTED_EOF | SSL_OP_NO_COMPRESSION |
                                 SSL_OP_NO_RENEGOTIATION);
    /* uptls_io.c's writes never block (the BIO appends to an evbuffer), but a
     * partial write stays harmless if that changes; buffers only while used. */
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                              SSL_MODE_RELEASE_BUFFERS);
    SSL_CTX_set_read_ahead(ctx, 1);
    SSL_CTX_set_default_read_buffer_len(ctx, UP_TLS_READ_BUF);
    if (cfg->tls_verify) {
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
        if (cfg->ca_file != NULL) {
            if (SSL_CTX_load_verify_locations(ctx, cfg->ca_file, NULL) != 1) {
                gw_error_set(err, 500, "server_error", "tls_setup", NULL,
                             "cannot load upstream CA file %s: %s", cfg->ca_file,
                             tls_reason(ERR_get_error()));
                goto out;
            }
        } else if (SSL_CTX_set_default_verify_paths(ctx) != 1) {
            gw_error_set(err, 500, "server_error", "tls_setup", NULL,
                         "cannot load the system CA certificates: %s",
                         tls_reason(ERR_get_error()));
            goto out;
        }
    } else {
        SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
    }
    if (SSL_CTX_set_alpn_protos(ctx, alpn, sizeof(alpn) - 1) != 0) { /* 0 is success */
        gw_error_set(err, 500, "server_error", "tls_setup", NULL, "cannot set ALPN");
        goto out;
    }
    /* Sessions are kept per upstream (per thread) by tls_new_session, not in
     * the context's internal store, which would be shared between threads. */
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
    SSL_CTX_sess_set_new_cb(ctx, tls_new_session);
    *out = ctx;
    ctx = NULL;
    rc = GW_OK;
out:
    SSL_CTX_free(ctx);
    return rc;
}

/* ---------------------------------------------------------- per connection */

/* The SSL for a new connection of c->u (which has a TLS context): SNI, the
 * name the certificate must carry, the session to resume. The caller hands it
 * to uptls_io.c. NULL with c->why filled on failure. */
SSL *gw_uptls_ssl_new(struct gw_upconn *c)
{
    struct gw_upstream *u = c->u;
    SSL *ssl = SSL_new(u->ssl_ctx);

    if (ssl == NULL) {
        snprintf(c->why, sizeof(c->why), "cannot create a TLS session: %s",
                 tls_reason(ERR_get_error()));
        return NULL;
    }
    SSL_set_app_data(ssl, u);
    if (!u->host_is_ip) /* SNI carries host names only (RFC 6066 §3) */
        SSL_set_tlsext_host_name(ssl, u->host);
    if (u->cfg->tls_verify) {
        int ok;

        if (u->host_is_ip) {
            ok = X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), u->host);
        } else {
            SSL_set_hostflags(ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
            ok = SSL_set1_host(ssl, u->host);
        }
        if (ok != 1) {
            snprintf(c->why, sizeof(c->why), "cannot set the name to verify");
            SSL_free(ssl);
            return NULL;
        }
    }
    if (u->session != NULL)
        SSL_set_session(ssl, u->session);
    return ssl;
}

/* The handshake on ssl failed: what OpenSSL says about it. GW_ERR: the
 * certificate or the handshake failed, msg says how ("certificate verify
 * failed: ...", "TLS handshake failed: ..."). GW_OK: the socket failed
 * (refused, reset) or closed, and *e is its errno (0 for a close) as the caller
 * found it, or as OpenSSL recorded it. Empties the thread's OpenSSL errors. */
int gw_uptls_why_failed(SSL *ssl, int *e, char *msg, size_t cap)
{
    long vr = SSL_get_verify_result(ssl);
    unsigned long first = 0, got;

    while ((got = ERR_get_error()) != 0) {
        if (first == 0 && ERR_GET_LIB(got) != ERR_LIB_SYS)
            first = got;
        else if (*e == 0 && ERR_GET_LIB(got) == ERR_LIB_SYS && ERR_GET_REASON(got))
            *e = ERR_GET_REASON(got);
    }
    if (vr != X509_V_OK) {
        snprintf(msg, cap, "certificate verify failed: %s", X509_verify_cert_error_string(vr));
        return GW_ERR;
    }
    if (first != 0) {
        char why[128];

        gw_uptls_error_string(first, why, sizeof(why));
        snprintf(msg, cap, "TLS handshake failed: %s", why);
        return GW_ERR;
    }
    return GW_OK;
}
