-- scripts/bench/create.lua - wrk script for scripts/bench.sh: a multipart POST /v1/videos.
--
-- Environment:
--   BENCH_KEY          team key sent as "Authorization: Bearer KEY" (nginx ignores it)
--   BENCH_IMAGE_BYTES  size of one input_reference part (0 or unset: a text-only create)
--
-- The `model` field comes first (veo3.1, an alias the gateway rewrites to veo_3_1), as SDKs
-- send it. The request is built once per thread; wrk sends it as is on every request.
-- done() prints one machine-readable line that bench.sh parses:
--   BENCH requests=N duration_us=N bytes=N p50_us=N p99_us=N non2xx=N errors=N

local key = os.getenv("BENCH_KEY") or ""
local image_bytes = tonumber(os.getenv("BENCH_IMAGE_BYTES") or "0") or 0
local boundary = "----videogwbench7MA4YWxkTrZu0gW"

local function field(name, value)
    return "--" .. boundary .. "\r\n" ..
        "Content-Disposition: form-data; name=\"" .. name .. "\"\r\n\r\n" ..
        value .. "\r\n"
end

local body = field("model", "veo3.1") ..
    field("prompt", "a cow dancing on a frozen lake at dawn, slow dolly shot") ..
    field("seconds", "8") ..
    field("size", "16x9")
if image_bytes > 0 then
    body = body .. "--" .. boundary .. "\r\n" ..
        "Content-Disposition: form-data; name=\"input_reference\"; filename=\"frame.png\"\r\n" ..
        "Content-Type: image/png\r\n\r\n" ..
        string.rep("P", image_bytes) .. "\r\n"
end
body = body .. "--" .. boundary .. "--\r\n"

wrk.method = "POST"
wrk.body = body
wrk.headers["Content-Type"] = "multipart/form-data; boundary=" .. boundary
wrk.headers["Authorization"] = "Bearer " .. key

function done(summary, latency, requests)
    local e = summary.errors
    io.write(string.format(
        "BENCH requests=%d duration_us=%d bytes=%d p50_us=%d p99_us=%d non2xx=%d errors=%d\n",
        summary.requests, summary.duration, summary.bytes,
        latency:percentile(50), latency:percentile(99),
        e.status, e.connect + e.read + e.write + e.timeout))
end
