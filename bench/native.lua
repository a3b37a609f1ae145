-- From ../shared/bench/ (the project's ceilings), unchanged; run by bench/ingest.py.
-- wrk script: METHOD (POST|GET), URLPATH, TEMPLATE (body with '~~~~~~~~~' nanosecond holes, filled
-- per request from a counter + OFFSET), KEY (Bearer key, optional). Counts non-200 answers.
local method, urlpath, key = os.getenv("METHOD") or "POST", os.getenv("URLPATH"), os.getenv("KEY")
local off = tonumber(os.getenv("OFFSET") or "0")
local segs, k, bad = {}, 0, 0
local tp = os.getenv("TEMPLATE")
if tp and tp ~= "" then
  local f = io.open(tp, "r"); local t = f:read("*all"); f:close()
  for s in (t .. "~~~~~~~~~"):gmatch("(.-)~~~~~~~~~") do segs[#segs + 1] = s end
end
local headers = { ["Content-Type"] = "application/json" }
if key and key ~= "" then headers["Authorization"] = "Bearer " .. key end
request = function()
  k = k + 1
  if #segs == 0 then return wrk.format(method, urlpath, headers, nil) end
  local ns = string.format("%09d", (off + k) % 1000000000)
  local parts, n = {}, #segs
  for i = 1, n - 1 do parts[2 * i - 1] = segs[i]; parts[2 * i] = ns end
  parts[2 * n - 1] = segs[n]
  return wrk.format(method, urlpath, headers, table.concat(parts))
end
response = function(status, hdrs, body)
  if status ~= 200 then
    bad = bad + 1
    if bad <= 3 then io.stderr:write("non-200: " .. status .. " " .. string.sub(body or "", 1, 200) .. "\n") end
  end
end
done = function(summary, latency, requests)
  io.write(string.format("BAD %d\n", bad))
end
