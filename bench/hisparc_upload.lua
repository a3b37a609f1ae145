-- wrk script: POST /upload bodies from BODIES/b0.txt .. b{NBODIES-1}.txt (each the form
-- fields after station_id: "&password=...&checksum=...&data=..."), sent for NSTATIONS
-- stations numbered from FIRST, the station changing fastest: NBODIES x NSTATIONS distinct
-- requests, so every event is new until they wrap.  Counts answers other than "100".
local dir, n = os.getenv("BODIES"), tonumber(os.getenv("NBODIES"))
local stations, first = tonumber(os.getenv("NSTATIONS")), tonumber(os.getenv("FIRST"))
local off = tonumber(os.getenv("OFFSET") or "0")
local bodies, k, bad = {}, 0, 0
for i = 0, n - 1 do
  local f = io.open(dir .. "/b" .. i .. ".txt", "r"); bodies[i + 1] = f:read("*all"); f:close()
end
local headers = { ["Content-Type"] = "application/x-www-form-urlencoded" }
request = function()
  local j = off + k
  k = k + 1
  local body = "station_id=" .. (first + j % stations) .. bodies[(math.floor(j / stations) % n) + 1]
  return wrk.format("POST", "/upload", headers, body)
end
response = function(status, hdrs, body)
  if body ~= "100" then
    bad = bad + 1
    if bad <= 3 then io.stderr:write("not 100: " .. status .. " " .. string.sub(body or "", 1, 200) .. "\n") end
  end
end
done = function(summary, latency, requests)
  io.write(string.format("BAD %d\n", bad))
end
