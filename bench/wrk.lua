-- wrk script of bench/run.sh. The scenario comes from the environment:
--   BENCH_KIND      get | write | login
--   BENCH_TOKEN     bearer token (get, write)
--   BENCH_DELAY_MS  > 0: each connection waits this long before its next request
--                   (connections * 1000 / delay ≈ the target rate); 0: as fast as possible
--   BENCH_WRITE_BASE  writes: Unix time of the first outing; every request of every
--                   thread gets its own 10 s slot after it, so no two outings overlap
-- At the end it prints one tab-separated row starting with "WRK" (see done()).

local kind = os.getenv("BENCH_KIND") or "get"
local token = os.getenv("BENCH_TOKEN") or ""
local delay_ms = tonumber(os.getenv("BENCH_DELAY_MS") or "0")
local write_base = tonumber(os.getenv("BENCH_WRITE_BASE") or "2000000000")

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

if delay_ms > 0 then
  function delay()
    return delay_ms
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
