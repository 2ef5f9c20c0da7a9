-- SPDX-License-Identifier: BSD-2-Clause
-- wrk -t1 -s bench/wrk/fill.lua URL -- BODYFILE CONTENT_TYPE BASIC_B64 MAX STOP503
--
-- Fills the module's queue: POSTs BODYFILE until MAX answers were seen
-- (0: no limit), or, with STOP503 = 1, until the first 503 (the zone is
-- full); wrk's -d bounds it in time.  Prints one JSON line: answers seen,
-- 200s, 503s, other statuses, seconds.
--
-- Run it with one thread (-t1): wrk itself always waits out -d, so the
-- thread prints the counts and ends the process as soon as it is done.
-- Requests still on other connections then may or may not have been
-- queued: the bench counts what the stand-in receives, not these.

local threads = {}
local start

function setup(thread)
    table.insert(threads, thread)
end

local function line(seen, ok, full, other, secs)
    return string.format('{"seen":%d,"ok":%d,"full":%d,"other":%d,' ..
        '"seconds":%.6f}\n', seen, ok, full, other, secs)
end

function init(args)
    local f = assert(io.open(args[1], "rb"))
    wrk.body = f:read("*a")
    f:close()
    wrk.method = "POST"
    wrk.headers["Content-Type"] = args[2] or "application/json"
    if args[3] and args[3] ~= "" then
        wrk.headers["Authorization"] = "Basic " .. args[3]
    end
    max = tonumber(args[4] or "0")
    stop503 = (args[5] == "1")
    seen, ok, full, other = 0, 0, 0, 0
    start = os.time()
end

function response(status, headers, body)
    seen = seen + 1
    if status == 200 then
        ok = ok + 1
    elseif status == 503 then
        full = full + 1
    else
        other = other + 1
    end
    if (max > 0 and seen >= max) or (stop503 and full > 0) then
        io.write(line(seen, ok, full, other, os.time() - start))
        io.flush()
        os.exit(0)
    end
end

function done(summary, latency, requests)
    local s, o, f, x = 0, 0, 0, 0
    for _, t in ipairs(threads) do
        s = s + t:get("seen")
        o = o + t:get("ok")
        f = f + t:get("full")
        x = x + t:get("other")
    end
    io.write(line(s, o, f, x, summary.duration / 1e6))
end
