/*
 * uptls_io.c - TLS to the upstream over the same plain-socket machinery as
 * TCP (upconn.c): the handshake, decrypting into space reserved on an evbuffer,
 * encrypting the request into the bufferevent's output, and the liveness check
 * of a pooled connection. The context, the SSL of a connection and the
 * handshake's error message are uptls.c's.
 *
 * Why not bufferevent_openssl (what this replaced; docs/benchmarks.md, "HTTPS
 * upstream"): it reads one 16 KiB record per loop pass (two read() calls and an
 * epoll round each), copies plaintext through its own evbuffer, and writes
 * each record with its own write(). Here:
 *   - Reading: the SSL reads ahead into a UP_TLS_READ_BUF buffer (one read()
 *     takes several records), and SSL_read decrypts straight into the space
 *     upconn.c reserved on c->body (or the input, for a head or a chunked
 *     body), record after record until the socket has no more, the space is
 *     full, or the Content-Length is reached.
 *   - Writing: the SSL's BIO appends each record to the bufferevent's output,
 *     which upconn.c writes with one writev of up to UP_WRITE_MAX bytes, as it
 *     does over plain TCP; what the socket refuses waits on the bufferevent's
 *     write event and its write timeout, unchanged. One memcpy of ciphertext
 *     per record buys 16 records per system call.
 * The bufferevent itself only connects and, when the socket is full, writes
 * ciphertext: it never sees plaintext.
 *
 * The BIO never asks to retry a write (the output evbuffer takes everything):
 * SSL_write never wants to write, and upconn.c bounds what it encrypts ahead
 * of the socket (UP_WRITE_MAX). A read that wants to write (a TLS 1.3
 * KeyUpdate answer) leaves its record in the output; upconn.c flushes it.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <openssl/err.h>

#include "upstream_int.h"

/* ---------------------------------------------------------------- the BIO */

static BIO_METHOD *bio_method;
static pthread_once_t bio_once = PTHREAD_ONCE_INIT;

/* The BIO's data is its connection, whose bev and fd outlive the SSL
 * (conn_drop_bev frees the SSL first). */
static int bio_write(BIO *b, const char *data, int len)
{
    struct gw_upconn *c = BIO_get_data(b);

    BIO_clear_retry_flags(b);
    if (len <= 0)
        return 0;
    if (evbuffer_add(bufferevent_get_output(c->bev), data, (size_t)len) != 0)
        return -1; /* out of memory: SSL_ERROR_SYSCALL, the write fails */
    return len;
}

static int bio_read(BIO *b, char *data, int len)
{
    struct gw_upconn *c = BIO_get_data(b);
    ssize_t n;

    BIO_clear_retry_flags(b);
    if (len <= 0)
        return 0;
    do
        n = read(bufferevent_getfd(c->bev), data, (size_t)len);
    while (n < 0 && errno == EINTR);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        BIO_set_retry_read(b);
        return -1;
    }
    if (n < 0)
        c->tls_errno = errno;
    return (int)n; /* 0: EOF; < 0: an error, errno kept in c->tls_errno */
}

static int bio_puts(BIO *b, const char *s)
{
    return bio_write(b, s, (int)strlen(s));
}

static long bio_ctrl(BIO *b, int cmd, long num, void *ptr)
{
    (void)b;
    (void)num;
    (void)ptr;
    return cmd == BIO_CTRL_FLUSH || cmd == BIO_CTRL_DUP; /* nothing is held back */
}

static int bio_create(BIO *b)
{
    BIO_set_init(b, 1);
    return 1;
}

static void bio_method_make(void)
{
    BIO_METHOD *m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "gw-upconn");

    if (m == NULL)
        return;
    if (!BIO_meth_set_write(m, bio_write) || !BIO_meth_set_read(m, bio_read) ||
        !BIO_meth_set_puts(m, bio_puts) || !BIO_meth_set_ctrl(m, bio_ctrl) ||
        !BIO_meth_set_create(m, bio_create)) {
        BIO_meth_free(m);
        return;
    }
    bio_method = m;
}

int gw_uptls_io_attach(struct gw_upconn *c, SSL *ssl)
{
    BIO *b;

    pthread_once(&bio_once, bio_method_make);
    if (bio_method == NULL || (b = BIO_new(bio_method)) == NULL)
        return GW_ERR;
    BIO_set_data(b, c);
    SSL_set_bio(ssl, b, b); /* one reference, taken by the SSL */
    c->tls_end = 0;
    return GW_OK;
}

/* ------------------------------------------------------------- handshake */

int gw_uptls_io_handshake(struct gw_upconn *c, int *e, char *msg, size_t cap)
{
    int r, err;

    ERR_clear_error();
    c->tls_errno = 0;
    r = SSL_connect(c->ssl);
    if (r == 1)
        return GW_OK;
    err = SSL_get_error(c->ssl, r);
    if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE)
        return GW_AGAIN;
    *e = c->tls_errno;
    return gw_uptls_why_failed(c->ssl, e, msg, cap) == GW_ERR ? GW_ERR : GW_DONE;
}

/* ------------------------------------------------------------------ I/O */

ssize_t gw_uptls_io_read(struct gw_upconn *c, const struct iovec *iov, int nv)
{
    size_t total = 0, got;
    int i = 0, err;
    size_t off = 0;

    if (c->tls_end != 0) { /* met by the last read, after its bytes */
        if (c->tls_end > 0)
            return 0;
        errno = c->tls_end_errno;
        return -1;
    }
    while (i < nv) {
        if (off == iov[i].iov_len) {
            i++;
            off = 0;
            continue;
        }
        ERR_clear_error();
        c->tls_errno = 0;
        if (SSL_read_ex(c->ssl, (char *)iov[i].iov_base + off, iov[i].iov_len - off, &got)) {
            off += got;
            total += got;
            continue;
        }
        err = SSL_get_error(c->ssl, 0);
        if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) {
            if (total > 0)
                break;
            errno = EAGAIN;
            return -1;
        }
        /* The end: close_notify or a close without one (ZERO_RETURN), a reset
         * (SYSCALL) or a TLS error; c->why keeps the reason for the message of a
         * response cut short. After bytes of this call it is kept for the next
         * one: no read event would announce it (a close_notify was read off the
         * socket, and a peer that waits for ours keeps the TCP connection open). */
        if (err == SSL_ERROR_ZERO_RETURN) {
            c->tls_end = 1;
        } else {
            if (err == SSL_ERROR_SSL)
                gw_uptls_error_string(ERR_peek_error(), c->why, sizeof(c->why));
            else if (c->tls_errno != 0)
                snprintf(c->why, sizeof(c->why), "%s", strerror(c->tls_errno));
            ERR_clear_error();
            c->tls_end = -1;
            c->tls_end_errno = c->tls_errno ? c->tls_errno : EPROTO;
        }
        return total > 0 ? (ssize_t)total : gw_uptls_io_read(c, iov, nv);
    }
    return (ssize_t)total;
}

/* Records written by one SSL_write when the plaintext is not contiguous. */
#define TLS_STAGE 16384

int gw_uptls_io_encrypt(struct gw_upconn *c, size_t max)
{
    struct evbuffer *out = bufferevent_get_output(c->bev);
    char stage[TLS_STAGE];

    while (evbuffer_get_length(c->plain) > 0 && evbuffer_get_length(out) < max) {
        struct evbuffer_iovec v;
        const void *p;
        size_t len, done;

        if (evbuffer_peek(c->plain, -1, NULL, &v, 1) < 1)
            break;
        /* A chain of a full record or more is encrypted in place; smaller ones
         * (head fields, short body pieces) are gathered into one record. */
        if (v.iov_len >= TLS_STAGE || v.iov_len == evbuffer_get_length(c->plain)) {
            p = v.iov_base;
            len = v.iov_len < 4 * TLS_STAGE ? v.iov_len : 4 * TLS_STAGE;
        } else {
            len = evbuffer_copyout(c->plain, stage, sizeof(stage));
            p = stage;
        }
        ERR_clear_error();
        if (!SSL_write_ex(c->ssl, p, len, &done)) {
            ERR_clear_error();
            return GW_ERR;
        }
        evbuffer_drain(c->plain, done);
    }
    return GW_OK;
}

int gw_uptls_io_idle_alive(struct gw_upconn *c)
{
    char b;
    size_t got;
    int err;

    ERR_clear_error();
    if (SSL_peek_ex(c->ssl, &b, 1, &got))
        return 0; /* unsolicited data */
    err = SSL_get_error(c->ssl, 0);
    ERR_clear_error();
    /* WANT_READ: nothing but records without data (a TLS 1.3 session ticket) */
    return err == SSL_ERROR_WANT_READ;
}
