-- wrk script (the project's own copy of ../shared/bench/post.lua, for payloads
-- from `leadscore demo --batch 1`): POST rotating payloads read from a JSON
-- lines file, the first contact id of every request rewritten to a fresh number
-- so that no request is a duplicate of another however long the run.
--   PAYLOADS=file.jsonl wrk -s benches/http/post-unique.lua URL
local payloads, i, n, base = {}, 0, 0, 0
local threads = 0

setup = function(thread)
  threads = threads + 1
  thread:set("tid", threads)
end

init = function(args)
  local path = os.getenv("PAYLOADS") or "payloads.jsonl"
  for line in io.lines(path) do payloads[#payloads + 1] = line end
  local t = tonumber(tid) or 1
  i = (t * 7919) % #payloads
  base = (os.time() % 100000) * 100000000 + t * 10000000
end

request = function()
  i = i % #payloads + 1
  n = n + 1
  local body = string.gsub(payloads[i], '"id":%s*%d+', '"id":' .. (base + n), 1)
  return wrk.format("POST", nil, {["Content-Type"] = "application/json"}, body)
end
