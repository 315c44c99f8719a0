-- wrk script: POST one image as multipart/form-data (part "file") on every request, and print
-- the run's figures as one JSON line for benchmarks/load.py to read.
local path = os.getenv("BENCH_IMAGE")
local file = assert(io.open(path, "rb"))
local image = file:read("*all")
file:close()

local boundary = "wrk-benchmark-boundary"
wrk.method = "POST"
wrk.headers["Content-Type"] = "multipart/form-data; boundary=" .. boundary
wrk.body = "--" .. boundary .. "\r\n"
  .. 'Content-Disposition: form-data; name="file"; filename="image.jpg"\r\n'
  .. "Content-Type: image/jpeg\r\n\r\n"
  .. image .. "\r\n--" .. boundary .. "--\r\n"

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests": %d, "duration_us": %d, "bytes": %d, '
    .. '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}, '
    .. '"latency_us": {"p50": %d, "p90": %d, "p99": %d, "mean": %.1f, "max": %d}}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.mean, latency.max))
end
