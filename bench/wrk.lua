-- wrk script of bench/run.sh. The scenario comes from the environment:
--   BENCH_KIND      get | write | login
--   BENCH_TOKEN     bearer token (get, write)
--   BENCH_RATE      > 0: requests per second in total, paced on a fixed schedule
--                   (each thread owns 1/BENCH_THREADS of it); 0: as fast as possible
--   BENCH_THREADS   wrk's -t (to split the rate between threads)
--   BENCH_MAX_REQUESTS  > 0: each thread stops after this many responses (profiling)
--   BENCH_WRITE_BASE  writes: Unix time of the first outing; every request of every
--                   thread gets its own 10 s slot after it, so no two outings overlap
-- At the end it prints one tab-separated row starting with "WRK" (see done()).

local kind = os.getenv("BENCH_KIND") or "get"
local token = os.getenv("BENCH_TOKEN") or ""
local rate = tonumber(os.getenv("BENCH_RATE") or "0")
local thread_count = tonumber(os.getenv("BENCH_THREADS") or "1")
local write_base = tonumber(os.getenv("BENCH_WRITE_BASE") or "2000000000")
local max_requests = tonumber(os.getenv("BENCH_MAX_REQUESTS") or "0")

local threads = {}

function setup(thread)
  thread:set("thread_index", #threads)
  table.insert(threads, thread)
end

if token ~= "" then
  wrk.headers["Authorization"] = "Bearer " .. token
end

if kind == "login" then
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  wrk.body = '{"student_id":"demostudent","student_pw":"demo-student-pw"}'
elseif kind == "write" then
  wrk.headers["Content-Type"] = "application/json"
  local sent = 0
  function request()
    sent = sent + 1
    -- thread_index is set by setup() before the thread runs.
    local start = write_base + ((thread_index or 0) * 10000000 + sent) * 10
    local body = string.format(
      '{"start_time":%d,"end_time":%d,"place":"서점","reason":"교재 구입","situation":"normal"}',
      start, start + 5)
    return wrk.format("POST", "/v1/outings", nil, body)
  end
end

if rate > 0 then
  -- wrk asks delay() how long to wait before a connection's next request. Each call
  -- takes the next slot of the thread's schedule (one every `interval` ms, whichever
  -- connection is free), so the rate holds whatever the latency, as long as the
  -- connections suffice; a schedule more than a second behind restarts from now.
  local ffi = require("ffi")
  ffi.cdef [[
    typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
    int clock_gettime(int clock_id, bench_timespec *tp);
  ]]
  local CLOCK_MONOTONIC = 1
  local now_ts = ffi.new("bench_timespec")
  local function now_ms()
    ffi.C.clock_gettime(CLOCK_MONOTONIC, now_ts)
    return tonumber(now_ts.tv_sec) * 1000 + tonumber(now_ts.tv_nsec) / 1e6
  end
  local interval = thread_count * 1000 / rate
  local next_due = nil

  function delay()
    local now = now_ms()
    if next_due == nil or next_due < now - 1000 then
      next_due = now
    end
    local due = next_due
    next_due = next_due + interval
    if due <= now then
      return 0
    end
    return math.floor(due - now + 0.5)
  end
end

if max_requests > 0 then
  local received = 0
  function response(status, headers, body)
    received = received + 1
    if received >= max_requests then
      wrk.thread:stop()
    end
  end
end

-- WRK requests seconds rps p50_us p90_us p99_us max_us socket_errors non_2xx
function done(summary, latency, requests)
  local seconds = summary.duration / 1e6
  local e = summary.errors
  io.write(string.format("WRK\t%d\t%.3f\t%.1f\t%d\t%d\t%d\t%d\t%d\t%d\n",
    summary.requests, seconds, summary.requests / seconds,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
    e.connect + e.read + e.write + e.timeout, e.status))
end
