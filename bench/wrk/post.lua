-- SPDX-License-Identifier: BSD-2-Clause
-- wrk -s bench/wrk/post.lua URL -- BODYFILE [CONTENT_TYPE] [BASIC_B64]
--
-- POSTs the same body on every request, as fast as the connections go,
-- and prints one JSON line at the end for bench/bench.pl: requests,
-- seconds, non-2xx answers, socket errors, latency p50/p99 (ms).
-- No response() callback: wrk then does not parse bodies, the cheapest
-- client there is for the rate measurement.

function init(args)
    local f = assert(io.open(args[1], "rb"))
    wrk.body = f:read("*a")
    f:close()
    wrk.method = "POST"
    wrk.headers["Content-Type"] = args[2] or "text/plain"
    if args[3] and args[3] ~= "" then
        wrk.headers["Authorization"] = "Basic " .. args[3]
    end
end

function done(summary, latency, requests)
    local e = summary.errors
    io.write(string.format(
        '{"requests":%d,"seconds":%.6f,"bytes":%d,"non2xx":%d,' ..
        '"sock_errors":%d,"timeouts":%d,"p50_ms":%.3f,"p99_ms":%.3f,' ..
        '"mean_ms":%.3f,"max_ms":%.3f}\n',
        summary.requests, summary.duration / 1e6, summary.bytes, e.status,
        e.connect + e.read + e.write, e.timeout,
        latency:percentile(50) / 1000, latency:percentile(99) / 1000,
        latency.mean / 1000, latency.max / 1000))
end
