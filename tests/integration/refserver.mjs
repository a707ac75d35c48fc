// refserver.mjs - the reference HTTP/1.1 server of test_differential.py.
//
//     node refserver.mjs PORT          (PORT 0: any free port)
//
// Node's built-in `http` server, whose llhttp parser is strict by default
// (insecureHTTPParser is never set); no npm packages. It listens on 127.0.0.1
// and prints one readiness line, `READY <port>`, on stdout.
//
// What it framed is told on the connection itself, in order:
//
//  - every request it frames completely (head and body) is answered 200 with a
//    JSON body describing it (conn numbers connections from 1, n the requests
//    of one connection from 1; body is the decoded body, base64):
//        {"ref":"request","conn":C,"n":N,"method":"POST","url":"/v1/videos?x",
//         "version":"1.1","headers":[name, value, ...],"trailers":[...],
//         "body":"<base64>"}
//    The same JSON, base64, is in the header X-Ref-Record (the only copy in an
//    answer to HEAD). Node's keep-alive decision stands (HTTP/1.0 without
//    keep-alive closes).
//  - when llhttp refuses the bytes (clientError), the answers of the requests
//    framed before are sent first, then 400 (431 for a head too large) with
//        {"ref":"error","conn":C,"code":"HPE_...","reason":"...","bytes":B}
//    and the connection is closed.
//  - an HTTP/1.1 request without Host, or any request with more than one Host
//    line, is refused the same way with code "HOST" (RFC 9112 section 3.2; Node's
//    own requireHostHeader is turned off so that the answer has this shape).
//  - CONNECT is not tunnelled: 405 with code "CONNECT", then close.
//
// Every object is also written as one JSON line on stdout. The server keeps a
// half-closed connection open until its answers are written, so a client can
// send everything, shutdown(SHUT_WR) and read to EOF: a message that is still
// unfinished at the client's EOF is reported as an error (HPE_INVALID_EOF_STATE)
// after the answers to the messages framed before it.

import http from "node:http";

const port = Number.parseInt(process.argv[2] ?? "0", 10);
if (!Number.isInteger(port) || port < 0 || port > 65535) {
  process.stderr.write("usage: node refserver.mjs PORT\n");
  process.exit(2);
}

let nconn = 0;
const conns = new WeakMap();    // socket -> {id, n, open: the exchanges not answered yet}

function connOf(socket) {
  let c = conns.get(socket);
  if (c === undefined) {
    c = { id: ++nconn, n: 0, open: new Set() };
    conns.set(socket, c);
  }
  return c;
}

function emit(obj) {
  process.stdout.write(JSON.stringify(obj) + "\n");
}

function answer(res, status, obj) {
  const body = Buffer.from(JSON.stringify(obj));
  res.writeHead(status, { "Content-Type": "application/json", "Content-Length": body.length,
                          "X-Ref-Record": body.toString("base64") });
  res.end(body);
}

function hostProblem(req) {
  let n = 0;
  for (let i = 0; i < req.rawHeaders.length; i += 2) {
    if (req.rawHeaders[i].toLowerCase() === "host") n++;
  }
  if (n > 1) return "more than one Host field line";
  if (n === 0 && req.httpVersionMajor === 1 && req.httpVersionMinor >= 1)
    return "HTTP/1.1 request without Host";
  return null;
}

const server = http.createServer({ requireHostHeader: false }, (req, res) => {
  const c = connOf(req.socket);
  const n = ++c.n;
  const x = { req, res };
  c.open.add(x);
  res.on("finish", () => c.open.delete(x));
  res.on("close", () => c.open.delete(x));
  const hp = hostProblem(req);
  if (hp !== null) {
    const rec = { ref: "error", conn: c.id, code: "HOST", reason: hp, bytes: null };
    emit(rec);
    res.shouldKeepAlive = false;    // close after it: what follows is never answered
    answer(res, 400, rec);
    return;
  }
  const parts = [];
  req.on("data", (d) => parts.push(d));
  req.on("end", () => {
    const rec = {
      ref: "request", conn: c.id, n, method: req.method, url: req.url,
      version: req.httpVersion, headers: req.rawHeaders, trailers: req.rawTrailers,
      body: Buffer.concat(parts).toString("base64"),
    };
    emit(rec);
    answer(res, 200, rec);
  });
});

// Answer in order on a half-closed connection (Node's default would abort the
// requests still being answered when the client's FIN arrives).
server.httpAllowHalfOpen = true;

server.on("connection", (socket) => { connOf(socket); });

function closeWith(socket, status, reason, rec) {
  const body = JSON.stringify(rec);
  socket.end("HTTP/1.1 " + status + " " + reason + "\r\nContent-Type: application/json\r\n" +
             "Connection: close\r\nContent-Length: " + Buffer.byteLength(body) + "\r\n\r\n" +
             body);
}

server.on("connect", (req, socket) => {
  const c = connOf(socket);
  const rec = { ref: "error", conn: c.id, code: "CONNECT", reason: "CONNECT is not tunnelled",
                url: req.url, bytes: null };
  emit(rec);
  closeWith(socket, 405, "Method Not Allowed", rec);
});

server.on("clientError", (err, socket) => {
  const c = connOf(socket);
  const rec = { ref: "error", conn: c.id, code: String(err.code || err.name),
                reason: String(err.reason || err.message || ""),
                bytes: typeof err.bytesParsed === "number" ? err.bytesParsed : null };
  emit(rec);
  if (!socket.writable || socket.destroyed || err.code === "ECONNRESET") {
    socket.destroy();
    return;
  }
  const status = err.code === "HPE_HEADER_OVERFLOW" ? 431 : 400;
  // Requests framed before the error are answered first: their 'end' events
  // (and so their answers) come a tick or two after the parser moved on.
  let ticks = 0;
  const flush = () => {
    const waiting = [...c.open].filter((x) => x.req.complete && !x.res.writableFinished);
    if (waiting.length > 0 && ticks++ < 1000 && !socket.destroyed) {
      setImmediate(flush);
      return;
    }
    if (socket.destroyed || !socket.writable) return;   // closed after a framed request
    closeWith(socket, status, "Refused", rec);
  };
  setImmediate(flush);
});

// A client's misbehaviour must never take the reference down mid-run.
process.on("uncaughtException", (err) => {
  process.stderr.write("refserver: " + (err && err.stack ? err.stack : String(err)) + "\n");
});

for (const sig of ["SIGTERM", "SIGINT"]) {
  process.on(sig, () => {
    server.close();
    server.closeAllConnections();
    process.exit(0);
  });
}

server.listen(port, "127.0.0.1", () => {
  process.stdout.write("READY " + server.address().port + "\n");
});
