-- wrk script: one JSON line with what bench.py needs, after the run.
local body = os.getenv("WRK_BODY")
if body then
  wrk.method = "POST"
  wrk.body = body
  wrk.headers["Content-Type"] = "application/json"
end

done = function(summary, latency, requests)
  local p = {}
  for _, q in ipairs({50, 75, 90, 99, 99.9, 99.99}) do
    p[#p + 1] = string.format('"%s": %d', q, latency:percentile(q))
  end
  local e = summary.errors
  io.write(string.format(
    'JSON {"requests": %d, "duration_us": %d, "errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}, "latency_us": {%s}, "max_us": %d, "mean_us": %d}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    table.concat(p, ", "), latency.max, math.floor(latency.mean)))
end
