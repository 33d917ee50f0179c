-- wrk script for bench/http.sh: every write carries DEPTH pipelined requests
-- (default 16, or the first argument after `--`). wrk counts the requests in the
-- string that request() returns and waits for that many responses before writing again.
local depth = 16
local batch

function init(args)
  depth = tonumber(args[1]) or depth
  local requests = {}
  for i = 1, depth do
    requests[i] = wrk.format()
  end
  batch = table.concat(requests)
end

function request()
  return batch
end
