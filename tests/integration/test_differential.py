"""Differential test of the request edge (issue 5, "Make it systematic").

Every case is one request variant (whitespace around header names and values,
method case and unknown methods, request-target forms, Content-Length and
Transfer-Encoding combinations, chunk sizes, chunk extensions, trailers, bare
CR/LF, obs-fold, repeated Host/Content-Type/Authorization, HTTP/1.0 with and
without keep-alive, classic smuggling payloads) followed on the same connection
by a simple follow-up request (`GET /v1/videos?limit=1&diff=ID.f`, with the key
and `Connection: close`). A fixed list plus a seeded generator give the cases.

Each case goes to the reference (tests/integration/refserver.mjs: Node's `http`
server, llhttp strict, which answers every request it frames with a description
of it) and to the gateway in front of the stub upstream (which records every
request it receives with a hash of its body). Every request of case ID carries
`X-Diff-Case: ID` (the follow-up `ID.f`, a smuggled request `ID.s`), so the
upstream's records are attributed to cases even though cases run concurrently.

The property, per case:
  - where the reference frames the variant and the follow-up, the gateway either
    refuses the variant (one 4xx/5xx answer with an OpenAI error body, the
    follow-up never processed, the connection closed) or frames both exactly as
    the reference did: as many answers as requests, the same body bytes at the
    upstream, the follow-up at the upstream once;
  - where the reference frames k requests and then refuses the rest (or closes),
    the gateway processes at most those k (at least one when k is 0: a lenient
    gateway may take the variant) plus one refusal; in particular nothing the
    reference did not frame - a follow-up, a smuggled request - ever reaches the
    upstream (no smuggling);
  - the gateway always answers: a connection closed with no response at all is a
    failure, and every 4xx/5xx it sends carries an OpenAI error body;
  - whatever reached the upstream as the variant has the body the reference saw,
    a head the upstream can parse, and no field that was not in the client's
    head (a trailer promoted into the header section, a second Host);
  - the gateway stays up, and no sanitizer report appears in its log.
Three refinements, each a flag of the case: `legal` cases are valid HTTP/1.1 by
RFC 9112 and llhttp refuses a few of them (an HTAB after a Content-Length or
Transfer-Encoding value, BWS before a chunk extension's ';', some trailers,
duplicate equal Content-Lengths, CONNECT): for those the gateway may also frame
them as meant (the JSON body upstream, then the follow-up); `may_close` cases ask
for the connection to close after the variant, which the gateway may do where
Node keeps it open; `together` cases are unfinished without the follow-up's bytes.
Cases that the gateway frames although the reference refused them (allowed, as
long as nothing more is read) are listed as notes, not failures. Each failure is
one line per case (what the reference framed, what the gateway answered and what
reached the upstream, why it breaks the property), then the cases by kind.

How the bytes are sent: to the reference, variant and follow-up in one write
and then shutdown(SHUT_WR) (Node reports a message left unfinished at EOF as an
error, so nothing ever waits). To the gateway (`test_differential`), the variant
first, then the follow-up once the variant's answer has arrived (or the gateway
closed, or gave up at its 1 s client_timeout/header_timeout): this keeps the
framing defects apart from the pipelining stall of issue 5 defect 2, which
`test_differential_pipelined` covers with a subset of the cases sent in one
write. Cases run 16 at a time; when a batch kills the gateway or makes a
sanitizer report, the gateway is restarted and the batch replayed one case at a
time to find the culprit.

Run alone:
    GW_BIN=build/gateway GW_SOURCE_DIR=$PWD python3 tests/integration/test_differential.py
    (add a test name: test_differential or test_differential_pipelined;
     GW_DIFF_ONLY=substring runs only the cases whose id contains it;
     GW_DIFF_VERBOSE=1 prints every case)

What nginx 1.22 does with some of these, as read in its source (ngx_http_parse.c,
ngx_http_request.c) and not measured here: a lowercase method is 400, any other
method of capital letters is accepted; CONNECT is 405; an HTTP/1.1 request
without Host, a second Host or a second Content-Length is 400; Content-Length
with Transfer-Encoding is 400; Transfer-Encoding is chunked only when its value,
once nginx has dropped the spaces around it, is "chunked" in any case (so
`CHUNKED` and `chunked ` are chunked), any other value (`gzip, chunked`,
`identity`) is 501; a chunk size that overflows off_t is 400; chunk extensions
are skipped; trailers are read and dropped; a bare LF ends a line.
"""

import base64
import concurrent.futures
import hashlib
import json
import os
import random
import re
import shutil
import socket
import subprocess
import sys
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gwtest  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
REFSERVER = os.path.join(HERE, "refserver.mjs")

SEED = 0x5EED0005          # the generator's seed: the cases never change between runs
N_GENERATED = 200
BATCH = 16                 # cases in flight at once
CLIENT_TIMEOUT = "1s"      # the gateway gives up on an idle client (or a head) after this
T_FIRST = 4.0              # safety bounds; the gateway's client_timeout acts first
T_REST = 5.0
T_REF = 5.0
HOST = "gw.test"
VERBOSE = bool(os.environ.get("GW_DIFF_VERBOSE"))
ONLY = os.environ.get("GW_DIFF_ONLY", "")


# ---------------------------------------------------------------- building requests

class C:
    """What a case builds its bytes from: its id, the team key, the JSON body."""

    def __init__(self, cid, key):
        self.cid = cid
        self.key = key
        self.body = json.dumps({"model": "veo3", "prompt": "differential " + cid,
                                "seconds": "8", "size": "16x9"}, separators=(",", ":"))

    def target(self, method="POST"):
        if method == "POST":
            return "/v1/videos?diff=" + self.cid
        return "/v1/videos?limit=1&diff=" + self.cid

    def head(self, *extra, method="POST", target=None, version="HTTP/1.1", eol="\r\n",
             host=True, auth=True, ctype=None, mark=True, first=()):
        """Request line, the usual fields (Host, Authorization, Content-Type for a
        POST, X-Diff-Case), then `extra`, then the empty line. `first` goes right
        after the request line."""
        if ctype is None:
            ctype = method.upper() == "POST"
        lines = ["%s %s %s" % (method, self.target(method.upper()) if target is None else target,
                               version)] if version is not None else \
            ["%s %s" % (method, self.target(method.upper()) if target is None else target)]
        lines += list(first)
        if host:
            lines.append("Host: " + HOST if host is True else host)
        if auth:
            lines.append("Authorization: Bearer " + self.key if auth is True else auth)
        if ctype:
            lines.append("Content-Type: application/json" if ctype is True else ctype)
        if mark:
            lines.append("X-Diff-Case: " + self.cid)
        lines += list(extra)
        return eol.join(lines) + eol + eol

    def cl(self, *extra, body=None, **kw):
        """A create framed by an exact Content-Length (then the `extra` fields)."""
        body = self.body if body is None else body
        return self.head("Content-Length: %d" % len(body), *extra, **kw) + body

    def get(self, *extra, **kw):
        kw.setdefault("method", "GET")
        return self.head(*extra, **kw)

    def chunks(self, pieces=(20,), fmt="%x", first=None, ext="", last="0", trailers=(),
               eol="\r\n", data_eol="\r\n", end=True, body=None):
        """The body as chunks: leading chunks of the lengths in `pieces`, the rest
        in one more; `first` replaces the first size text; `ext` follows every
        size (a list: one per chunk); then the last chunk, trailers, end line."""
        body = self.body if body is None else body
        lens, pos = [], 0
        for n in pieces:
            if pos + n < len(body):
                lens.append(n)
                pos += n
        lens.append(len(body) - pos)
        out, pos = [], 0
        for i, n in enumerate(lens):
            size = first if (i == 0 and first is not None) else fmt % n
            e = ext[i % len(ext)] if isinstance(ext, (list, tuple)) else ext
            out.append(size + e + eol + body[pos:pos + n] + data_eol)
            pos += n
        out.append(last + eol)
        for t in trailers:
            out.append(t + eol)
        if end:
            out.append(eol)
        return "".join(out)

    def te(self, *extra, te="chunked", **chunk_kw):
        return self.head("Transfer-Encoding: " + te, *extra) + self.chunks(**chunk_kw)

    def req(self, suffix, extra=""):
        """A complete GET with marker ID+suffix (a follow-up or a smuggled request)."""
        m = self.cid + suffix
        return ("GET /v1/videos?limit=1&diff=%s HTTP/1.1\r\nHost: %s\r\n"
                "Authorization: Bearer %s\r\nX-Diff-Case: %s\r\n%s\r\n"
                % (m, HOST, self.key, m, extra))

    def follow(self):
        return self.req(".f", "Connection: close\r\n")

    def smuggled(self):
        return self.req(".s")


class Case:
    """legal: the bytes are a valid HTTP/1.1 message as RFC 9112 reads it (the JSON
    body, then the follow-up); may_close: the variant asks for the connection to
    close after it; together: the variant is unfinished without the follow-up's
    bytes (they are sent to the gateway in the same write, as to the reference)."""

    def __init__(self, cid, desc, build, legal=False, may_close=False, together=False):
        self.cid = cid
        self.desc = desc
        self.build = build
        self.legal = legal
        self.may_close = may_close
        self.together = together

    def variant(self, key):
        return self.build(C(self.cid, key)).encode("latin-1")

    def follow(self, key):
        return C(self.cid, key).follow().encode("latin-1")

    def is_head(self, key):
        return self.variant(key)[:5].upper() == b"HEAD "


CASES = []

# Fixed cases whose bytes are valid HTTP/1.1 (RFC 9112) with the intended framing:
# where llhttp refuses one of them, the gateway may frame it as meant.
LEGAL = {
    "base.cl", "base.chunked", "base.get", "base.get-cl0", "base.post-cl0", "base.expect",
    "ws.cl-nospace", "ws.cl-tab", "ws.cl-2sp",
    "ws.cl-trail-sp", "ws.cl-trail-tab", "ws.cl-both", "ws.host-tab", "ws.ct-tab",
    "ws.ct-nospace", "ws.auth-tab", "ws.auth-trail", "ws.value-only-ws", "t.lead-crlf",
    "cl.zeros", "cl.name-upper", "cl.name-lower", "te.chunked", "te.upper", "te.mixed", "te.tab",
    "te.sp-tab", "te.trail-sp", "te.trail-tab", "te.name-upper", "cs.zeros", "cs.many-zeros",
    "cs.upper", "cs.lower", "cs.one-byte", "cs.last-00", "ext.simple", "ext.noval", "ext.quoted",
    "ext.quoted-semi", "ext.multi", "ext.bws-before", "ext.bws-after", "ext.long", "ext.tab",
    "ext.on-last", "tr.one", "tr.several", "tr.xff", "tr.ct", "tr.cl", "tr.te", "tr.host",
    "tr.auth", "tr.empty-value", "tr.many", "ch.obs-text", "h10.create-ka", "h10.create-ka-case",
    "h10.get-ka",
    # methods are tokens (RFC 9110 section 9.1): llhttp knows a fixed list, a server
    # answers an unknown one 501 and may go on with the connection
    "m.foo", "m.foo-nobody", "m.long", "m.underscore",
    # RFC 9110 section 8.6: identical Content-Length values may be taken as one
    "cl.dup-equal", "cl.list-equal",
    # RFC 9110 section 9.3.6: after a non-2xx answer to CONNECT the connection stays
    # HTTP (the reference does not tunnel and closes instead)
    "t.authority-connect",
}
# Fixed cases that are unfinished without the follow-up's bytes.
TOGETHER = {"tr.no-end", "cs.max"}
# Fixed cases whose variant asks for the connection to be closed after it.
MAY_CLOSE = {"base.conn-close", "base.conn-list-close", "h10.create-close", "h10.get-close",
             "h10.ka-close"}


def case(cid, desc, build, legal=False, may_close=False):
    assert all(ch.isalnum() or ch in ".-" for ch in cid), cid
    assert cid not in {c.cid for c in CASES} and not cid.endswith((".f", ".s")), cid
    CASES.append(Case(cid, desc, build, legal or cid in LEGAL, may_close or cid in MAY_CLOSE,
                      cid in TOGETHER))


# ---------------------------------------------------------------- the fixed cases

def with_cl(fmt):
    """A create whose framing field line(s) are `fmt % len(body)` (a list: several)."""
    return lambda c: c.head(*[f % len(c.body) if "%" in f else f for f in
                              ([fmt] if isinstance(fmt, str) else fmt)]) + c.body


def with_te(*fields, **chunk_kw):
    """A create with these field lines and the body in chunks (c.chunks(**chunk_kw))."""
    return lambda c: c.head(*fields) + c.chunks(**chunk_kw)


def get_at(fmt, **kw):
    """A GET whose target is fmt formatted with {cid} and {host}."""
    return lambda c: c.get(target=fmt.format(cid=c.cid, host=HOST), **kw)


def with_body(method):
    """METHOD /v1/videos with the create body (Content-Length)."""
    return lambda c: c.cl(method=method, target="/v1/videos?diff=" + c.cid)


def cl_over(*fields, inner):
    """Fields (each may hold %d: the body length) over a body of inner(c)."""
    def build(c):
        b = inner(c)
        return c.head(*[f % len(b) if "%" in f else f for f in fields]) + b
    return build


def fixed_cases():
    # baselines
    case("base.cl", "create, Content-Length", lambda c: c.cl())
    case("base.chunked", "create, chunked in 3 chunks", lambda c: c.te(pieces=(7, 30)))
    case("base.get", "GET list", lambda c: c.get())
    case("base.get-cl0", "GET list with Content-Length: 0", lambda c: c.get("Content-Length: 0"))
    case("base.post-cl0", "create with Content-Length: 0 (empty body)", lambda c: c.cl(body=""))
    case("base.expect", "create with Expect: 100-continue",
         lambda c: c.cl("Expect: 100-continue"))
    case("base.conn-close", "create with Connection: close",
         lambda c: c.cl("Connection: close"))
    case("base.conn-list-close", "Connection: keep-alive, close",
         lambda c: c.cl("Connection: keep-alive, close"))

    # whitespace around field names and values
    case("ws.cl-nospace", "Content-Length:N", with_cl("Content-Length:%d"))
    case("ws.cl-tab", "Content-Length:<HT>N", with_cl("Content-Length:\t%d"))
    case("ws.cl-2sp", "Content-Length:<SP><SP>N", with_cl("Content-Length:  %d"))
    case("ws.cl-trail-sp", "Content-Length: N<SP>", with_cl("Content-Length: %d "))
    case("ws.cl-trail-tab", "Content-Length: N<HT>", with_cl("Content-Length: %d\t"))
    case("ws.cl-both", "Content-Length:<SP><HT>N<HT><SP>", with_cl("Content-Length: \t%d\t "))
    case("ws.cl-name-sp", "Content-Length<SP>: N", with_cl("Content-Length : %d"))
    case("ws.cl-name-tab", "Content-Length<HT>: N", with_cl("Content-Length\t: %d"))
    case("ws.cl-line-sp", "<SP>Content-Length: N as the first field line",
         lambda c: c.head(first=(" Content-Length: %d" % len(c.body),)) + c.body)
    case("ws.host-name-sp", "Host<SP>: gw.test", lambda c: c.cl(host="Host : " + HOST))
    case("ws.host-tab", "Host:<HT>gw.test<HT>", lambda c: c.cl(host="Host:\t%s\t" % HOST))
    case("ws.ct-tab", "Content-Type:<HT>application/json<HT>",
         lambda c: c.cl(ctype="Content-Type:\tapplication/json\t"))
    case("ws.ct-nospace", "Content-Type:application/json",
         lambda c: c.cl(ctype="Content-Type:application/json"))
    case("ws.auth-tab", "Authorization:<HT>Bearer KEY",
         lambda c: c.cl(auth="Authorization:\tBearer " + c.key))
    case("ws.auth-trail", "Authorization: Bearer KEY<SP><HT>",
         lambda c: c.cl(auth="Authorization: Bearer %s \t" % c.key))
    case("ws.auth-2sp", "Authorization: Bearer<SP><SP>KEY",
         lambda c: c.cl(auth="Authorization: Bearer  " + c.key))
    case("ws.empty-name", "a field line ': x'", lambda c: c.cl(": x"))
    case("ws.name-inner-sp", "'Content Length: N'", with_cl("Content Length: %d"))
    case("ws.value-only-ws", "X-Empty:<SP><HT>", lambda c: c.cl("X-Empty: \t"))

    # methods
    case("m.post-lower", "post (lowercase)", lambda c: c.cl(method="post"))
    case("m.post-mixed", "Post (mixed case)", lambda c: c.cl(method="Post"))
    case("m.get-lower", "get (lowercase)", lambda c: c.get(method="get"))
    case("m.put", "PUT /v1/videos with a body", with_body("PUT"))
    case("m.patch", "PATCH /v1/videos with a body", with_body("PATCH"))
    case("m.delete-coll", "DELETE /v1/videos", lambda c: c.get(method="DELETE"))
    case("m.options", "OPTIONS /v1/videos", lambda c: c.get(method="OPTIONS"))
    case("m.head", "HEAD /v1/videos", lambda c: c.get(method="HEAD"))
    case("m.trace", "TRACE /v1/videos", lambda c: c.get(method="TRACE"))
    case("m.foo", "FOO (unknown) with a body", with_body("FOO"))
    case("m.foo-nobody", "FOO (unknown), no body", lambda c: c.get(method="FOO"))
    case("m.purge", "PURGE with a body", with_body("PURGE"))
    case("m.query", "QUERY with a body", with_body("QUERY"))
    case("m.propfind", "PROPFIND", lambda c: c.get(method="PROPFIND"))
    case("m.link", "LINK", lambda c: c.get(method="LINK"))
    case("m.long", "a 40-letter method", lambda c: c.get(method="X" * 40))
    case("m.underscore", "GET_X", lambda c: c.get(method="GET_X"))
    case("m.get-body-cl", "GET list with a Content-Length body",
         lambda c: c.get("Content-Length: 5") + "hello")
    case("m.get-body-chunked", "GET list with a chunked body",
         lambda c: c.get("Transfer-Encoding: chunked") + c.chunks(body="hello"))
    case("m.delete-body", "DELETE /v1/videos/ID with a body",
         lambda c: c.get("Content-Length: 5", method="DELETE",
                         target="/v1/videos/video_nope?diff=" + c.cid) + "hello")
    case("m.pri", "PRI * HTTP/2.0", lambda c: c.get(method="PRI", target="*", version="HTTP/2.0"))

    # request-target forms
    case("t.abs-get", "absolute-form GET", get_at("http://{host}/v1/videos?limit=1&diff={cid}"))
    case("t.abs-post", "absolute-form create",
         lambda c: c.cl(target="http://%s/v1/videos?diff=%s" % (HOST, c.cid)))
    case("t.abs-https", "absolute-form https",
         get_at("https://{host}/v1/videos?limit=1&diff={cid}"))
    case("t.abs-upper", "absolute-form HTTP://GW.TEST",
         get_at("HTTP://GW.TEST/v1/videos?limit=1&diff={cid}"))
    case("t.abs-port", "absolute-form with :80",
         get_at("http://{host}:80/v1/videos?limit=1&diff={cid}"))
    case("t.abs-userinfo", "absolute-form with userinfo",
         get_at("http://u:p@{host}/v1/videos?limit=1&diff={cid}"))
    case("t.abs-other-host", "absolute-form naming another host than Host",
         get_at("http://evil.test/v1/videos?limit=1&diff={cid}"))
    case("t.star-options", "OPTIONS *", lambda c: c.get(method="OPTIONS", target="*"))
    case("t.star-get", "GET *", lambda c: c.get(target="*"))
    case("t.authority-get", "GET gw.test:443", lambda c: c.get(target=HOST + ":443"))
    case("t.authority-connect", "CONNECT gw.test:443",
         lambda c: c.get(method="CONNECT", target=HOST + ":443"))
    case("t.query-only", "GET ?limit=1", get_at("?limit=1&diff={cid}"))
    case("t.double-slash", "GET //v1/videos", get_at("//v1/videos?limit=1&diff={cid}"))
    case("t.dotdot", "GET /v1/../v1/videos", get_at("/v1/../v1/videos?limit=1&diff={cid}"))
    case("t.pct", "GET /v1/%76ideos", get_at("/v1/%76ideos?limit=1&diff={cid}"))
    case("t.fragment", "target with #fragment", get_at("/v1/videos?limit=1&diff={cid}#frag"))
    case("t.2sp", "two SP after the method", get_at(" /v1/videos?limit=1&diff={cid}"))
    case("t.tab-sep", "HT between method and target",
         lambda c: c.get().replace("GET ", "GET\t", 1))
    case("t.sp-in-target", "a SP inside the target", get_at("/v1/videos?limit=1&diff={cid} x"))
    case("t.version-trail-sp", "HTTP/1.1<SP> at the end of the request line",
         lambda c: c.get(version="HTTP/1.1 "))
    case("t.http12", "HTTP/1.2", lambda c: c.get(version="HTTP/1.2"))
    case("t.http20", "HTTP/2.0", lambda c: c.get(version="HTTP/2.0"))
    case("t.http09", "no HTTP version (0.9 style)", lambda c: c.get(version=None))
    case("t.http-lower", "http/1.1", lambda c: c.get(version="http/1.1"))
    case("t.http-011", "HTTP/01.1", lambda c: c.get(version="HTTP/01.1"))
    case("t.lead-crlf", "an empty line before the request line", lambda c: "\r\n" + c.cl())
    case("t.lead-lf", "a bare LF before the request line", lambda c: "\n" + c.cl())
    case("t.long-target", "a 6000-byte query",
         get_at("/v1/videos?limit=1&diff={cid}&pad=" + "p" * 6000))

    # Content-Length / Transfer-Encoding
    chunks = lambda c: c.chunks()  # noqa: E731
    case("clte.cl-te", "Content-Length then Transfer-Encoding: chunked",
         cl_over("Content-Length: %d", "Transfer-Encoding: chunked", inner=chunks))
    case("clte.te-cl", "Transfer-Encoding: chunked then Content-Length",
         cl_over("Transfer-Encoding: chunked", "Content-Length: %d", inner=chunks))
    case("clte.cl-te-identity", "Content-Length and Transfer-Encoding: identity",
         lambda c: c.cl("Transfer-Encoding: identity"))
    case("cl.dup-equal", "two equal Content-Length lines",
         with_cl(["Content-Length: %d", "Content-Length: %d"]))
    case("cl.dup-diff", "Content-Length N then N+5",
         lambda c: c.head("Content-Length: %d" % len(c.body),
                          "Content-Length: %d" % (len(c.body) + 5)) + c.body + "XXXXX")
    case("cl.dup-diff-rev", "Content-Length N+5 then N",
         lambda c: c.head("Content-Length: %d" % (len(c.body) + 5),
                          "Content-Length: %d" % len(c.body)) + c.body + "XXXXX")
    case("cl.list-equal", "Content-Length: N, N",
         lambda c: c.head("Content-Length: %d, %d" % (len(c.body), len(c.body))) + c.body)
    case("cl.list-diff", "Content-Length: N, N+5",
         lambda c: c.head("Content-Length: %d, %d" % (len(c.body), len(c.body) + 5))
         + c.body + "XXXXX")
    case("cl.plus", "Content-Length: +N", with_cl("Content-Length: +%d"))
    case("cl.neg", "Content-Length: -1", with_cl("Content-Length: -1"))
    case("cl.hex", "Content-Length: 0xNN", lambda c: c.head("Content-Length: 0x%x" % len(c.body))
         + c.body)
    case("cl.zeros", "Content-Length: 000N", with_cl("Content-Length: 000%d"))
    case("cl.empty", "Content-Length: (empty)", with_cl("Content-Length: "))
    case("cl.huge", "Content-Length: 99999999999999999999",
         with_cl("Content-Length: 99999999999999999999"))
    case("cl.inner-sp", "Content-Length: 1 2", with_cl("Content-Length: 1 2"))
    case("cl.trailing-junk", "Content-Length N, then 2 stray bytes before the follow-up",
         lambda c: c.cl() + "XX")
    case("cl.name-upper", "CONTENT-LENGTH: N", with_cl("CONTENT-LENGTH: %d"))
    case("cl.name-lower", "content-length: N", with_cl("content-length: %d"))
    for cid, te in (("te.chunked", " chunked"), ("te.upper", " CHUNKED"), ("te.mixed", " Chunked"),
                    ("te.tab", "\tchunked"), ("te.sp-tab", " \tchunked"),
                    ("te.trail-sp", " chunked "), ("te.trail-tab", " chunked\t"),
                    ("te.gzip-chunked", " gzip, chunked"), ("te.chunked-gzip", " chunked, gzip"),
                    ("te.identity", " identity"), ("te.chunked-chunked", " chunked, chunked"),
                    ("te.comma-after", " chunked,"), ("te.comma-before", " , chunked"),
                    ("te.quoted", ' "chunked"'), ("te.param", " chunked;q=1"), ("te.empty", " "),
                    ("te.vtab", " chunked\x0b"), ("te.nbsp", " \xa0chunked"),
                    ("te.x-chunked", " xchunked")):
        case(cid, "Transfer-Encoding:%r" % te, with_te("Transfer-Encoding:" + te))
    case("te.two-lines", "Transfer-Encoding: gzip + Transfer-Encoding: chunked",
         with_te("Transfer-Encoding: gzip", "Transfer-Encoding: chunked"))
    case("te.two-chunked", "Transfer-Encoding: chunked twice",
         with_te("Transfer-Encoding: chunked", "Transfer-Encoding: chunked"))
    case("te.name-upper", "TRANSFER-ENCODING: chunked", with_te("TRANSFER-ENCODING: chunked"))
    case("te.name-underscore", "Transfer_Encoding: chunked (not the field)",
         with_te("Transfer_Encoding: chunked"))
    case("te.http10", "HTTP/1.0 keep-alive with chunked",
         lambda c: c.head("Connection: keep-alive", "Transfer-Encoding: chunked",
                          version="HTTP/1.0") + c.chunks())

    # chunk sizes (the first chunk holds 5 bytes)
    for cid, size in (("cs.zeros", "0005"), ("cs.many-zeros", "0" * 20 + "5"),
                      ("cs.overflow", "10000000000000005"), ("cs.neg", "-1"), ("cs.0x", "0x5"),
                      ("cs.sp-after", "5 "), ("cs.sp-before", " 5"), ("cs.tab-after", "5\t"),
                      ("cs.plus", "+5"), ("cs.empty", ""), ("cs.nonhex", "5g"),
                      ("cs.too-small", "3"), ("cs.max", "ffffffffffffffff"),
                      ("cs.overflow-big", "1" + "0" * 31 + "5")):
        case(cid, "first chunk size %r for 5 bytes" % size,
             with_te("Transfer-Encoding: chunked", pieces=(5,), first=size))
    case("cs.upper", "uppercase hex sizes (2A)", lambda c: c.te(pieces=(42,), fmt="%X"))
    case("cs.lower", "lowercase hex sizes (2a)", lambda c: c.te(pieces=(42,), fmt="%x"))
    case("cs.one-byte", "one byte per chunk", lambda c: c.te(pieces=(1,) * 80))
    case("cs.last-00", "last chunk written 000", lambda c: c.te(last="000"))
    case("cs.too-big", "a size 0x40 larger than the data that follows",
         with_te("Transfer-Encoding: chunked", pieces=(5,), first="45"))
    case("cs.data-no-crlf", "chunk data not followed by CRLF",
         with_te("Transfer-Encoding: chunked", pieces=(5,), data_eol="XX"))

    # chunk extensions
    for cid, ext in (("ext.simple", ";foo=bar"), ("ext.noval", ";foo"),
                     ("ext.quoted", ';foo="bar"'), ("ext.quoted-semi", ';foo="b;a\\"r"'),
                     ("ext.multi", ";a=1;b=2"), ("ext.bws-before", " ;foo=bar"),
                     ("ext.bws-after", "; foo=bar"), ("ext.empty", ";"),
                     ("ext.long", ";x=" + "v" * 3000), ("ext.bad-char", ";foo=b@r"),
                     ("ext.quoted-crlf", ';foo="a\r\nb"'), ("ext.eq-only", ";="),
                     ("ext.tab", "\t;foo=bar")):
        case(cid, "chunk extension %r" % (ext[:20] + ("..." if len(ext) > 20 else "")),
             lambda c, ext=ext: c.te(pieces=(5,), ext=ext))
    case("ext.on-last", "extension on the last chunk", lambda c: c.te(last="0;foo=bar"))

    # trailers
    for cid, tr in (("tr.one", ("X-T: 1",)), ("tr.several", ("X-A: 1", "X-B: 2", "X-C: 3")),
                    ("tr.xff", ("X-Forwarded-For: 6.6.6.6",)),
                    ("tr.ct", ("Content-Type: text/plain",)), ("tr.cl", ("Content-Length: 5",)),
                    ("tr.te", ("Transfer-Encoding: chunked",)), ("tr.host", ("Host: evil.test",)),
                    ("tr.auth", ("Authorization: Bearer sk-other",)),
                    ("tr.malformed", ("no colon here",)), ("tr.fold", ("X-A: 1", " folded")),
                    ("tr.name-sp", ("X-A : 1",)), ("tr.empty-value", ("X-A:",)),
                    ("tr.many", tuple("X-T%d: %d" % (i, i) for i in range(20))),
                    ("tr.request-line", ("GET /v1/videos HTTP/1.1",))):
        case(cid, "trailers %r" % (tr[:3],), lambda c, tr=tr: c.te(trailers=tr))
    case("tr.bare-lf", "a trailer line ending in a bare LF",
         lambda c: c.head("Transfer-Encoding: chunked") + c.chunks(end=False) + "X-A: 1\n\r\n")
    case("tr.no-end", "no empty line after the last chunk (the follow-up reads as trailers)",
         with_te("Transfer-Encoding: chunked", end=False))

    # line endings
    case("le.lf-all", "bare LF everywhere in the head", lambda c: c.cl(eol="\n"))
    case("le.lf-one", "one field line ends in a bare LF", lambda c: c.cl("X-A: 1\nX-B: 2"))
    case("le.lf-end", "the head ends CRLF LF",
         lambda c: c.cl().replace("\r\n\r\n", "\r\n\n", 1))
    case("le.lf-request-line", "the request line ends in a bare LF",
         lambda c: c.cl().replace(" HTTP/1.1\r\n", " HTTP/1.1\n", 1))
    case("le.cr-end", "a field line ends in a bare CR", lambda c: c.cl("X-A: 1\rX-B: 2"))
    case("le.cr-value", "a bare CR inside a value", lambda c: c.cl("X-A: a\rb"))
    case("le.cr-request-line", "the request line ends in a bare CR",
         lambda c: c.cl().replace(" HTTP/1.1\r\n", " HTTP/1.1\r", 1))
    case("le.lf-chunk-size", "a chunk size line ending in a bare LF",
         lambda c: c.head("Transfer-Encoding: chunked") + "5\n" + c.body[:5] + "\r\n"
         + c.chunks(body=c.body[5:]))
    case("le.lf-chunk-data", "chunk data followed by a bare LF",
         with_te("Transfer-Encoding: chunked", pieces=(5,), data_eol="\n"))
    case("le.lf-last", "the last chunk and end line in bare LFs",
         lambda c: c.head("Transfer-Encoding: chunked")
         + c.chunks(pieces=(5,), end=False)[:-2] + "\n\n")
    case("le.cr-chunk-size", "a chunk size line ending in a bare CR",
         lambda c: c.head("Transfer-Encoding: chunked") + "5\r" + c.body[:5] + "\r\n"
         + c.chunks(body=c.body[5:]))

    # obs-fold
    case("fold.sp", "obs-fold (SP) in X-A", lambda c: c.cl("X-A: a", " b"))
    case("fold.tab", "obs-fold (HT) in X-A", lambda c: c.cl("X-A: a", "\tb"))
    case("fold.cl", "Content-Length value on a folded line",
         with_cl(["Content-Length:", " %d"]))
    case("fold.te", "Transfer-Encoding value on a folded line",
         with_te("Transfer-Encoding:", " chunked"))
    case("fold.te-after-x", "' Transfer-Encoding: chunked' folded under X-A, Content-Length",
         cl_over("X-A: a", " Transfer-Encoding: chunked", "Content-Length: %d", inner=chunks))
    case("fold.host", "Host value folded", lambda c: c.cl(host="Host: gw\r\n .test"))
    case("fold.auth", "Authorization folded",
         lambda c: c.cl(auth="Authorization: Bearer\r\n " + c.key))

    # repeated single-valued fields
    case("dup.host-same", "Host twice, same value", lambda c: c.cl("Host: " + HOST))
    case("dup.host-diff", "Host twice, other value", lambda c: c.cl("Host: evil.test"))
    case("dup.host-case", "host: and Host:", lambda c: c.cl("host: evil.test"))
    case("dup.host-missing", "HTTP/1.1 without Host", lambda c: c.cl(host=False))
    case("dup.host-empty", "Host: (empty)", lambda c: c.cl(host="Host:"))
    case("dup.host-missing-10", "HTTP/1.0 keep-alive without Host",
         lambda c: c.cl("Connection: keep-alive", host=False, version="HTTP/1.0"))
    case("dup.ct-same", "Content-Type twice, same",
         lambda c: c.cl("Content-Type: application/json"))
    case("dup.ct-diff", "Content-Type json then text/plain",
         lambda c: c.cl("Content-Type: text/plain"))
    case("dup.ct-multipart", "Content-Type json then multipart",
         lambda c: c.cl("Content-Type: multipart/form-data; boundary=xyz"))
    case("dup.ct-list", "Content-Type: application/json, text/plain",
         lambda c: c.cl(ctype="Content-Type: application/json, text/plain"))
    case("dup.auth-same", "Authorization twice, same key",
         lambda c: c.cl("Authorization: Bearer " + c.key))
    case("dup.auth-wrong-second", "Authorization: the key, then a wrong one",
         lambda c: c.cl("Authorization: Bearer sk-vgw-wrong"))
    case("dup.auth-wrong-first", "Authorization: a wrong one, then the key",
         lambda c: c.cl(auth="Authorization: Bearer sk-vgw-wrong",
                        first=("Authorization: Bearer " + c.key,)))

    # HTTP/1.0
    case("h10.create-close", "HTTP/1.0 create without keep-alive",
         lambda c: c.cl(version="HTTP/1.0"))
    case("h10.create-ka", "HTTP/1.0 create with Connection: keep-alive",
         lambda c: c.cl("Connection: keep-alive", version="HTTP/1.0"))
    case("h10.create-ka-case", "HTTP/1.0 create with Connection: Keep-Alive",
         lambda c: c.cl("Connection: Keep-Alive", version="HTTP/1.0"))
    case("h10.get-close", "HTTP/1.0 GET without keep-alive", lambda c: c.get(version="HTTP/1.0"))
    case("h10.get-ka", "HTTP/1.0 GET with keep-alive",
         lambda c: c.get("Connection: keep-alive", version="HTTP/1.0"))
    case("h10.ka-close", "HTTP/1.0 with Connection: keep-alive, close",
         lambda c: c.cl("Connection: keep-alive, close", version="HTTP/1.0"))

    # other field-value characters
    case("ch.nul", "NUL in a value", lambda c: c.cl("X-A: a\x00b"))
    case("ch.del", "DEL in a value", lambda c: c.cl("X-A: a\x7fb"))
    case("ch.obs-text", "obs-text (0xE9) in a value", lambda c: c.cl("X-A: caf\xe9"))
    case("ch.ctl-name", "a control character in a field name", lambda c: c.cl("X-\x01A: 1"))
    case("ch.nul-cl", "NUL after the Content-Length value", with_cl("Content-Length: %d\x00"))
    case("ch.esc", "ESC in a value", lambda c: c.cl("X-A: a\x1bb"))

    # classic smuggling payloads: the inner request is ID.s
    chunks_then_req = lambda c: c.chunks() + c.smuggled()  # noqa: E731
    case("smug.cl-te", "CL.TE: Content-Length covers '0 CRLF CRLF' + a request",
         cl_over("Content-Length: %d", "Transfer-Encoding: chunked", inner=chunks_then_req))
    case("smug.te-cl", "TE.CL: Content-Length: 4, chunked body hiding a request",
         cl_over("Content-Length: 4", "Transfer-Encoding: chunked",
                 inner=lambda c: "%x\r\n%s\r\n0\r\n\r\n" % (len(c.smuggled()), c.smuggled())))
    case("smug.te-te", "Transfer-Encoding: chunked + Transfer-Encoding: x, Content-Length",
         cl_over("Transfer-Encoding: chunked", "Transfer-Encoding: x", "Content-Length: %d",
                 inner=chunks_then_req))
    case("smug.te-upper-cl", "Transfer-Encoding: CHUNKED, a Content-Length covering a request",
         cl_over("Content-Length: %d", "Transfer-Encoding: CHUNKED", inner=chunks_then_req))
    case("smug.te-tab-noCL", "Transfer-Encoding:<HT>chunked, request after the last chunk",
         lambda c: c.head("Transfer-Encoding:\tchunked") + chunks_then_req(c))
    case("smug.cl0-body-request", "Content-Length: 0 followed by a request (pipelined)",
         lambda c: c.get("Content-Length: 0") + c.smuggled())
    case("smug.cl-dup-0", "Content-Length: 0 and Content-Length: N over a request",
         cl_over("Content-Length: 0", "Content-Length: %d", inner=lambda c: c.smuggled()))
    case("smug.overflow", "chunk size 10000000000000005 then 5 bytes and a request",
         lambda c: c.head("Transfer-Encoding: chunked")
         + "10000000000000005\r\nhello\r\n0\r\n\r\n" + c.smuggled())
    case("smug.trailer-request", "two trailers, the second a request line",
         lambda c: c.head("Transfer-Encoding: chunked") + c.chunks(end=False) + "X-A: 1\r\n"
         + c.smuggled())
    case("smug.lf-chunk", "chunk data of 5 with a bare LF, request inside the data",
         lambda c: c.head("Transfer-Encoding: chunked") + "5\nhello\r\n0\r\n\r\n" + c.smuggled())
    case("smug.ext-lf", "a chunk extension hiding a bare LF",
         lambda c: c.head("Transfer-Encoding: chunked") + "5;a=b\nhello\r\n0\r\n\r\n"
         + c.smuggled())


# ---------------------------------------------------------------- the generator

def generated_cases():
    """N_GENERATED cases from a seeded generator: legal variations (field-name case,
    OWS, order, extra fields, chunking, extensions, trailers) and, for about a third
    of them, one hostile mutation."""
    rng = random.Random(SEED)
    ows_before = ["", " ", "  ", "\t", " \t"]
    ows_after = ["", "", " ", "\t", " \t"]
    exts = [";a=b", ";a", ';a="b c"', ";a=1;b=2", ';x="y\\"z"', ";n=" + "v" * 40]
    trailers = ["X-T: 1", "X-Trailer-Two: a b", "Server-Timing: x;dur=1", "X-Empty:", "Expires: 0"]
    extras = ["Accept: */*", "User-Agent: difftest/1", "Connection: keep-alive",
              "X-Request-Tag: abc", "Accept-Encoding: gzip", "Cache-Control: no-cache"]
    mutations = ["cl-dup-equal", "cl-te", "te-value", "cs-value", "bare-lf", "bare-cr", "fold",
                 "dup-host", "dup-ct", "dup-auth", "lower-method", "http10", "http10-ka",
                 "version-sp", "nul", "name-sp", "cl-plus", "te-then-junk", "trailer-bad",
                 "ext-bws"]
    te_values = ["CHUNKED", "\tchunked", " \tchunked", "chunked ", "gzip, chunked",
                 "chunked, gzip", "identity", "Chunked", "chunked\t"]
    cs_values = ["10000000000000005", "-1", "0x5", "5 ", " 5", "+5", "5\t", "00000005",
                 "fffffffffffffffff5"]

    def rcase(name):
        return "".join(ch.upper() if rng.random() < 0.5 else ch.lower() for ch in name) \
            if rng.random() < 0.3 else rng.choice([name, name.lower(), name.upper(), name])

    for i in range(N_GENERATED):
        chunked = rng.random() < 0.55
        mutation = rng.choice(mutations) if rng.random() < 0.35 else None
        names = {k: rcase(k) for k in ("Host", "Authorization", "Content-Type", "X-Diff-Case",
                                        "Content-Length", "Transfer-Encoding")}
        ows = {k: (rng.choice(ows_before), rng.choice(ows_after)) for k in names}
        if mutation is not None:    # llhttp refuses an HTAB after these values (RFC allows it)
            for k in ("Content-Length", "Transfer-Encoding"):
                ows[k] = (ows[k][0], ows[k][1].replace("\t", ""))
        extra = rng.sample(extras, rng.randint(0, 3))
        order = rng.random()
        pieces = tuple(rng.randint(1, 30) for _ in range(rng.randint(0, 5)))
        fmt = rng.choice(["%x", "%X", "%02x", "%04X", "%x"])
        ext = [rng.choice(exts) if rng.random() < 0.3 else "" for _ in range(len(pieces) + 1)]
        last = rng.choice(["0", "0", "00", "0;end=1"])
        trs = tuple(rng.sample(trailers, rng.choice([0, 0, 1, 2, 3])))
        te_v = rng.choice(te_values)
        cs_v = rng.choice(cs_values)
        dup_ct = rng.choice(["application/json", "text/plain", "multipart/form-data; boundary=q"])
        framing_desc = {"cl-dup-equal": "CL twice", "cl-plus": "CL +N", "cl-te": "CL and TE",
                        "te-value": "TE %r" % te_v, "cs-value": "chunked, first size %r" % cs_v,
                        "trailer-bad": "chunked", "ext-bws": "chunked"}.get(mutation)
        chunked_now = (framing_desc or "").startswith("chunked") or (chunked and not framing_desc)
        desc_bits = [framing_desc or ("chunked" if chunked else "CL"),
                     "pieces=%s" % (pieces,) if chunked_now and mutation != "cs-value" else "",
                     "trailers=%d" % len(trs) if chunked_now and trs else "",
                     "ext" if chunked_now and any(ext) and mutation != "cs-value" else "",
                     "mutation=%s" % mutation if mutation else ""]
        desc = "generated: " + " ".join(b for b in desc_bits if b)

        def build(c, chunked=chunked, mutation=mutation, names=names, ows=ows, extra=extra,
                  order=order, pieces=pieces, fmt=fmt, ext=ext, last=last, trs=trs, te_v=te_v,
                  cs_v=cs_v, dup_ct=dup_ct):
            def f(k, v):
                b, a = ows[k]
                return "%s:%s%s%s" % (names[k], b if b else "", v, a)
            body_chunks = c.chunks(pieces=pieces, fmt=fmt, ext=ext, last=last, trailers=trs)
            fields = [f("Host", HOST), f("Authorization", "Bearer " + c.key),
                      f("Content-Type", "application/json"), f("X-Diff-Case", c.cid)]
            if chunked:
                framing = [f("Transfer-Encoding", "chunked")]
                payload = body_chunks
            else:
                framing = [f("Content-Length", str(len(c.body)))]
                payload = c.body
            method, version, eol = "POST", "HTTP/1.1", "\r\n"
            if mutation == "cl-dup-equal":
                framing = [f("Content-Length", str(len(c.body)))] * 2
                payload = c.body
            elif mutation == "cl-te":
                framing = [f("Content-Length", str(len(body_chunks))),
                           f("Transfer-Encoding", "chunked")]
                if order < 0.5:
                    framing.reverse()
                payload = body_chunks
            elif mutation == "te-value":
                framing = ["%s: %s" % (names["Transfer-Encoding"], te_v) if te_v[:1] not in " \t"
                           else "%s:%s" % (names["Transfer-Encoding"], te_v)]
                payload = body_chunks
            elif mutation == "cs-value":
                framing = [f("Transfer-Encoding", "chunked")]
                payload = c.chunks(pieces=(5,), first=cs_v, trailers=trs)
            elif mutation == "bare-lf":
                eol = "\n" if order < 0.3 else eol
                if order >= 0.3:
                    extra = list(extra) + ["X-Lf: 1\nX-Lf2: 2"]
            elif mutation == "bare-cr":
                extra = list(extra) + ["X-Cr: 1\rX-Cr2: 2"]
            elif mutation == "fold":
                extra = list(extra) + ["X-Folded: a", "\tfolded" if order < 0.5 else " folded"]
            elif mutation == "dup-host":
                fields.append(f("Host", HOST if order < 0.5 else "evil.test"))
            elif mutation == "dup-ct":
                fields.append(f("Content-Type", dup_ct))
            elif mutation == "dup-auth":
                fields.append(f("Authorization",
                                "Bearer " + (c.key if order < 0.5 else "sk-vgw-wrong")))
            elif mutation == "lower-method":
                method = "post" if order < 0.7 else "pOST"
            elif mutation == "http10":
                version = "HTTP/1.0"
            elif mutation == "http10-ka":
                version = "HTTP/1.0"
                extra = list(extra) + ["Connection: keep-alive"]
            elif mutation == "version-sp":
                version = "HTTP/1.1 "
            elif mutation == "nul":
                extra = list(extra) + ["X-Nul: a\x00b"]
            elif mutation == "name-sp":
                framing = [framing[0].replace(":", " :", 1)]
            elif mutation == "cl-plus":
                framing = ["%s: +%d" % (names["Content-Length"], len(c.body))]
                payload = c.body
            elif mutation == "te-then-junk":
                payload = payload + "ZZ"
            elif mutation == "trailer-bad":
                framing = [f("Transfer-Encoding", "chunked")]
                payload = c.chunks(pieces=pieces, fmt=fmt, trailers=trs + ("bad trailer line",))
            elif mutation == "ext-bws":     # BWS around ';' and '=' (RFC 9112 7.1.1)
                framing = [f("Transfer-Encoding", "chunked")]
                payload = c.chunks(pieces=pieces, fmt=fmt, ext=" ; a = b")
            lines = fields + framing + list(extra)
            # a deterministic order: rotate by `order`
            k = int(order * len(lines))
            lines = lines[k:] + lines[:k]
            start = "%s %s %s" % (method, c.target(), version)
            return eol.join([start] + lines) + eol + eol + payload

        case("gen.%03d" % i, desc, build, legal=mutation in (None, "cl-dup-equal", "ext-bws"),
             may_close=mutation in ("http10",))


fixed_cases()
N_FIXED = len(CASES)
generated_cases()

# Cases also sent pipelined (variant + follow-up in one write) by
# test_differential_pipelined: ones the reference frames, one or two per family,
# and the first legal generated ones.
PIPELINED = ["base.cl", "base.chunked", "base.get", "base.expect", "ws.cl-nospace", "ws.cl-tab",
             "ws.cl-trail-sp", "m.put", "m.head", "m.delete-coll", "m.get-body-cl",
             "t.abs-get", "t.star-options", "cl.zeros", "te.upper", "te.tab", "te.trail-sp",
             "te.gzip-chunked", "cs.zeros", "cs.upper", "cs.one-byte", "ext.simple",
             "ext.quoted-semi", "ext.on-last", "tr.one", "tr.several", "tr.xff", "tr.many",
             "dup.ct-diff", "dup.auth-same", "h10.create-ka", "h10.get-ka", "te.http10"] + \
    [c.cid for c in CASES[N_FIXED:] if c.legal][:6]


# ---------------------------------------------------------------- the processes

class RefServer:
    """node refserver.mjs as a subprocess (stdout to a file: READY line, JSON lines)."""

    def __init__(self):
        self.node = shutil.which("node")
        if self.node is None:
            raise gwtest.Skip("node is not installed (needed for the reference server)")
        self.dir = gwtest.shared_tmpdir("gwtest-ref-")
        self.out_path = os.path.join(self.dir, "refserver.out")
        self.out = open(self.out_path, "wb")
        self.proc = subprocess.Popen([self.node, REFSERVER, "0"], stdout=self.out,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.port = gwtest.wait_for(self._ready, 15, what="the reference server's READY line")

    def _ready(self):
        if self.proc.poll() is not None:
            raise RuntimeError("refserver exited with %s: %s"
                               % (self.proc.returncode, self.log()[-2000:]))
        first = self.log().split("\n", 1)[0]
        if first.startswith("READY ") and "\n" in self.log():
            return int(first.split()[1])
        return 0

    def log(self):
        with open(self.out_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def stop(self):
        gwtest.terminate(self.proc)
        self.out.close()


class Edge:
    """The stub, the gateway (restarted when a case kills it) and the reference."""

    def __init__(self):
        self.stub = gwtest.shared_stub()
        self.ref = RefServer()
        gwtest.at_exit(self.ref.stop)
        self.key = None
        self.gw = None
        self.dead_logs = []     # logs of gateways that a case killed
        self.start_gateway()
        gwtest.at_exit(self._stop_gateway)
        self.seq = 0

    def start_gateway(self):
        gw = gwtest.Gateway(self.stub, client_timeout=CLIENT_TIMEOUT,
                            header_timeout=CLIENT_TIMEOUT, threads=2)
        if self.key is None:
            self.key = gw.keys["default"]
        gw.keys = {"default": self.key}     # the same key across restarts: same bytes
        self.gw = gw.start()

    def restart_gateway(self):
        old = self.gw
        try:
            old.stop()
        except AssertionError:
            pass
        self.dead_logs.append(old.log())
        old.__exit__(None, None, None)
        self.start_gateway()

    def _stop_gateway(self):
        if self.gw is not None:
            try:
                self.gw.__exit__(None, None, None)
            except AssertionError:
                pass

    def new_upstream_records(self):
        recs = self.stub.requests(since=self.seq)
        if recs:
            self.seq = max(r["seq"] for r in recs)
        return recs


_EDGE = []


def edge():
    if not _EDGE:
        _EDGE.append(Edge())
    return _EDGE[0]


# ---------------------------------------------------------------- running one case

def marker_of_url(url):
    q = urllib.parse.urlsplit(url).query if "?" in url else ""
    vals = urllib.parse.parse_qs(q).get("diff")
    return vals[0] if vals else None


def marker_of_headers(pairs):
    for k, v in pairs:
        if k.lower() == "x-diff-case":
            return v.strip()
    return None


def run_ref(port, data, head_first):
    """Send everything, half-close, read to EOF ->
    {"records": [what it framed, in order], "error": dict|None, "garbage": bytes}"""
    with gwtest.RawConn(port) as c:
        try:
            c.send(data)
            c.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        buf = c.read_until_close(T_REF)
    resps, left = gwtest.split_responses(buf, head_first)
    out = {"records": [], "error": None, "garbage": left}
    for r in resps:
        st, h, body, _ = gwtest.parse_response(r, head_request=head_first and not out["records"])
        blob = h.get("x-ref-record")
        try:
            obj = json.loads(base64.b64decode(blob) if blob else body)
        except ValueError:
            obj = {"ref": "error", "code": "UNEXPECTED", "reason": "%d %r" % (st, body[:60])}
        if obj.get("ref") == "request":
            obj["raw_body"] = base64.b64decode(obj["body"])
            hdrs = obj["headers"]
            obj["marker"] = marker_of_url(obj["url"]) or \
                marker_of_headers(list(zip(hdrs[0::2], hdrs[1::2])))
            out["records"].append(obj)
        else:
            out["error"] = obj
    return out


def run_gw(port, variant, follow, head_first, pipelined):
    """-> {"resps": [(status, headers, body)], "garbage": bytes, "closed": bool,
    "sent_follow": bool}"""
    out = {"resps": [], "garbage": b"", "closed": False, "sent_follow": False}
    buf = b""
    try:
        c = gwtest.RawConn(port)
    except OSError as e:        # the gateway is down (a case of this batch killed it)
        out["garbage"] = ("connect: %s" % e).encode()
        out["closed"] = True
        return out
    with c:
        try:
            c.send(variant + follow if pipelined else variant)
            out["sent_follow"] = pipelined
        except OSError:
            pass
        if not pipelined:
            first = c.read_response(T_FIRST, head_request=head_first)
            buf += first
            done, _ = gwtest.split_responses(first, head_first)
            if done and not c.eof:
                try:
                    c.send(follow)
                    out["sent_follow"] = True
                except OSError:
                    pass
        buf += c.read_until_close(T_REST)
        out["closed"] = c.eof
    resps, out["garbage"] = gwtest.split_responses(buf, head_first)
    for i, r in enumerate(resps):
        st, h, body, _ = gwtest.parse_response(r, head_request=head_first and i == 0)
        out["resps"].append((st, h, body))
    return out


# fields the gateway writes into the upstream request itself
ADDED_UPSTREAM = {"host", "authorization", "x-request-id", "traceparent", "content-length",
                  "transfer-encoding"}


def head_fields(data):
    """{(lower-case name, value without OWS)} of the field lines of a request head."""
    end = data.find(b"\r\n\r\n")
    head = data[:end if end >= 0 else len(data)].decode("latin-1")
    out = set()
    for line in re.split(r"\r?\n", head)[1:]:
        k, sep, val = line.partition(":")
        if sep:
            out.add((k.strip(" \t").lower(), val.strip(" \t")))
    return out


def redact(text):
    """text without the values of Authorization fields (keys)."""
    return re.sub(r"(?i)(authorization:[ \t]*)[^\r\n]*", r"\1<redacted>", text)


def openai_error(body):
    try:
        return gwtest.error_body(body)
    except AssertionError:
        return None


# ---------------------------------------------------------------- the property

KEY_SHOWN = "KEY"     # the team key as failure messages show it


class Verdict:
    def __init__(self, case):
        self.case = case
        self.problems = []      # (kind, text)
        self.notes = []
        self.ref_summary = ""
        self.gw_summary = ""

    def bad(self, kind, text):
        self.problems.append((kind, text))

    def line(self):
        head = ""
        if self.case.cid.startswith("gen."):
            data = self.case.variant(KEY_SHOWN)
            end = data.find(b"\r\n\r\n")
            head = "\n      head: %r" % data[:end + 4 if end >= 0 else 300][:400]
        return "%-22s %s%s\n      ref: %s\n      gw:  %s\n      => %s" % (
            self.case.cid, self.case.desc[:90], head, self.ref_summary, self.gw_summary,
            "; ".join(t for _, t in self.problems))


def role(cid, marker, default):
    return {cid: "variant", cid + ".f": "follow-up", cid + ".s": "inner ID.s"}.get(marker, default)


def describe_ref(ref, cid):
    parts = []
    for r in ref["records"]:
        who = role(cid, r["marker"], "?")
        parts.append("%s %s%s (%d B)" % (who, r["method"], " " + r["url"][:60] if who != "follow-up"
                                          else "", len(r["raw_body"])))
    if ref["error"]:
        e = ref["error"]
        parts.append("refused %s (%s)" % (e.get("code"), e.get("reason", "")[:50]))
    if ref["garbage"]:
        parts.append("unparsed %r" % ref["garbage"][:40])
    return ", then ".join(parts) if parts else "nothing (closed)"


def describe_gw(g, ups, cid):
    parts = []
    for st, h, body in g["resps"]:
        e = openai_error(body) if st >= 400 else None
        parts.append("%d%s" % (st, " " + str(e["code"]) if e else ""))
    s = ", ".join(parts) if parts else "no answer"
    if g["garbage"]:
        s += ", unparsable %r" % g["garbage"][:40]
    s += ", closed" if g["closed"] else ", left open"
    if not g["sent_follow"]:
        s += " (follow-up not sent)"
    u = []
    for m, recs in sorted(ups.items()):
        who = role(cid, m, m)
        for r in recs:
            size = " %d B" % r["body_size"] if r["body_size"] else ""
            u.append("%s %s%s" % (who, r["method"], size))
    s += "; upstream: " + (", ".join(u) if u else "nothing")
    return s


def judge(case, ref, g, ups, key, crash=None):
    """The property for one case -> Verdict. ref: run_ref()'s result, g: run_gw()'s,
    ups: {marker: [stub records]} (complete ones, and heads the stub could not parse)."""
    v = Verdict(case)
    cid = case.cid
    F, S = cid + ".f", cid + ".s"
    v.ref_summary = describe_ref(ref, cid)
    v.gw_summary = describe_gw(g, ups, cid)
    if crash:
        v.bad("crash", crash)
    R = ref["records"]
    ref_markers = [r["marker"] for r in R]
    ref_by_marker = {}
    for r in R:
        ref_by_marker.setdefault(r["marker"], r)
    resps = g["resps"]
    statuses = [st for st, _, _ in resps]
    head = case.is_head(key)

    # every error the gateway sends is an OpenAI error body (an answer to HEAD has none)
    for i, (st, h, body) in enumerate(resps):
        if st >= 400 and not (head and i == 0) and openai_error(body) is None:
            v.bad("error-body", "a %d without an OpenAI error body: %r" % (st, body[:80]))
    if g["garbage"]:
        v.bad("garbage", "%s: %r" % ("bytes after the answer to HEAD (a body?)" if head and resps
                                     else "bytes that are not an HTTP response", g["garbage"][:60]))
    if not resps:
        v.bad("no-answer", "the gateway answered nothing (closed or gave up at its idle timeout)")

    last_is_refusal = bool(resps) and statuses[-1] >= 400 and \
        openai_error(resps[-1][2]) is not None and g["closed"]
    n_proc = len(resps) - (1 if last_is_refusal else 0)

    # what the upstream got is a head it can parse, with no field the client did
    # not send in its head (a trailer promoted into the header section, say)
    sent = head_fields(case.variant(key))
    for m, recs in ups.items():
        for r in recs:
            if r.get("raw_head"):
                v.bad("upstream-head", "the upstream could not parse the head the gateway "
                      "sent it: %r" % redact(r["raw_head"])[:200])
    for r in ups.get(cid, []):
        names = [k.lower() for k, _ in r.get("headers") or []]
        for k, val in r.get("headers") or []:
            if k.lower() not in ADDED_UPSTREAM and (k.lower(), val.strip(" \t")) not in sent:
                v.bad("upstream-head", "the upstream got the field %r, which is not in the "
                      "request's head" % ("%s: %s" % (k, val)))
            elif k.lower() in ADDED_UPSTREAM and names.count(k.lower()) > 1:
                v.bad("upstream-head", "the upstream got %d %s fields"
                      % (names.count(k.lower()), k))
                names = [n for n in names if n != k.lower()]
    ups = {m: [r for r in recs if not r.get("raw_head")] for m, recs in ups.items()}
    ups = {m: recs for m, recs in ups.items() if recs}

    # llhttp refuses a few requests that RFC 9112 allows (a trailing HTAB after a
    # Content-Length or Transfer-Encoding value, BWS around a chunk extension's
    # ';', some trailer fields): for a case built legal, framing it the way it
    # was meant (the JSON body upstream, then the follow-up) is no smuggling.
    intended = hashlib.sha256(C(cid, key).body.encode()).hexdigest()
    if case.legal and not R and ref["error"] and len(resps) == 2 and not g["garbage"] \
            and len(ups.get(F, [])) == 1 and set(ups) <= {cid, F} \
            and all(r["body_sha256"] == intended for r in ups.get(cid, [])):
        v.notes.append("the reference (llhttp) refuses this RFC-valid request (%s); the gateway "
                       "framed it as intended" % ref["error"].get("code"))
        return v

    # nothing the reference did not frame reaches the upstream
    for m, recs in ups.items():
        if m == cid:
            continue
        if m not in ref_markers:
            v.bad("smuggled" if m == S else "unframed-upstream",
                  "the upstream received %s, which the reference never framed"
                  % {F: "the follow-up", S: "the inner request ID.s"}.get(m, repr(m)))
        elif len(recs) > ref_markers.count(m):
            v.bad("duplicate-upstream", "the upstream received %s %d times" % (m, len(recs)))

    # the variant's body at the upstream is the one the reference saw
    for r in ups.get(cid, []):
        want = ref_by_marker.get(cid)
        if want is None:
            if r["body_sha256"] != intended:
                v.notes.append("forwarded a variant the reference refused, with a %d-byte body "
                               "that is not the one meant" % r["body_size"])
            continue
        if r["body_sha256"] != hashlib.sha256(want["raw_body"]).hexdigest():
            v.bad("body-differs", "the upstream got a %d-byte body, the reference framed %d bytes"
                  % (r["body_size"], len(want["raw_body"])))
        if r["method"] != want["method"]:
            v.bad("method-differs", "upstream method %s, reference %s"
                  % (r["method"], want["method"]))
    if len(ups.get(cid, [])) > 1:
        v.bad("duplicate-upstream", "the variant reached the upstream %d times" % len(ups[cid]))

    # as many requests as the reference, or a clean refusal
    if F in ref_markers:
        before_f = ref_markers.index(F)
        refused = len(resps) == 1 and last_is_refusal and not ups.get(F)
        same = len(resps) == len(R) and len(ups.get(F, [])) == 1 and not g["garbage"]
        # the variant asked to close (Connection: close): closing after it is fine
        closed_early = case.may_close and len(resps) == before_f and g["closed"] \
            and not ups.get(F) and not g["garbage"]
        if not (refused or same or closed_early):
            if len(resps) == 1 and statuses[0] >= 400 and not g["closed"]:
                why = "refused with %d but left the connection open" % statuses[0]
            elif len(resps) < len(R):
                why = "answered %d of the %d requests the reference framed" % (len(resps), len(R))
            elif len(resps) > len(R):
                why = "answered %d requests where the reference framed %d" % (len(resps), len(R))
            else:
                why = ("as many answers as the reference framed requests, but the follow-up never "
                       "reached the upstream: bytes of the variant were read as a request")
            v.bad("framing", why)
    else:
        limit = max(len(R), 1)
        if n_proc > limit:
            v.bad("extra-request", "processed %d requests where the reference framed %d%s"
                  % (n_proc, len(R), " and refused the rest" if ref["error"] else ""))
        if len(R) == 0 and n_proc == 1 and not v.problems:
            v.notes.append("framed a variant the reference refused (%s)"
                           % (ref["error"] or {}).get("code"))
    return v


# ---------------------------------------------------------------- running the cases

def alive(gw):
    """True if the gateway answers /healthz now; False once its process has ended.
    (A crash closes the client's socket a moment before the process can be
    reaped, so poll() alone would race.)"""
    if gw.proc.poll() is None:
        try:
            st, _, _ = gw.request("GET", "/healthz", key=None, timeout=10)
            if st == 200:
                return True
        except (OSError, ValueError, gwtest.http.client.HTTPException):
            pass
    gwtest.wait_for(lambda: gw.proc.poll() is not None, 10, what="the gateway to exit or answer")
    return False


def suspicious(gw, mark):
    if not alive(gw):
        return "the gateway died (exit %s)" % gw.proc.returncode
    tail = gw.log()[mark:]
    for m in gwtest.SANITIZER_MARKERS:
        i = tail.find(m)
        if i >= 0:
            return "sanitizer report: " + tail[max(0, i - 40):i + 200].replace("\n", " | ")
    return None


def marker_of_record(r):
    """The case marker of a stub record (from a raw head the stub could not parse too)."""
    raw = r.get("raw_head")
    if raw:
        m = re.search(r"(?im)^x-diff-case:[ \t]*([A-Za-z0-9.-]+)", raw) or \
            re.search(r"[?&]diff=([A-Za-z0-9.-]+)", raw.split("\n", 1)[0])
        return m.group(1) if m else None
    return marker_of_headers(r["headers"]) or marker_of_url("?" + (r.get("query") or ""))


def group_ups(recs):
    """{marker: [records]}: the requests the upstream read whole, and the heads it
    could not parse at all (raw_head)."""
    ups = {}
    for r in recs:
        if not r.get("complete") and not r.get("raw_head"):
            continue    # cut off mid-body: never handed to the upstream's application
        ups.setdefault(marker_of_record(r), []).append(r)
    return ups


def run_cases(cases, pipelined):
    """-> ([Verdict], [upstream records no case of its batch explains]); the gateways
    a case killed are in edge().dead_logs."""
    e = edge()
    results = []
    unattributed = []

    def one(cs):
        key = e.key
        variant, follow = cs.variant(key), cs.follow(key)
        head = cs.is_head(key)
        ref = run_ref(e.ref.port, variant + follow, head)
        g = run_gw(e.gw.port, variant, follow, head, pipelined or cs.together)
        return cs, ref, g

    def base_of(r):
        m = marker_of_record(r)
        return m.rsplit(".", 1)[0] if m and m.endswith((".f", ".s")) else m

    for i in range(0, len(cases), BATCH):
        batch = cases[i:i + BATCH]
        # whatever reached the upstream since the last batch ended came late
        unattributed += e.new_upstream_records()
        mark = len(e.gw.log())
        with concurrent.futures.ThreadPoolExecutor(len(batch)) as ex:
            outs = list(ex.map(one, batch))
        crashes = {}
        if suspicious(e.gw, mark):
            # replay the batch one case at a time on a fresh gateway to find the culprit
            e.restart_gateway()
            e.new_upstream_records()        # the records of the attempt that went wrong
            outs = []
            for cs in batch:
                mark = len(e.gw.log())
                out = one(cs)
                why = suspicious(e.gw, mark)
                recs = e.new_upstream_records()
                unattributed += [r for r in recs if base_of(r) != cs.cid]
                outs.append((out, [r for r in recs if base_of(r) == cs.cid], why))
                if why:                 # a fresh gateway (and log) for the next case
                    crashes[cs.cid] = why
                    e.restart_gateway()
                    e.new_upstream_records()
            per_case = [(o, group_ups(recs)) for o, recs, _ in outs]
        else:
            ups_all = {}
            for r in e.new_upstream_records():
                ups_all.setdefault(base_of(r), []).append(r)
            per_case = [(o, group_ups(ups_all.pop(o[0].cid, []))) for o in outs]
            for rs in ups_all.values():
                unattributed += rs
        for (cs, ref, g), ups in per_case:
            v = judge(cs, ref, g, ups, e.key, crashes.get(cs.cid))
            results.append(v)
            if VERBOSE:
                print(("ok   " if not v.problems else "FAIL ") + v.line(), flush=True)
    return results, unattributed


def report(results, unattributed, what, dead_logs):
    e = edge()
    failed = [v for v in results if v.problems]
    notes = [v for v in results if v.notes and not v.problems]
    lines = []
    if notes:
        print("notes (%s): %d case(s) that the reference refused and the gateway framed "
              "(allowed):" % (what, len(notes)))
        groups = {}
        for v in notes:
            groups.setdefault("; ".join(v.notes), []).append(v.case.cid)
        for text, cids in sorted(groups.items()):
            print("  %s:\n    %s" % (text, " ".join(cids)))
    if failed:
        lines.append("%d of %d cases break the differential property (%s):"
                     % (len(failed), len(results), what))
        for v in failed:
            lines.append("  " + v.line())
        kinds = {}
        for v in failed:
            for k, _ in v.problems:
                kinds.setdefault(k, [])
                if v.case.cid not in kinds[k]:
                    kinds[k].append(v.case.cid)
        lines.append("by kind:")
        for k, cids in sorted(kinds.items(), key=lambda kv: -len(kv[1])):
            lines.append("  %-18s %3d: %s" % (k, len(cids), " ".join(cids)))
    if unattributed:
        shown = ["%s %s?%s" % (r["method"], r["path"], r["query"]) if not r.get("raw_head")
                 else "unparsable head %r" % redact(r["raw_head"])[:300] for r in unattributed]
        lines.append("the upstream received %d request(s) no case sent: %s"
                     % (len(unattributed), ", ".join(shown[:10])))
    for log in dead_logs:
        for m in gwtest.SANITIZER_MARKERS:
            i = log.find(m)
            if i >= 0:
                lines.append("a gateway killed by a case logged: %s"
                             % redact(log[max(0, i - 200):i + 1500]))
                break
    # alive and clean now
    st, _, b = e.gw.request("GET", "/healthz", key=None, timeout=10)
    if st != 200:
        lines.append("/healthz answered %d %r after the cases" % (st, b[:100]))
    try:
        gwtest.assert_clean(e.gw, secrets=[e.stub.key, e.key], alive=True)
    except AssertionError as ex:
        lines.append(str(ex)[:4000])
    print("%s: %d cases, %d fail, %d notes, %d gateway restart(s)"
          % (what, len(results), len(failed), len(notes), len(dead_logs)), flush=True)
    if lines:
        raise AssertionError("\n".join(lines))


def selected(cases):
    return [c for c in cases if ONLY in c.cid] if ONLY else cases


# ---------------------------------------------------------------- tests

def test_reference_behaves():
    """The reference frames what the property assumes (guards a Node upgrade)."""
    e = edge()
    c = C("ref.check", e.key)
    ok = run_ref(e.ref.port, (c.cl() + c.follow()).encode(), False)
    assert [r["marker"] for r in ok["records"]] == ["ref.check", "ref.check.f"] and \
        ok["error"] is None, ok
    assert ok["records"][0]["raw_body"] == c.body.encode()
    ch = run_ref(e.ref.port, (c.te(pieces=(3, 9), ext=";a=b", trailers=("X-T: 1",))
                              + c.follow()).encode(), False)
    assert [r["raw_body"] for r in ch["records"]] == [c.body.encode(), b""], ch
    bad = run_ref(e.ref.port, (c.head("Content-Length: 5", "Transfer-Encoding: chunked")
                               + c.chunks() + c.follow()).encode(), False)
    assert bad["records"] == [] and bad["error"]["code"].startswith("HPE_"), bad
    # a message left unfinished at EOF is an error, not a wait
    cut = run_ref(e.ref.port, (c.head("Content-Length: 1000") + "x").encode(), False)
    assert cut["records"] == [] and cut["error"] is not None, cut
    assert len(CASES) >= 300, len(CASES)


def test_differential():
    dead = len(edge().dead_logs)
    results, unattributed = run_cases(selected(CASES), pipelined=False)
    report(results, unattributed, "variant, then the follow-up", edge().dead_logs[dead:])


def test_differential_pipelined():
    want = set(PIPELINED)
    cases = selected([c for c in CASES if c.cid in want])
    assert len(cases) == len(want) or ONLY, sorted(want - {c.cid for c in cases})
    dead = len(edge().dead_logs)
    results, unattributed = run_cases(cases, pipelined=True)
    report(results, unattributed, "variant and follow-up in one write", edge().dead_logs[dead:])


def test_gateway_exits_clean():
    e = edge()
    gw, e.gw = e.gw, None
    try:
        gwtest.stop_clean(gw, secrets=[e.stub.key, e.key])
    finally:
        gw.__exit__(None, None, None)


if __name__ == "__main__":
    gwtest.main(globals())
