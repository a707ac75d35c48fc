// sdk_e2e.mjs - drive the gateway with the official OpenAI Node SDK (openai, pinned in
// package-lock.json), exactly as a team member would: only baseURL and apiKey change.
//
// Run by tests/integration/test_sdk.py, which starts the stub upstream and the gateway,
// makes the input files and checks what the stub received. By hand:
//
//   BASE_URL=http://127.0.0.1:8080 API_KEY=sk-vgw-... FRAME_PATH=frame.png \
//   STREAM_PATH=big.bin node tests/sdk/sdk_e2e.mjs
//
// Environment:
//   BASE_URL      the gateway (or the stub) without /v1                        (required)
//   API_KEY       a team key                                                   (required)
//   FRAME_PATH    a small image, uploaded as a Buffer with toFile()            (required)
//   STREAM_PATH   a file of a few MB, uploaded with fs.createReadStream()      (required)
//   PROMPT        the prompt (default 让牛快乐的跳科目三)
//   MODEL         the model asked for (default veo3.1)
//   STEPS         comma-separated steps to run (default: all, in the order below)
//   POLL_MS       retrieve interval (default 100); DEADLINE_MS for a job (default 15000)
//   WRONG_KEY     the key of the auth_error step (default a made-up one)
//   OTHER_KEY     another team key, for the not_owned step (run only when asked for)
//
// Output: one JSON line per step on stdout, {"step": NAME, "ok": bool, ...results}; a step
// that throws prints {"step", "ok": false, "error": {name, status, message, code, type,
// param}}. Steps that need an earlier step's job are reported ok:false with
// "skipped_because". Exit status 0 when every step was ok, 1 otherwise, 2 on bad usage.

import OpenAI, { toFile } from "openai";
import crypto from "node:crypto";
import fs from "node:fs";
import { setTimeout as sleep } from "node:timers/promises";

const env = process.env;
for (const name of ["BASE_URL", "API_KEY", "FRAME_PATH", "STREAM_PATH"]) {
    if (!env[name]) {
        console.error(`sdk_e2e.mjs: set ${name}`);
        process.exit(2);
    }
}
const BASE_URL = env.BASE_URL.replace(/\/+$/, "");
const PROMPT = env.PROMPT || "让牛快乐的跳科目三";
const MODEL = env.MODEL || "veo3.1";
const POLL_MS = Number(env.POLL_MS || 100);
const DEADLINE_MS = Number(env.DEADLINE_MS || 15000);
const ALL_STEPS = ["create_buffer", "create_stream", "create_late_model", "bad_request",
                   "retrieve", "download", "download_thumbnail", "list", "list_paged",
                   "remix", "edit_ref", "edit_stream", "extend_ref", "extend_stream",
                   "character_create", "character_get", "delete", "auth_error"];
// rate_limited and not_owned only when asked for
const KNOWN_STEPS = [...ALL_STEPS, "rate_limited", "not_owned"];
const STEPS = env.STEPS ? env.STEPS.split(",").map((s) => s.trim()).filter(Boolean) : ALL_STEPS;
for (const s of STEPS) {
    if (!KNOWN_STEPS.includes(s)) {
        console.error(`sdk_e2e.mjs: unknown step ${s} (known: ${KNOWN_STEPS.join(", ")})`);
        process.exit(2);
    }
}

// The documented client: nothing but baseURL and apiKey.
const client = new OpenAI({ baseURL: BASE_URL + "/v1", apiKey: env.API_KEY });

const sha256 = (buf) => crypto.createHash("sha256").update(buf).digest("hex");
const jobSummary = (j) => ({ id: j.id, object: j.object, model: j.model, status: j.status,
                             progress: j.progress, seconds: j.seconds, size: j.size,
                             created_at: j.created_at });
const errorSummary = (e) => ({ name: e?.constructor?.name ?? typeof e, status: e?.status ?? null,
                               message: String(e?.message ?? e), code: e?.code ?? null,
                               type: e?.type ?? null, param: e?.param ?? null,
                               request_id: e?.requestID ?? null,
                               cause: causes(e) });
// The chain under an APIConnectionError: "fetch failed" <- "other side closed" (UND_ERR_SOCKET)...
function causes(e) {
    const out = [];
    for (let c = e?.cause; c && out.length < 5; c = c.cause)
        out.push([c.code, c.message].filter(Boolean).join(": ") || String(c));
    return out.length ? out : null;
}

const ids = {};          // step name -> job id
let failed = 0;

function emit(obj) {
    if (!obj.ok)
        failed++;
    process.stdout.write(JSON.stringify(obj) + "\n");
}

async function step(name, fn) {
    if (!STEPS.includes(name))
        return;
    const t0 = performance.now();
    try {
        const res = await fn();
        emit({ step: name, ok: true, ms: Math.round(performance.now() - t0), ...res });
    } catch (e) {
        if (e && e.skipped)
            emit({ step: name, ok: false, skipped_because: e.skipped });
        else
            emit({ step: name, ok: false, ms: Math.round(performance.now() - t0),
                   error: errorSummary(e), stack: String(e?.stack ?? "").split("\n").slice(0, 6) });
    }
}

function need(name) {
    if (!ids[name])
        throw { skipped: `no job from ${name}` };
    return ids[name];
}

// What a step expects to fail: returns the error's summary, throws if it did not fail.
async function expectError(fn, cls) {
    try {
        const r = await fn();
        throw new Error(`expected ${cls.name}, got a result: ${JSON.stringify(r).slice(0, 300)}`);
    } catch (e) {
        if (!(e instanceof cls))
            throw e;
        return { ...errorSummary(e), error_body: e.error ?? null };
    }
}

const frame = fs.readFileSync(env.FRAME_PATH);

// (1) input_reference as a Buffer through toFile(): the SDK sends Content-Length.
await step("create_buffer", async () => {
    const job = await client.videos.create({
        model: MODEL, prompt: PROMPT, seconds: "8", size: "16x9",
        input_reference: await toFile(frame, "frame.png", { type: "image/png" }),
    });
    ids.create_buffer = job.id;
    return { job: jobSummary(job), sent_sha256: sha256(frame), sent_size: frame.length };
});

// (2) input_reference as fs.createReadStream(): the SDK streams it, chunked, no Content-Length.
await step("create_stream", async () => {
    const size = fs.statSync(env.STREAM_PATH).size;
    const job = await client.videos.create({
        model: MODEL, prompt: PROMPT, seconds: "8", size: "16x9",
        input_reference: fs.createReadStream(env.STREAM_PATH),
    });
    ids.create_stream = job.id;
    return { job: jobSummary(job), sent_size: size };
});

// (2b) the file before model (key order is part order): model arrives after the file.
await step("create_late_model", async () => {
    const job = await client.videos.create({
        input_reference: fs.createReadStream(env.STREAM_PATH),
        prompt: "a cow dancing", seconds: "4", size: "1280x720", model: MODEL,
    });
    ids.create_late_model = job.id;
    return { job: jobSummary(job) };
});

// (2c) a request the gateway refuses itself (seconds not in the catalog) while the SDK is
// still streaming the file: BadRequestError, not a connection error.
await step("bad_request", async () => {
    return await expectError(() => client.videos.create({
        model: MODEL, prompt: PROMPT, seconds: "7", size: "16x9",
        input_reference: fs.createReadStream(env.STREAM_PATH),
    }), OpenAI.BadRequestError);
});

// (3) retrieve until completed.
await step("retrieve", async () => {
    const out = {};
    for (const name of ["create_buffer", "create_stream"]) {
        const id = need(name);
        const seen = [];
        const deadline = performance.now() + DEADLINE_MS;
        let job;
        for (;;) {
            job = await client.videos.retrieve(id);
            if (seen.at(-1) !== job.status)
                seen.push(job.status);
            if (job.status === "completed" || job.status === "failed")
                break;
            if (performance.now() > deadline)
                throw new Error(`${id} still ${job.status} after ${DEADLINE_MS} ms`);
            await sleep(POLL_MS);
        }
        if (job.status !== "completed")
            throw new Error(`${id} ended ${job.status}: ${JSON.stringify(job.error ?? null)}`);
        out[name] = { ...jobSummary(job), statuses: seen };
    }
    return { jobs: out };
});

async function hashResponse(resp) {
    const h = crypto.createHash("sha256");
    let n = 0;
    for await (const chunk of resp.body) {
        h.update(chunk);
        n += chunk.length;
    }
    return { status: resp.status, content_type: resp.headers.get("content-type"),
             content_length: resp.headers.get("content-length"),
             transfer_encoding: resp.headers.get("transfer-encoding"),
             request_id: resp.headers.get("x-request-id"), size: n, sha256: h.digest("hex") };
}

// (4) download the MP4 (streamed through, hashed as it arrives).
await step("download", async () => {
    const id = need("create_buffer");
    const resp = await client.videos.downloadContent(id);
    return { id, ...(await hashResponse(resp)) };
});

await step("download_thumbnail", async () => {
    const id = need("create_stream");
    const resp = await client.videos.downloadContent(id, { variant: "thumbnail" });
    return { id, variant: "thumbnail", ...(await hashResponse(resp)) };
});

// (5) list: the first page, then every page one item at a time (the SDK follows last_id).
await step("list", async () => {
    const page = await client.videos.list();
    return { ids: page.data.map((j) => j.id), has_more: page.has_more };
});

await step("list_paged", async () => {
    const all = [];
    for await (const j of client.videos.list({ limit: 1, order: "asc" }))
        all.push(j.id);
    return { ids: all };
});

// (7) remix: JSON {"prompt"} to /videos/{id}/remix.
await step("remix", async () => {
    const id = need("create_buffer");
    const job = await client.videos.remix(id, { prompt: "让牛更快乐地跳科目三" });
    ids.remix = job.id;
    return { source: id, job: jobSummary(job) };
});

// (7b) edit and extend (issue 9): the SDK always sends a form; the source video as a
// reference (video[id]) to a job of this key, or as a file streamed from disk.
await step("edit_ref", async () => {
    const id = need("create_buffer");
    const job = await client.videos.edit({ prompt: "让牛跳得更慢", video: { id } });
    ids.edit_ref = job.id;
    return { source: id, job: jobSummary(job) };
});

await step("edit_stream", async () => {
    const job = await client.videos.edit({ prompt: "a calmer cow",
                                           video: fs.createReadStream(env.STREAM_PATH) });
    ids.edit_stream = job.id;
    return { job: jobSummary(job) };
});

await step("extend_ref", async () => {
    const id = need("create_buffer");
    const job = await client.videos.extend({ prompt: "the cow bows", seconds: "4",
                                             video: { id } });
    ids.extend_ref = job.id;
    return { source: id, job: jobSummary(job) };
});

await step("extend_stream", async () => {
    const job = await client.videos.extend({ prompt: "and again", seconds: "8",
                                             video: fs.createReadStream(env.STREAM_PATH) });
    ids.extend_stream = job.id;
    return { job: jobSummary(job) };
});

// (7c) characters: a name and a video file (streamed), then read back.
await step("character_create", async () => {
    const c = await client.videos.createCharacter({
        name: "Moo", video: fs.createReadStream(env.STREAM_PATH) });
    ids.character = c.id;
    return { character: c };
});

await step("character_get", async () => {
    if (!ids.character)
        throw { skipped: "no character from character_create" };
    const c = await client.videos.getCharacter(ids.character);
    return { character: c };
});

// (7d) another team key names this key's video and character: NotFoundError, both.
await step("not_owned", async () => {
    const id = need("create_buffer");
    if (!ids.character)
        throw { skipped: "no character from character_create" };
    const other = new OpenAI({ baseURL: BASE_URL + "/v1", apiKey: env.OTHER_KEY });
    const edit = await expectError(() => other.videos.edit({ prompt: "x", video: { id } }),
                                   OpenAI.NotFoundError);
    const extend = await expectError(() => other.videos.extend({ prompt: "x", seconds: "4",
                                                                 video: { id } }),
                                     OpenAI.NotFoundError);
    const character = await expectError(() => other.videos.getCharacter(ids.character),
                                        OpenAI.NotFoundError);
    return { edit, extend, character };
});

// (6) delete every job made here.
await step("delete", async () => {
    const out = [];
    for (const name of ["create_buffer", "create_stream", "create_late_model", "remix",
                        "edit_ref", "edit_stream", "extend_ref", "extend_stream"]) {
        if (!ids[name])
            continue;
        const r = await client.videos.delete(ids[name]);
        out.push({ id: r.id, object: r.object, deleted: r.deleted });
    }
    if (out.length === 0)
        need("create_buffer");
    const after = await client.videos.list();
    return { deleted: out, listed_after: after.data.map((j) => j.id) };
});

// (8) a wrong key: AuthenticationError (401) carrying the gateway's OpenAI error.
await step("auth_error", async () => {
    const bad = new OpenAI({ baseURL: BASE_URL + "/v1",
                             apiKey: env.WRONG_KEY || "sk-vgw-not-a-team-key-0123456789" });
    const retrieve = await expectError(() => bad.videos.retrieve("video_does_not_matter"),
                                       OpenAI.AuthenticationError);
    // refused from the request head while the SDK streams a few MB after it
    const upload = await expectError(() => bad.videos.create({
        model: MODEL, prompt: PROMPT, seconds: "8", size: "16x9",
        input_reference: fs.createReadStream(env.STREAM_PATH),
    }), OpenAI.AuthenticationError);
    return { ...retrieve, upload };
});

// (9) a key over its creates per minute (rpm 60, burst 1 in the test): the gateway's
// 429 carries retry-after-ms and Retry-After, and the SDK's own retry waits for it
// and succeeds - nothing in the client code deals with rate limits.
await step("rate_limited", async () => {
    const t0 = Date.now();
    const first = await client.videos.create({ model: MODEL, prompt: PROMPT, seconds: "8",
                                               size: "16x9" });
    const t1 = Date.now();
    const { data: second, response } = await client.videos.create({
        model: MODEL, prompt: PROMPT, seconds: "8", size: "16x9" }).withResponse();
    const t2 = Date.now();
    return { first: first.id, second: second.id, first_ms: t1 - t0, second_ms: t2 - t1,
             limit: response.headers.get("x-ratelimit-limit-requests") };
});

process.exit(failed ? 1 : 0);
