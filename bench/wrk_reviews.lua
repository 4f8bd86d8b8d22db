-- wrk script for bench/admission.py: POST AdmissionReviews from a JSON-lines file, in turn.
-- Usage: wrk ... -s bench/wrk_reviews.lua URL -- REVIEWS.jsonl [repeat|distinct] [RUN-ID]
-- "distinct" replaces every JGNONCE in a line by a value unique to this run, thread and
-- request, so each request describes a workload never seen before (no cache can answer).
local bodies = {}
local index = 0
local distinct = false
local prefix = ""
local counter = 0
local threads = 0

function setup(thread)
  threads = threads + 1
  thread:set("tid", tostring(threads))
end

function init(args)
  local path = args[1]
  for line in io.lines(path) do
    if #line > 0 then bodies[#bodies + 1] = line end
  end
  distinct = args[2] == "distinct"
  prefix = (args[3] or "run") .. "-" .. (tid or "0") .. "-"
  -- Each thread starts at a different place in the stream.
  index = math.random(#bodies) - 1
end

function request()
  index = (index % #bodies) + 1
  local body = bodies[index]
  if distinct then
    counter = counter + 1
    body = string.gsub(body, "JGNONCE", prefix .. counter)
  end
  return wrk.format("POST", nil, {["Content-Type"] = "application/json"}, body)
end
