-- wrk script for bench/admission.py: POST AdmissionReviews from a JSON-lines file, in turn.
-- Usage: wrk ... -s bench/wrk_reviews.lua URL -- REVIEWS.jsonl
local bodies = {}
local index = 0

function init(args)
  local path = args[1]
  for line in io.lines(path) do
    if #line > 0 then bodies[#bodies + 1] = line end
  end
  -- Each thread starts at a different place in the stream.
  index = math.random(#bodies) - 1
end

function request()
  index = (index % #bodies) + 1
  return wrk.format("POST", nil, {["Content-Type"] = "application/json"}, bodies[index])
end
