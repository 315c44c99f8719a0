-- wrk script: post_body.lua's requests and figures, plus latency percentiles by HTTP status (one more
-- JSON line), so that a 503's latency is not averaged with a 200's. It times each request itself
-- (LuaJIT's FFI, CLOCK_MONOTONIC), so wrk must run one connection per thread (-t N -c N): a
-- thread's responses then come back in the order of its requests.
dofile(os.getenv("BENCH_SCRIPT_DIR") .. "/post_body.lua")
local ffi = require("ffi")
ffi.cdef([[
typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
int clock_gettime(int clock_id, bench_timespec *tp);
]])
local now = ffi.new("bench_timespec")
local function now_us()
  ffi.C.clock_gettime(1, now)
  return tonumber(now.tv_sec) * 1e6 + tonumber(now.tv_nsec) / 1e3
end

local threads = {}
setup = function(thread)
  table.insert(threads, thread)
end

-- This thread's answers as a flat list (status, microseconds, status, ...), which done() reads back
-- through thread:get: wrk copies a flat table between threads, not a nested one.
answers = {}
local started = nil
request = function()
  started = now_us()
  return wrk.format()
end
response = function(status, headers, body)
  if started ~= nil then
    table.insert(answers, status)
    table.insert(answers, now_us() - started)
    started = nil
  end
end

local summary_done = done
done = function(summary, latency, requests)
  summary_done(summary, latency, requests)
  local all = {}
  for _, thread in ipairs(threads) do
    local list = thread:get("answers")
    for i = 1, #list, 2 do
      local status = tostring(list[i])
      all[status] = all[status] or {}
      table.insert(all[status], list[i + 1])
    end
  end
  local parts = {}
  for status, values in pairs(all) do
    table.sort(values)
    local function at(q)
      return values[math.max(1, math.ceil(#values * q))]
    end
    table.insert(parts, string.format('"%s": {"count": %d, "p50": %d, "p90": %d, "p99": %d}',
      status, #values, at(0.5), at(0.9), at(0.99)))
  end
  io.write('{"by_status_us": {' .. table.concat(parts, ", ") .. "}}\n")
end
