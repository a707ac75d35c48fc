#!/usr/bin/env python3
"""stub_upstream.py - a faithful fake of the OpenAI-compatible video service.

The contract is design.md section 1.  The stub records every request it
receives (headers as received, framing, body hash, multipart parts, arrival
time of each body read) so integration tests can assert what the gateway
*sent*, and it can be told to misbehave (faults) through control endpoints
under /__stub/ (no auth, never recorded, never faulted).

    python3 stub_upstream.py --port 0 --key KEY [--key KEY2 ...] [--host 127.0.0.1]
        [--tls-cert C --tls-key K] [--ready-file F]
        [--content-size BYTES] [--job-seconds S] [--dual] [--verbose]

Python 3.11 standard library only.  Bodies stream through with flat memory:
multipart is parsed incrementally (bytes.find on the delimiter), file parts are
hashed as they pass, and video content is generated from a 64 KiB block.

API (auth: "Authorization: Bearer KEY" on /v1/*, else 401 OpenAI error)
  POST   /v1/videos                 multipart/form-data or JSON; model, prompt,
                                    seconds, size required (400 + param) -> job
  GET    /v1/videos/{id}            queued -> in_progress -> completed after
                                    job_seconds (queued for the first 20%)
  GET    /v1/videos/{id}/content    ?variant=video|thumbnail|spritesheet;
                                    content_size bytes of content_block(id, variant)
  GET    /v1/videos                 ?after=&limit=(1..100, 20)&order=(asc|desc)
  DELETE /v1/videos/{id}            {"id","object":"video.deleted","deleted":true}
  POST   /v1/videos/{id}/remix      JSON {"prompt"} -> new job, original's model
  POST   /v1/videos/edits           multipart (prompt, video file | video[id]) or JSON
                                    {"prompt", "video": {"id"}} -> new job (a referenced
                                    video's model and seconds; an upload: veo_3_1, "8")
  POST   /v1/videos/extensions      as edits, plus seconds (4, 8, 12, 16, 20) -> new job
                                    whose seconds are the stitched total
  POST   /v1/videos/characters      multipart name + video file -> {"id": "char_...",
                                    "created_at", "name"}
  GET    /v1/videos/characters/{id} that object (404 if unknown, or another account's)

Record (one per request, including rejected ones, appended when the head
arrives and updated while the body streams):
  seq, conn (connection number), conn_request (1, 2, ... on that connection),
  tls, sni, tls_resumed (the TLS session was resumed), method, path, query, http_version, headers [[name, value], ...]
  as received, framing ("content-length" | "chunked" | "none"),
  content_length, body_size, body_sha256 (when complete), complete,
  parts [{name, filename, content_type, size, sha256, value (text parts),
  headers, complete}], multipart {boundary, preamble, epilogue, error} | null,
  json, chunks [[t, cumulative bytes], ...] (reads < 1 ms apart share an
  entry), wire_chunks, chunk_extensions, trailers, expect_100, fault,
  variant, status (answered, null if none), sent (response body bytes
  written), error, t_start, t_body_end, t_end (time.monotonic(), which is
  CLOCK_MONOTONIC and so comparable across processes), raw_head (bad heads).

Control (no auth, never recorded or faulted)
  GET  /__stub/requests[?since=SEQ]   POST /__stub/reset {"config": bool}
  POST /__stub/fault {mode, count=1, path_prefix, retry_after, delay_ms,
       after_bytes, body_bytes, early, read_bps, chunk_delay_ms, status, in_body,
       header_bytes}   GET /__stub/fault
       modes: 500 429 reset reset_mid_request hang slow close_after_headers
              401 407 (refuse the key and echo it in the body and the challenge)
              echo_key (an error of `status`, 400, echoing the key in an
                  X-Echo-Authorization header, and in the body unless in_body
                  is false)
              two_content_lengths nul_in_header huge_headers (an invalid
                  answer: two different Content-Lengths, a NUL in a header
                  value, a header of header_bytes, 32768; then close)
              connection_header (the real answer, plus "Connection: close,
                  x-SECRET" and "Connection: X-Other-Hop" naming X-Secret and
                  X-Other-Hop, which are sent, and X-Kept, which is not named;
                  then close)
  GET|POST /__stub/config {content_size, job_seconds, idle_timeout}
  GET  /__stub/wait?count=N&timeout=S[&done=1]   (200 records | 408)
  GET  /__stub/wait_bytes?bytes=N&timeout=S      (200 record | 408)
  POST /__stub/close_idle   GET /__stub/stats   GET /__stub/jobs
  POST /__stub/job {id, status, progress, error}  (override a job's state)
"""

import argparse
import asyncio
import hashlib
import hmac
import json
import os
import signal
import socket
import ssl
import struct
import sys
import time
import traceback
import uuid
from urllib.parse import parse_qs

READ_SIZE = 256 * 1024          # largest body read handed to the sinks
STREAM_LIMIT = 256 * 1024       # asyncio StreamReader limit (pauses at 2x)
HEAD_LIMIT = 64 * 1024          # request line + headers
CHUNK_LINE_LIMIT = 4096         # one chunk-size line (with extensions)
PART_HEAD_LIMIT = 16 * 1024     # headers of one multipart part
TEXT_VALUE_LIMIT = 1024 * 1024  # text part value kept for the record
JSON_LIMIT = 16 * 1024 * 1024   # JSON body held in memory
BLOCK_SIZE = 64 * 1024          # content pattern block
WRITE_SIZE = 4 * BLOCK_SIZE     # content bytes per write
MAX_CHUNK_EXTS = 100            # chunk extensions kept in a record
CHUNK_MERGE_S = 0.001           # body reads closer than this share a chunks entry

VARIANTS = {
    "video": "video/mp4",
    "thumbnail": "image/webp",
    "spritesheet": "image/jpeg",
}
FAULT_MODES = ("500", "429", "reset", "reset_mid_request", "hang", "slow",
               "close_after_headers", "401", "407", "echo_key", "two_content_lengths",
               "nul_in_header", "huge_headers", "connection_header")
ERROR_FAULTS = ("500", "429", "401", "407", "echo_key")       # an error answer, after the body
INVALID_ANSWERS = ("two_content_lengths", "nul_in_header", "huge_headers")

REASONS = {
    100: "Continue", 200: "OK", 400: "Bad Request", 401: "Unauthorized",
    403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
    407: "Proxy Authentication Required", 408: "Request Timeout",
    411: "Length Required", 413: "Payload Too Large",
    415: "Unsupported Media Type", 429: "Too Many Requests",
    431: "Request Header Fields Too Large", 500: "Internal Server Error",
    501: "Not Implemented", 503: "Service Unavailable",
}


# --------------------------------------------------------------------------
# content pattern (shared with tests/integration/gwtest.py, which imports it)

_block_cache = {}


def content_block(video_id, variant="video"):
    """The 64 KiB block repeated to form a video's content (deterministic)."""
    k = (video_id, variant)
    b = _block_cache.get(k)
    if b is None:
        if len(_block_cache) > 64:
            _block_cache.clear()
        seed = ("stub-content:%s:%s" % (video_id, variant)).encode()
        b = _block_cache[k] = hashlib.shake_256(seed).digest(BLOCK_SIZE)
    return b


def content_sha256(video_id, size, variant="video"):
    """sha256 hex of the content the stub serves for (id, size, variant)."""
    block = content_block(video_id, variant)
    big = block * (WRITE_SIZE // BLOCK_SIZE)
    h = hashlib.sha256()
    left = size
    while left > 0:
        n = min(left, len(big))
        h.update(memoryview(big)[:n])
        left -= n
    return h.hexdigest()


# --------------------------------------------------------------------------
# errors

class HTTPError(Exception):
    def __init__(self, status, message, type_="invalid_request_error",
                 param=None, code=None, close=False, headers=()):
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type_
        self.param = param
        self.code = code
        self.close = close
        self.headers = list(headers)

    def body(self):
        return error_json(self.message, self.type, self.param, self.code)


def error_json(message, type_, param=None, code=None):
    return json.dumps({"error": {"message": message, "type": type_,
                                 "param": param, "code": code}}).encode()


class ClientGone(Exception):
    """The client closed or reset the connection in the middle of a request."""


# --------------------------------------------------------------------------
# header parameter parsing (Content-Type, Content-Disposition)

def parse_header_params(value):
    """'form-data; name="a"; filename="b\\"c"' -> ('form-data', {'name': 'a', ...}).

    Parameter names are lower-cased; quoted strings honour backslash escapes.
    Raises ValueError on malformed input."""
    i, n = 0, len(value)
    j = value.find(";")
    if j < 0:
        return value.strip().lower(), {}
    main = value[:j].strip().lower()
    params = {}
    i = j + 1
    while i < n:
        while i < n and value[i] in " \t;":
            i += 1
        if i >= n:
            break
        eq = value.find("=", i)
        if eq < 0:
            raise ValueError("parameter without '='")
        name = value[i:eq].strip().lower()
        if not name or any(c in name for c in ' \t"'):
            raise ValueError("bad parameter name")
        i = eq + 1
        while i < n and value[i] in " \t":
            i += 1
        if i < n and value[i] == '"':
            i += 1
            out = []
            while True:
                if i >= n:
                    raise ValueError("unterminated quoted string")
                c = value[i]
                if c == "\\" and i + 1 < n:
                    out.append(value[i + 1])
                    i += 2
                elif c == '"':
                    i += 1
                    break
                else:
                    out.append(c)
                    i += 1
            val = "".join(out)
            while i < n and value[i] in " \t":
                i += 1
            if i < n and value[i] != ";":
                raise ValueError("garbage after quoted string")
        else:
            k = value.find(";", i)
            if k < 0:
                k = n
            val = value[i:k].strip()
            i = k
        if name in params:
            raise ValueError("duplicate parameter %r" % name)
        params[name] = val
    return main, params


# --------------------------------------------------------------------------
# body sinks: fed every body read, finish() at the end (raises HTTPError)

class NullSink:
    def feed(self, data):
        pass

    def finish(self):
        pass


class JsonSink:
    def __init__(self, rec, required=True):
        self.rec = rec
        self.buf = bytearray()
        self.too_big = False
        self.required = required

    def feed(self, data):
        if self.too_big:
            return
        if len(self.buf) + len(data) > JSON_LIMIT:
            self.too_big = True
            self.buf = bytearray()
            return
        self.buf += data

    def finish(self):
        if self.too_big:
            raise HTTPError(413, "JSON body too large", code="request_too_large")
        if not self.buf and not self.required:
            return None
        try:
            obj = json.loads(bytes(self.buf).decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as e:
            self.rec["json_error"] = str(e)
            raise HTTPError(400, "We could not parse the JSON body of your "
                            "request: %s" % e, code="invalid_json")
        self.rec["json"] = obj
        return obj


class MultipartSink:
    """Strict, incremental multipart/form-data parser.

    Holds at most one part's headers plus (delimiter length - 1) bytes; part
    bodies are hashed and counted as they pass.  Records parts into
    rec["parts"] (visible while in flight) and parser facts into
    rec["multipart"].  A malformed body stops parsing; finish() raises 400."""

    PREAMBLE, AFTER_DELIM, HEADERS, BODY, EPILOGUE, ERROR = range(6)

    def __init__(self, rec, boundary):
        self.rec = rec
        self.delim = b"\r\n--" + boundary.encode("latin-1")
        self.buf = bytearray(b"\r\n")   # so the first delimiter needs no CRLF
        self.state = self.PREAMBLE
        self.preamble = -2
        self.info = rec["multipart"] = {"boundary": boundary, "preamble": 0,
                                        "epilogue": 0, "error": None}
        self.part = None
        self.hasher = None
        self.value = None
        self.epi_head = bytearray()
        self.epi_total = 0

    # -- helpers
    def _fail(self, msg):
        self.state = self.ERROR
        self.info["error"] = msg
        self.buf = bytearray()

    def _emit(self, n):
        """Pass buf[:n] to the current part and drop it from buf."""
        if n <= 0:
            return
        with memoryview(self.buf) as mv:
            piece = mv[:n]
            self.hasher.update(piece)
            if self.value is not None and len(self.value) < TEXT_VALUE_LIMIT:
                self.value += piece[:TEXT_VALUE_LIMIT - len(self.value)]
            piece.release()
        self.part["size"] += n
        del self.buf[:n]

    def _epilogue(self, data):
        """Count bytes after the close delimiter, less the CRLF that ends its line."""
        if len(self.epi_head) < 2:
            take = 2 - len(self.epi_head)
            self.epi_head += data[:take]
        self.epi_total += len(data)
        crlf = 2 if self.epi_head == b"\r\n" else 0
        self.info["epilogue"] = self.epi_total - crlf if self.epi_total >= 2 else self.epi_total

    def _end_part(self):
        p = self.part
        p["sha256"] = self.hasher.hexdigest()
        if self.value is not None:
            raw = bytes(self.value)
            try:
                p["value"] = raw.decode("utf-8")
            except UnicodeDecodeError:
                p["value"] = raw.decode("utf-8", "replace")
                p["value_utf8_error"] = True
            if p["size"] > TEXT_VALUE_LIMIT:
                p["value_truncated"] = True
        p["complete"] = True
        self.part = self.hasher = self.value = None

    def _start_part(self, head):
        headers = []
        for line in head.split(b"\r\n"):
            if not line:
                continue
            if line[:1] in (b" ", b"\t"):
                return self._fail("folded part header line")
            c = line.find(b":")
            if c <= 0:
                return self._fail("part header line without ':'")
            name = line[:c].decode("latin-1")
            if name != name.strip() or " " in name or "\t" in name:
                return self._fail("whitespace in part header name")
            headers.append([name, line[c + 1:].strip(b" \t").decode("utf-8", "replace")])
        cd = [v for k, v in headers if k.lower() == "content-disposition"]
        if len(cd) != 1:
            return self._fail("part without exactly one Content-Disposition")
        try:
            disp, params = parse_header_params(cd[0])
        except ValueError as e:
            return self._fail("bad Content-Disposition: %s" % e)
        if disp != "form-data":
            return self._fail("Content-Disposition is not form-data")
        if "name" not in params:
            return self._fail("Content-Disposition without name")
        ct = [v for k, v in headers if k.lower() == "content-type"]
        self.part = {"name": params["name"], "filename": params.get("filename"),
                     "content_type": ct[0] if ct else None, "size": 0,
                     "sha256": None, "value": None, "headers": headers,
                     "complete": False}
        self.rec["parts"].append(self.part)
        self.hasher = hashlib.sha256()
        self.value = bytearray() if self.part["filename"] is None else None
        self.state = self.BODY

    # -- the machine
    def feed(self, data):
        if self.state == self.ERROR:
            return
        if self.state == self.EPILOGUE:
            self._epilogue(data)
            return
        self.buf += data
        buf = self.buf
        d = self.delim
        L = len(d)
        while True:
            st = self.state
            if st == self.BODY:
                i = buf.find(d)
                if i < 0:
                    self._emit(len(buf) - (L - 1))
                    return
                self._emit(i)
                self._end_part()
                del buf[:L]
                self.state = self.AFTER_DELIM
            elif st == self.AFTER_DELIM:
                if len(buf) < 2:
                    return
                two = bytes(buf[:2])
                del buf[:2]
                if two == b"\r\n":
                    self.state = self.HEADERS
                elif two == b"--":
                    self.state = self.EPILOGUE
                    self._epilogue(buf)
                    buf.clear()
                    return
                else:
                    return self._fail("delimiter not followed by CRLF or '--'")
            elif st == self.HEADERS:
                if buf[:2] == b"\r\n":
                    head_end, skip = 0, 2
                else:
                    head_end = buf.find(b"\r\n\r\n")
                    skip = 4
                    if head_end < 0:
                        if len(buf) > PART_HEAD_LIMIT:
                            return self._fail("part headers too long")
                        return
                if head_end > PART_HEAD_LIMIT:
                    return self._fail("part headers too long")
                head = bytes(buf[:head_end])
                del buf[:head_end + skip]
                self._start_part(head)
                if self.state == self.ERROR:
                    return
            elif st == self.PREAMBLE:
                i = buf.find(d)
                if i < 0:
                    n = len(buf) - (L - 1)
                    if n > 0:
                        self.preamble += n
                        del buf[:n]
                    self.info["preamble"] = max(0, self.preamble)
                    return
                self.preamble += i
                self.info["preamble"] = max(0, self.preamble)
                del buf[:i + L]
                self.state = self.AFTER_DELIM
            else:
                return

    def finish(self):
        if self.state == self.ERROR:
            raise HTTPError(400, "Malformed multipart body: %s" % self.info["error"],
                            code="invalid_multipart")
        if self.state != self.EPILOGUE:
            self._fail("body ended before the closing boundary")
            raise HTTPError(400, "Malformed multipart body: %s" % self.info["error"],
                            code="invalid_multipart")


# --------------------------------------------------------------------------
# the stub

class Stub:
    def __init__(self, key, content_size, job_seconds, verbose=False):
        # one key or a list (a pool: any of them is accepted)
        self.keys = [k.encode() for k in ([key] if isinstance(key, str) else key)]
        self.key = self.keys[0]
        # accounts = 1: each upstream key is a separate provider account, seeing only the
        # jobs created with it (as with keys of different accounts of a real provider)
        self.defaults = {"content_size": content_size, "job_seconds": job_seconds,
                         "idle_timeout": 75.0, "accounts": 0}
        self.cfg = dict(self.defaults)
        self.verbose = verbose
        self.records = []
        self.jobs = {}
        self.characters = {}
        self.faults = []
        self.seq = 0
        self.conn_seq = 0
        self.conns = {}          # id -> Conn
        self.conns_total = 0
        self._changed = asyncio.Event()

    # -- notification for /__stub/wait*
    def notify(self):
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait_until(self, pred, timeout):
        deadline = time.monotonic() + timeout
        while True:
            r = pred()
            if r is not None:
                return r
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            try:
                await asyncio.wait_for(self._changed.wait(), left)
            except asyncio.TimeoutError:
                pass

    def log(self, msg):
        if self.verbose:
            print(msg, file=sys.stderr, flush=True)

    # -- faults
    def take_fault(self, path):
        for f in self.faults:
            if f["count"] > 0 and path.startswith(f.get("path_prefix") or ""):
                f["count"] -= 1
                if f["count"] == 0:
                    self.faults.remove(f)
                return f
        return None

    # -- jobs
    def new_job(self, model, seconds, size, prompt, remixed_from=None, account=None):
        vid = "video_%s" % uuid.uuid4()
        job = {"id": vid, "model": model, "seconds": seconds, "size": size, "account": account,
               "created_at": int(time.time()), "t0": time.monotonic(),
               "remixed_from": remixed_from, "override": None,
               "prompt_sha256": hashlib.sha256(prompt.encode()).hexdigest()}
        self.jobs[vid] = job
        return job

    def job_object(self, job, fresh=False):
        status, progress = "queued", 0
        if not fresh:
            js = float(self.cfg["job_seconds"])
            el = time.monotonic() - job["t0"]
            if el >= js:
                status, progress = "completed", 100
            elif el >= 0.2 * js:
                status = "in_progress"
                progress = max(1, min(99, int(100 * el / js)))
            ov = job["override"]
            if ov:
                status = ov.get("status", status)
                progress = ov.get("progress", 100 if status == "completed" else progress)
        o = {"id": job["id"], "object": "video", "model": job["model"],
             "status": status, "progress": progress,
             "created_at": job["created_at"], "seconds": job["seconds"],
             "size": job["size"]}
        if status == "completed":
            o["completed_at"] = job["created_at"] + int(float(self.cfg["job_seconds"]))
            o["expires_at"] = o["completed_at"] + 86400
        if status == "failed":
            o["error"] = (job["override"] or {}).get(
                "error", {"code": "video_generation_failed",
                          "message": "The video could not be generated."})
        if job["remixed_from"]:
            o["remixed_from_video_id"] = job["remixed_from"]
        return o

    def visible(self, job, account):
        return not self.cfg["accounts"] or account is None or job["account"] in (None, account)

    def get_job(self, vid, account=None):
        job = self.jobs.get(vid)
        if job is None or not self.visible(job, account):
            raise HTTPError(404, "Video with id '%s' not found." % vid,
                            param="video_id", code="not_found")
        return job


class Conn:
    def __init__(self, stub, reader, writer):
        stub.conn_seq += 1
        stub.conns_total += 1
        self.id = stub.conn_seq
        self.stub = stub
        self.reader = reader
        self.writer = writer
        self.idle = True
        self.nreq = 0
        self.did_rst = False
        self.tls = writer.get_extra_info("ssl_object") is not None
        sslobj = writer.get_extra_info("ssl_object")
        self.sni = getattr(sslobj, "_stub_sni", None) if sslobj else None
        self.tls_version = sslobj.version() if sslobj else None
        self.tls_resumed = sslobj.session_reused if sslobj else None
        peer = writer.get_extra_info("peername")
        self.peer = "%s:%s" % (peer[0], peer[1]) if peer else None

    def rst(self):
        """Reset the connection: SO_LINGER 0 then close sends RST."""
        sock = self.writer.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                struct.pack("ii", 1, 0))
            except OSError:
                pass
        self.did_rst = True
        self.writer.transport.abort()


class Request:
    pass


def parse_head(raw):
    """Parse request line + headers (raw ends with CRLFCRLF). Raises HTTPError."""
    text = raw[:-4].decode("latin-1")
    lines = text.split("\r\n")
    if any("\n" in l or "\r" in l for l in lines):
        raise HTTPError(400, "bare CR or LF in request head", close=True)
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[0] or not parts[1]:
        raise HTTPError(400, "malformed request line", close=True)
    method, target, version = parts
    if version not in ("HTTP/1.1", "HTTP/1.0"):
        raise HTTPError(400 if not version.startswith("HTTP/") else 505,
                        "unsupported HTTP version", close=True)
    headers = []
    for line in lines[1:]:
        if line[:1] in (" ", "\t"):
            raise HTTPError(400, "obsolete line folding in headers", close=True)
        c = line.find(":")
        if c <= 0:
            raise HTTPError(400, "header line without ':'", close=True)
        name = line[:c]
        if any(ch in name for ch in " \t"):
            raise HTTPError(400, "whitespace in header name", close=True)
        headers.append([name, line[c + 1:].strip(" \t")])
    r = Request()
    r.method, r.target, r.version, r.headers = method, target, version, headers
    q = target.find("?")
    r.path = target if q < 0 else target[:q]
    r.query = "" if q < 0 else target[q + 1:]
    r.args = {k: v[-1] for k, v in parse_qs(r.query, keep_blank_values=True).items()}
    return r


def hget(headers, name):
    name = name.lower()
    return [v for k, v in headers if k.lower() == name]


def tokens(values):
    out = []
    for v in values:
        out.extend(t.strip().lower() for t in v.split(",") if t.strip())
    return out


def json_response(status, obj, extra=()):
    body = json.dumps(obj).encode()
    return status, [("Content-Type", "application/json")] + list(extra), body


class Server:
    def __init__(self, stub):
        self.stub = stub

    # ---------------------------------------------------------------- conn loop
    async def handle(self, reader, writer):
        stub = self.stub
        conn = Conn(stub, reader, writer)
        stub.conns[conn.id] = conn
        try:
            while True:
                conn.idle = True
                try:
                    raw = await asyncio.wait_for(self.read_head(reader),
                                                 float(stub.cfg["idle_timeout"]))
                except asyncio.TimeoutError:
                    break
                if raw is None:
                    break
                conn.idle = False
                keep = await self.handle_request(conn, raw)
                if not keep:
                    break
        except (ConnectionError, ssl.SSLError, asyncio.IncompleteReadError, ClientGone):
            pass
        except Exception:
            traceback.print_exc()
        finally:
            stub.conns.pop(conn.id, None)
            try:
                writer.close()
            except Exception:
                pass

    async def read_head(self, reader):
        """Return the raw head (bytes ending CRLFCRLF), None on clean EOF."""
        # RFC 9112 2.2: ignore empty lines before the request line.
        while True:
            try:
                raw = await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError as e:
                if e.partial.strip(b"\r\n") == b"":
                    return None
                raise ClientGone()
            except asyncio.LimitOverrunError:
                return b"\x00TOO-LONG"
            raw = raw.lstrip(b"\r\n")
            if raw == b"":
                continue
            if not raw.endswith(b"\r\n\r\n"):   # only blank lines were stripped
                raw += b"\r\n\r\n"               # pragma: no cover
            return raw

    # ---------------------------------------------------------------- one request
    async def handle_request(self, conn, raw):
        stub = self.stub
        t_start = time.monotonic()
        conn.nreq += 1
        if raw == b"\x00TOO-LONG" or len(raw) > HEAD_LIMIT:
            rec = self.new_record(conn, t_start, None, raw)
            rec["error"] = "request head too large"
            await self.finish(conn, rec, 431, [("Content-Type", "application/json")],
                              error_json("Request header fields too large",
                                         "invalid_request_error"), close=True)
            return False
        try:
            req = parse_head(raw)
        except HTTPError as e:
            rec = self.new_record(conn, t_start, None, raw)
            rec["error"] = e.message
            await self.finish(conn, rec, e.status, [("Content-Type", "application/json")],
                              e.body(), close=True)
            return False

        control = req.path.startswith("/__stub/")
        rec = self.new_record(conn, t_start, req, None, record=not control)

        # keep-alive semantics
        conn_tokens = tokens(hget(req.headers, "connection"))
        if req.version == "HTTP/1.1":
            keep = "close" not in conn_tokens
        else:
            keep = "keep-alive" in conn_tokens

        try:
            framing, clen = self.framing(req)
        except HTTPError as e:
            rec["error"] = e.message
            await self.finish(conn, rec, e.status, [("Content-Type", "application/json")],
                              e.body(), close=True)
            return False
        rec["framing"], rec["content_length"] = framing, clen

        fault = None
        if not control and req.path.startswith("/v1"):
            fault = stub.take_fault(req.path)
            if fault:
                rec["fault"] = fault["mode"]
        mode = fault["mode"] if fault else None

        # faults that act before the body is read
        if mode == "reset":
            rec["t_end"] = time.monotonic()
            rec["error"] = "fault: reset"
            stub.notify()
            conn.rst()
            return False
        if mode in ("500", "429") and fault.get("early"):
            st, hd, body = self.fault_response(fault)
            await self.finish(conn, rec, st, hd, body, close=True)
            return False

        # expect: 100-continue
        if framing != "none" and "100-continue" in tokens(hget(req.headers, "expect")) \
                and req.version == "HTTP/1.1":
            conn.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            rec["expect_100"] = True

        # choose the body sink
        route, sink = None, NullSink()
        try:
            route = self.route(req)
            sink = self.make_sink(req, route, rec)
        except HTTPError as e:
            route = ("error", e)
            sink = NullSink()

        # read the body
        try:
            await self.read_body(conn, req, rec, framing, clen, sink, fault)
        except HTTPError as e:
            rec["error"] = e.message
            rec["t_body_end"] = time.monotonic()
            await self.finish(conn, rec, e.status, [("Content-Type", "application/json")],
                              e.body(), close=True)
            return False
        except (ClientGone, ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            rec["error"] = rec["error"] or "client closed mid-body"
            rec["t_end"] = time.monotonic()
            stub.notify()
            return False
        if conn.did_rst:
            return False

        rec["complete"] = True
        rec["t_body_end"] = time.monotonic()
        stub.notify()

        # faults that act after the body
        if mode == "hang":
            rec["error"] = "fault: hang"
            stub.notify()
            try:
                while await conn.reader.read(65536):
                    pass
            except Exception:
                pass
            rec["t_end"] = time.monotonic()
            stub.notify()
            return False
        if mode == "slow" and fault.get("delay_ms"):
            await asyncio.sleep(fault["delay_ms"] / 1000.0)
        if mode in ERROR_FAULTS:
            st, hd, body = self.fault_response(fault, req)
            await self.finish(conn, rec, st, hd, body, close=not keep)
            return keep
        if mode in INVALID_ANSWERS:
            st, hd, body = self.fault_response(fault, req)
            await self.finish(conn, rec, st, hd, body, close=True)
            return False

        # answer
        try:
            if req.path.startswith("/v1/") or req.path == "/v1":
                self.check_auth(req)
            sink_result = sink.finish()
            if route[0] == "error":
                raise route[1]
            st, hd, body = await self.dispatch(req, route, rec, sink_result)
        except HTTPError as e:
            if e.close:
                keep = False
            st, hd, body = e.status, [("Content-Type", "application/json")] + e.headers, e.body()
        if mode == "close_after_headers":
            await self.finish(conn, rec, st, hd, body, close=True,
                              truncate=int(fault.get("body_bytes") or 0))
            return False
        if mode == "connection_header":
            hd = list(hd) + [("Connection", "close, x-SECRET"), ("X-Secret", "hop-by-hop"),
                             ("Connection", "X-Other-Hop"), ("X-Other-Hop", "also"),
                             ("X-Kept", "yes")]
            await self.finish(conn, rec, st, hd, body, close=True)
            return False
        delay = (fault or {}).get("chunk_delay_ms") if mode == "slow" else None
        await self.finish(conn, rec, st, hd, body, close=not keep, chunk_delay_ms=delay)
        return keep

    def new_record(self, conn, t_start, req, raw, record=True):
        """A request record; appended to the stub's list (visible in flight)
        unless record is False (control requests)."""
        stub = self.stub
        seq = None
        if record:
            stub.seq += 1
            seq = stub.seq
        rec = {"seq": seq, "conn": conn.id, "conn_request": conn.nreq,
               "tls": conn.tls, "sni": conn.sni, "tls_resumed": conn.tls_resumed,
               "method": req.method if req else None,
               "path": req.path if req else None,
               "query": req.query if req else "",
               "http_version": req.version if req else None,
               "headers": req.headers if req else [],
               "framing": "none", "content_length": None, "body_size": 0,
               "body_sha256": None, "complete": False, "parts": [],
               "multipart": None, "json": None, "chunks": [],
               "wire_chunks": 0, "chunk_extensions": [], "trailers": [],
               "expect_100": False, "fault": None, "variant": None,
               "status": None, "sent": 0, "error": None,
               "t_start": t_start, "t_body_end": None, "t_end": None}
        if req is None:
            rec["raw_head"] = raw[:4096].decode("latin-1")
        if record:
            stub.records.append(rec)
            stub.notify()
        return rec

    # ---------------------------------------------------------------- framing/body
    def framing(self, req):
        te = hget(req.headers, "transfer-encoding")
        cl = hget(req.headers, "content-length")
        if te:
            codings = tokens(te)
            if cl:
                raise HTTPError(400, "both Transfer-Encoding and Content-Length",
                                close=True)
            if codings != ["chunked"]:
                raise HTTPError(501 if codings and codings[-1] == "chunked" else 400,
                                "unsupported Transfer-Encoding %r" % ", ".join(te),
                                close=True)
            if req.version != "HTTP/1.1":
                raise HTTPError(400, "chunked in HTTP/1.0", close=True)
            return "chunked", None
        if cl:
            vals = set(v.strip() for v in ",".join(cl).split(","))
            if len(vals) != 1:
                raise HTTPError(400, "conflicting Content-Length values", close=True)
            v = vals.pop()
            if not v.isdigit() or not v.isascii():
                raise HTTPError(400, "bad Content-Length", close=True)
            n = int(v)
            return "content-length", n
        return "none", None

    async def read_body(self, conn, req, rec, framing, clen, sink, fault):
        stub = self.stub
        reader = conn.reader
        h = hashlib.sha256()
        mode = fault["mode"] if fault else None
        rst_after = None
        if mode == "reset_mid_request":
            rst_after = int(fault.get("after_bytes") or 65536)
        read_bps = fault.get("read_bps") if mode == "slow" else None
        maxread = min(READ_SIZE, 65536) if read_bps else READ_SIZE
        chunks = rec["chunks"]
        total = 0
        group_t0 = 0.0

        def got(data):
            # chunks: one [t, cumulative bytes] per body read, except that reads
            # less than CHUNK_MERGE_S after the previous entry was opened update
            # it (t = latest read) instead of adding one; the first read always
            # keeps its own entry.  Bounds the record for many tiny reads.
            nonlocal total, group_t0
            total += len(data)
            h.update(data)
            rec["body_size"] = total
            now = time.monotonic()
            if len(chunks) >= 2 and now - group_t0 < CHUNK_MERGE_S:
                chunks[-1][0] = now
                chunks[-1][1] = total
            else:
                chunks.append([now, total])
                group_t0 = now
            sink.feed(data)
            stub.notify()

        async def after(data):
            if rst_after is not None and total >= rst_after:
                rec["error"] = "fault: reset_mid_request"
                rec["t_end"] = time.monotonic()
                stub.notify()
                conn.rst()
                raise ClientGone()
            if read_bps:
                await asyncio.sleep(len(data) / float(read_bps))

        async def read_counted(left):
            """Read exactly `left` body bytes (recorded and paced by got/after)."""
            while left > 0:
                data = await reader.read(min(left, maxread))
                if not data:
                    raise ClientGone()
                left -= len(data)
                got(data)
                await after(data)

        try:
            if framing == "content-length":
                await read_counted(clen)
            elif framing == "chunked":
                while True:
                    line = await self.read_line(reader)
                    size_s, _, ext = line.partition(b";")
                    size_s = size_s.rstrip(b" \t")
                    if not size_s or len(size_s) > 16 or \
                            any(c not in b"0123456789abcdefABCDEF" for c in size_s):
                        raise HTTPError(400, "bad chunk size line", close=True)
                    if ext and len(rec["chunk_extensions"]) < MAX_CHUNK_EXTS:
                        rec["chunk_extensions"].append(ext.decode("latin-1"))
                    size = int(size_s, 16)
                    if size == 0:
                        break
                    rec["wire_chunks"] += 1
                    await read_counted(size)
                    crlf = await reader.readexactly(2)
                    if crlf != b"\r\n":
                        raise HTTPError(400, "chunk data not followed by CRLF", close=True)
                while True:
                    line = await self.read_line(reader)
                    if line == b"":
                        break
                    rec["trailers"].append(line.decode("latin-1"))
        except ClientGone:
            if conn.did_rst:
                return
            raise
        rec["body_sha256"] = h.hexdigest()
        if rst_after is not None:
            # body shorter than after_bytes: reset before answering
            rec["error"] = "fault: reset_mid_request"
            rec["t_end"] = time.monotonic()
            stub.notify()
            conn.rst()

    async def read_line(self, reader):
        try:
            line = await reader.readuntil(b"\r\n")
        except asyncio.LimitOverrunError:
            raise HTTPError(400, "chunk line too long", close=True)
        except asyncio.IncompleteReadError:
            raise ClientGone()
        if len(line) > CHUNK_LINE_LIMIT:
            raise HTTPError(400, "chunk line too long", close=True)
        return line[:-2]

    # ---------------------------------------------------------------- routing
    def route(self, req):
        p, m = req.path, req.method
        if p.startswith("/__stub/"):
            name = p[len("/__stub/"):]
            return ("control", name)
        segs = p.split("/")
        # ['', 'v1', 'videos', id, sub]
        if len(segs) >= 3 and segs[0] == "" and segs[1] == "v1" and segs[2] == "videos":
            if len(segs) == 3:
                if m == "POST":
                    return ("create",)
                if m == "GET":
                    return ("list",)
                return ("405", "GET, POST")
            if len(segs) == 4 and segs[3] in ("edits", "extensions", "characters"):
                kind = {"edits": "edit", "extensions": "extend",
                        "characters": "character_create"}[segs[3]]
                return (kind,) if m == "POST" else ("405", "POST")
            if len(segs) == 5 and segs[3] == "characters" and segs[4]:
                return ("character", segs[4]) if m == "GET" else ("405", "GET")
            vid = segs[3]
            if vid == "":
                return ("404",)
            if len(segs) == 4:
                if m == "GET":
                    return ("retrieve", vid)
                if m == "DELETE":
                    return ("delete", vid)
                return ("405", "GET, DELETE")
            if len(segs) == 5 and segs[4] == "content":
                return ("content", vid) if m == "GET" else ("405", "GET")
            if len(segs) == 5 and segs[4] == "remix":
                return ("remix", vid) if m == "POST" else ("405", "POST")
        return ("404",)

    def make_sink(self, req, route, rec):
        kind = route[0]
        if kind in ("create", "edit", "extend", "character_create"):
            ct = hget(req.headers, "content-type")
            if not ct:
                raise HTTPError(400, "Missing Content-Type", code="invalid_content_type")
            try:
                main, params = parse_header_params(ct[0])
            except ValueError as e:
                raise HTTPError(400, "Malformed Content-Type: %s" % e,
                                code="invalid_content_type")
            if main == "multipart/form-data":
                b = params.get("boundary")
                if not b or len(b) > 70:
                    raise HTTPError(400, "multipart/form-data without a valid boundary",
                                    code="invalid_multipart")
                return MultipartSink(rec, b)
            if main == "application/json":
                return JsonSink(rec)
            raise HTTPError(415, "Unsupported Content-Type %r" % main,
                            code="invalid_content_type")
        if kind == "remix":
            return JsonSink(rec)
        if kind == "control" and req.method == "POST":
            return JsonSink(rec, required=False)
        return NullSink()

    def check_auth(self, req):
        auth = hget(req.headers, "authorization")
        if not auth:
            raise HTTPError(401, "You didn't provide an API key. You need to provide "
                            "your API key in an Authorization header using Bearer auth "
                            "(i.e. Authorization: Bearer YOUR_KEY).",
                            code="invalid_api_key")
        v = auth[0]
        ok = len(auth) == 1 and v.startswith("Bearer ") and \
            any([hmac.compare_digest(v[7:].encode("latin-1"), k) for k in self.stub.keys])
        if not ok:
            # never echo the key
            raise HTTPError(401, "Incorrect API key provided.", code="invalid_api_key")

    def fault_response(self, fault, req=None):
        mode = fault["mode"]
        auth = hget(req.headers, "authorization") if req is not None else []
        key = auth[0][7:] if auth and auth[0].startswith("Bearer ") else ""
        if mode in ("401", "407"):
            # a provider that echoes the credential it refuses, in the body and
            # in the challenge
            challenge = "WWW-Authenticate" if mode == "401" else "Proxy-Authenticate"
            return (int(mode), [("Content-Type", "application/json"),
                                (challenge, 'Bearer realm="video", error="invalid_token", '
                                            'error_description="key %s is revoked"' % key)],
                    error_json("Incorrect API key provided: %s (stub fault)." % key,
                               "invalid_request_error", None, "invalid_api_key"))
        if mode == "echo_key":
            in_body = fault.get("in_body", True)
            return (int(fault.get("status", 400)),
                    [("Content-Type", "application/json"),
                     ("X-Echo-Authorization", "Bearer " + key)],
                    error_json("Bad request%s (stub fault)."
                               % (" from key " + key if in_body else ""),
                               "invalid_request_error", None, None))
        if mode in INVALID_ANSWERS:
            body = json.dumps({"object": "list", "data": []}).encode()
            hd = [("Content-Type", "application/json")]
            if mode == "two_content_lengths":     # send() adds the true one after it
                hd.append(("Content-Length", str(len(body) + 7)))
            elif mode == "nul_in_header":
                hd.append(("X-Trace", "a\x00b"))
            else:
                hd.append(("X-Huge", "h" * int(fault.get("header_bytes", 32768))))
            return 200, hd, body
        if mode == "429":
            ra = fault.get("retry_after", 1)
            return (429, [("Content-Type", "application/json"),
                          ("Retry-After", str(ra))],
                    error_json("Rate limit reached (stub fault).", "rate_limit_error",
                               None, "rate_limit_exceeded"))
        return (500, [("Content-Type", "application/json")],
                error_json("The server had an error while processing your request "
                           "(stub fault).", "server_error", None, None))

    async def dispatch(self, req, route, rec, body_obj):
        stub = self.stub
        kind = route[0]
        auth = hget(req.headers, "authorization")
        acct = auth[0][7:] if auth and auth[0].startswith("Bearer ") else None
        if kind == "control":
            return await self.control(req, route[1], body_obj)
        if kind == "404":
            raise HTTPError(404, "Invalid URL (%s %s)" % (req.method, req.path),
                            code="not_found")
        if kind == "405":
            raise HTTPError(405, "Method %s not allowed" % req.method,
                            headers=[("Allow", route[1])])
        if kind == "create":
            if rec["multipart"] is not None:
                fields = {}
                for p in rec["parts"]:
                    if p["filename"] is None and p["name"] not in fields:
                        fields[p["name"]] = p["value"]
            else:
                if not isinstance(body_obj, dict):
                    raise HTTPError(400, "JSON body must be an object", code="invalid_json")
                fields = body_obj
            vals = {}
            for name in ("model", "prompt", "seconds", "size"):
                v = fields.get(name)
                if isinstance(v, (int, float)) and not isinstance(v, bool) \
                        and name == "seconds":
                    v = str(v)
                if not isinstance(v, str) or v == "":
                    raise HTTPError(400, "Missing required parameter: '%s'." % name,
                                    param=name, code="missing_required_parameter")
                vals[name] = v
            job = stub.new_job(vals["model"], vals["seconds"], vals["size"], vals["prompt"],
                               account=acct)
            return json_response(200, stub.job_object(job, fresh=True))
        if kind in ("edit", "extend"):
            return self.edit_or_extend(kind, rec, body_obj, acct)
        if kind == "character_create":
            return self.character_create(rec, acct)
        if kind == "character":
            c = stub.characters.get(route[1])
            if c is None or not stub.visible(c, acct):
                raise HTTPError(404, "Character with id '%s' not found." % route[1],
                                param="character_id", code="not_found")
            return json_response(200, c["object"])
        if kind == "retrieve":
            return json_response(200, stub.job_object(stub.get_job(route[1], acct)))
        if kind == "delete":
            job = stub.get_job(route[1], acct)
            del stub.jobs[job["id"]]
            return json_response(200, {"id": job["id"], "object": "video.deleted",
                                       "deleted": True})
        if kind == "remix":
            job = stub.get_job(route[1], acct)
            if not isinstance(body_obj, dict) or not isinstance(body_obj.get("prompt"), str) \
                    or body_obj["prompt"] == "":
                raise HTTPError(400, "Missing required parameter: 'prompt'.",
                                param="prompt", code="missing_required_parameter")
            nj = stub.new_job(job["model"], job["seconds"], job["size"],
                              body_obj["prompt"], remixed_from=job["id"], account=acct)
            return json_response(200, stub.job_object(nj, fresh=True))
        if kind == "content":
            variant = req.args.get("variant", "video")
            rec["variant"] = variant
            if variant not in VARIANTS:
                raise HTTPError(400, "Invalid variant %r: expected one of %s"
                                % (variant, ", ".join(VARIANTS)), param="variant",
                                code="invalid_value")
            job = stub.get_job(route[1], acct)
            size = int(stub.cfg["content_size"])
            return 200, [("Content-Type", VARIANTS[variant])], \
                ("content", job["id"], variant, size)
        if kind == "list":
            return self.list_jobs(req, acct)
        raise HTTPError(404, "Invalid URL", code="not_found")

    @staticmethod
    def form(rec, body_obj):
        """(text fields, names of file parts) of a multipart or JSON body."""
        if rec["multipart"] is None:
            if not isinstance(body_obj, dict):
                raise HTTPError(400, "JSON body must be an object", code="invalid_json")
            fields = dict(body_obj)
            v = fields.pop("video", None)
            if isinstance(v, dict) and isinstance(v.get("id"), str):
                fields["video[id]"] = v["id"]
            return fields, []
        fields, files = {}, []
        for p in rec["parts"]:
            if p["filename"] is not None:
                files.append(p["name"])
            elif p["name"] not in fields:
                fields[p["name"]] = p["value"]
        return fields, files

    def edit_or_extend(self, kind, rec, body_obj, acct):
        stub = self.stub
        fields, files = self.form(rec, body_obj)
        prompt = fields.get("prompt")
        if not isinstance(prompt, str) or prompt == "":
            raise HTTPError(400, "Missing required parameter: 'prompt'.", param="prompt",
                            code="missing_required_parameter")
        ref = fields.get("video[id]")
        if "video" in files and ref is None:
            model, base, size = "veo_3_1", "8", "16x9"
        elif ref is not None and "video" not in files:
            src = stub.get_job(ref, acct)
            model, base, size = src["model"], src["seconds"], src["size"]
        else:
            raise HTTPError(400, "Give the video as a file or as video[id], once.",
                            param="video", code="invalid_value")
        seconds = base
        if kind == "extend":
            sec = str(fields.get("seconds", ""))
            if sec not in ("4", "8", "12", "16", "20"):
                raise HTTPError(400, "Invalid 'seconds': expected 4, 8, 12, 16 or 20.",
                                param="seconds", code="invalid_value")
            seconds = str(int(base) + int(sec))
        nj = stub.new_job(model, seconds, size, prompt, account=acct)
        nj["kind"], nj["source"] = kind, ref
        return json_response(200, stub.job_object(nj, fresh=True))

    def character_create(self, rec, acct):
        stub = self.stub
        if rec["multipart"] is None:
            raise HTTPError(400, "A character is created from a multipart body.",
                            code="invalid_content_type")
        fields, files = self.form(rec, None)
        name = fields.get("name")
        if not isinstance(name, str) or name == "":
            raise HTTPError(400, "Missing required parameter: 'name'.", param="name",
                            code="missing_required_parameter")
        if files != ["video"]:
            raise HTTPError(400, "Missing required parameter: 'video'.", param="video",
                            code="missing_required_parameter")
        cid = "char_%s" % uuid.uuid4().hex
        obj = {"id": cid, "created_at": int(time.time()), "name": name}
        stub.characters[cid] = {"object": obj, "account": acct}
        return json_response(200, obj)

    def list_jobs(self, req, acct=None):
        stub = self.stub
        a = req.args
        order = a.get("order", "desc")
        if order not in ("asc", "desc"):
            raise HTTPError(400, "Invalid 'order': expected 'asc' or 'desc'",
                            param="order", code="invalid_value")
        try:
            limit = int(a.get("limit", "20"))
            if not 1 <= limit <= 100:
                raise ValueError()
        except ValueError:
            raise HTTPError(400, "Invalid 'limit': expected an integer 1..100",
                            param="limit", code="invalid_value")
        jobs = [j for j in stub.jobs.values() if stub.visible(j, acct)]
        if order == "desc":
            jobs.reverse()
        after = a.get("after")
        if after:
            ids = [j["id"] for j in jobs]
            if after not in ids:
                raise HTTPError(400, "Invalid 'after': no video with id '%s'" % after,
                                param="after", code="invalid_value")
            jobs = jobs[ids.index(after) + 1:]
        page = jobs[:limit]
        data = [stub.job_object(j) for j in page]
        return json_response(200, {"object": "list", "data": data,
                                   "first_id": data[0]["id"] if data else None,
                                   "last_id": data[-1]["id"] if data else None,
                                   "has_more": len(jobs) > limit})

    # ---------------------------------------------------------------- control
    async def control(self, req, name, body):
        stub = self.stub
        m, a = req.method, req.args

        def num(key, default, conv=float):
            try:
                return conv(a.get(key, default))
            except ValueError:
                raise HTTPError(400, "bad %s" % key, param=key)

        if name == "requests" and m == "GET":
            since = num("since", 0, int)
            return json_response(200, [r for r in stub.records if r["seq"] > since])
        if name == "reset" and m == "POST":
            stub.records.clear()
            stub.jobs.clear()
            stub.characters.clear()
            stub.faults.clear()
            if isinstance(body, dict) and body.get("config"):
                stub.cfg = dict(stub.defaults)
            stub.notify()
            return json_response(200, {"ok": True})
        if name == "fault" and m == "GET":
            return json_response(200, stub.faults)
        if name == "fault" and m == "POST":
            if not isinstance(body, dict) or body.get("mode") not in FAULT_MODES:
                raise HTTPError(400, "fault needs mode in %s" % (FAULT_MODES,), param="mode")
            f = dict(body)
            f["mode"] = str(f["mode"])
            f["count"] = int(f.get("count", 1))
            if f["count"] < 1:
                raise HTTPError(400, "count must be >= 1", param="count")
            stub.faults.append(f)
            return json_response(200, {"ok": True, "faults": stub.faults})
        if name == "config":
            if m == "POST":
                if not isinstance(body, dict):
                    raise HTTPError(400, "config needs a JSON object")
                for k, v in body.items():
                    if k not in stub.cfg:
                        raise HTTPError(400, "unknown config key %r" % k, param=k)
                    if not isinstance(v, (int, float)) or isinstance(v, bool) or v < 0:
                        raise HTTPError(400, "%s must be a number >= 0" % k, param=k)
                    stub.cfg[k] = v
            return json_response(200, stub.cfg)
        if name == "wait" and m == "GET":
            count = num("count", 1, int)
            done = a.get("done", "0") not in ("0", "", "false")
            timeout = num("timeout", 10)

            def pred():
                recs = [r for r in stub.records if not done or r["t_end"] is not None]
                return recs if len(recs) >= count else None
            r = await stub.wait_until(pred, timeout)
            if r is None:
                return json_response(408, stub.records)
            return json_response(200, stub.records)
        if name == "wait_bytes" and m == "GET":
            want = num("bytes", 1, int)
            timeout = num("timeout", 10)

            def pred():
                for r in stub.records:
                    if r["body_size"] >= want:
                        return r
                return None
            r = await stub.wait_until(pred, timeout)
            if r is None:
                return json_response(408, {"error": "timeout", "records": stub.records})
            return json_response(200, r)
        if name == "close_idle" and m == "POST":
            n = 0
            for c in list(stub.conns.values()):
                if c.idle:
                    c.writer.close()
                    n += 1
            return json_response(200, {"closed": n})
        if name == "stats" and m == "GET":
            return json_response(200, {"connections_open": len(stub.conns),
                                       "connections_total": stub.conns_total,
                                       "requests": len(stub.records),
                                       "jobs": len(stub.jobs)})
        if name == "jobs" and m == "GET":
            return json_response(200, [stub.job_object(j) for j in stub.jobs.values()])
        if name == "job" and m == "POST":
            if not isinstance(body, dict) or "id" not in body:
                raise HTTPError(400, "job needs id", param="id")
            job = stub.get_job(body["id"])
            ov = {k: body[k] for k in ("status", "progress", "error") if k in body}
            job["override"] = ov or None
            return json_response(200, stub.job_object(job))
        raise HTTPError(404, "unknown control endpoint %s %s" % (m, req.path),
                        code="not_found")

    # ---------------------------------------------------------------- writing
    async def send(self, conn, rec, status, headers, body, close=False,
                   truncate=None, chunk_delay_ms=None):
        """Write one response. body is bytes or ('content', id, variant, size)."""
        w = conn.writer
        if isinstance(body, tuple):
            size = body[3]
        else:
            size = len(body)
        lines = ["HTTP/1.1 %d %s" % (status, REASONS.get(status, "Status"))]
        names = set()
        for k, v in headers:
            lines.append("%s: %s" % (k, v))
            names.add(k.lower())
        if "date" not in names:
            lines.append("Date: %s" % time.strftime("%a, %d %b %Y %H:%M:%S GMT",
                                                      time.gmtime()))
        lines.append("Content-Length: %d" % size)
        if close and "connection" not in names:
            lines.append("Connection: close")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        if rec is not None:
            rec["status"] = status
        if truncate is not None:
            # close_after_headers: head (+ some body), then close
            w.write(head)
            if truncate > 0:
                data = body if not isinstance(body, tuple) else \
                    (content_block(body[1], body[2]) * (truncate // BLOCK_SIZE + 1))
                part = data[:min(truncate, size)]
                w.write(part)
                if rec is not None:
                    rec["sent"] = len(part)
            await w.drain()
            return
        if not isinstance(body, tuple):
            w.write(head + body)
            if rec is not None:
                rec["sent"] = len(body)
            await w.drain()
            return
        # generated content: stream with backpressure
        w.write(head)
        block = content_block(body[1], body[2])
        big = memoryview(block * (WRITE_SIZE // BLOCK_SIZE))
        step = BLOCK_SIZE if chunk_delay_ms else WRITE_SIZE
        left = size
        while left > 0:
            n = min(left, step)
            w.write(big[:n])
            left -= n
            if rec is not None:
                rec["sent"] += n
            await w.drain()
            if chunk_delay_ms:
                await asyncio.sleep(chunk_delay_ms / 1000.0)

    async def finish(self, conn, rec, status, headers, body, close=False,
                     truncate=None, chunk_delay_ms=None):
        stub = self.stub
        try:
            await self.send(conn, rec, status, headers, body, close=close,
                            truncate=truncate, chunk_delay_ms=chunk_delay_ms)
        finally:
            if rec is not None and rec.get("seq"):
                rec["t_end"] = time.monotonic()
                stub.notify()
                stub.log("%s %s%s -> %s" % (rec["method"], rec["path"],
                                            "?" + rec["query"] if rec["query"] else "",
                                            status))


# --------------------------------------------------------------------------
# main

def write_ready(path, port):
    tmp = "%s.tmp.%d" % (path, os.getpid())
    with open(tmp, "w") as f:
        f.write("%d\n" % port)
    os.rename(tmp, path)


async def amain(args):
    stub = Stub(args.key, args.content_size, args.job_seconds, verbose=args.verbose)
    server = Server(stub)
    sslctx = None
    if args.tls_cert:
        sslctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        sslctx.load_cert_chain(args.tls_cert, args.tls_key)
        sslctx.set_alpn_protocols(["http/1.1"])

        def sni_cb(sslobj, name, ctx):
            try:
                sslobj._stub_sni = name
            except Exception:
                pass
            return None
        sslctx.sni_callback = sni_cb

    loop = asyncio.get_running_loop()

    def exc_handler(loop, context):
        # TLS handshake failures from clients that reject our CA are expected
        # in tests; keep them to one line.
        exc = context.get("exception")
        msg = context.get("message")
        print("stub: %s%s" % (msg, (": %r" % exc) if exc else ""), file=sys.stderr,
              flush=True)
    loop.set_exception_handler(exc_handler)

    servers = []
    srv = await asyncio.start_server(server.handle, args.host, args.port, ssl=sslctx,
                                     limit=STREAM_LIMIT, reuse_address=True,
                                     ssl_handshake_timeout=10 if sslctx else None)
    servers.append(srv)
    port = srv.sockets[0].getsockname()[1]
    if args.dual and args.host in ("127.0.0.1", "localhost"):
        try:
            srv6 = await asyncio.start_server(server.handle, "::1", port, ssl=sslctx,
                                              limit=STREAM_LIMIT, reuse_address=True)
            servers.append(srv6)
        except OSError:
            pass
    if args.ready_file:
        write_ready(args.ready_file, port)
    print("READY %d" % port, flush=True)

    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    for s in servers:
        s.close()
    for c in list(stub.conns.values()):
        c.writer.transport.abort()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--key", required=True, action="append",
                    help="the upstream API key to require (repeat for a pool of keys)")
    ap.add_argument("--tls-cert")
    ap.add_argument("--tls-key")
    ap.add_argument("--ready-file")
    ap.add_argument("--content-size", type=int, default=1024 * 1024)
    ap.add_argument("--job-seconds", type=float, default=3.0)
    ap.add_argument("--dual", action="store_true",
                    help="also listen on ::1 (same port) so 'localhost' works either way")
    ap.add_argument("--verbose", action="store_true",
                    help="one line per request on stderr (method, path, status)")
    args = ap.parse_args(argv)
    if bool(args.tls_cert) != bool(args.tls_key):
        ap.error("--tls-cert and --tls-key go together")
    try:
        asyncio.run(amain(args))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
