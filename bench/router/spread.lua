-- Spread wrk's threads over router replicas, one port each, the way a Kubernetes Service spreads
-- connections over router pods: thread i sends all its connections to port i mod n.
--   WRK_PORTS="18101,18102"  the replicas' ports on 127.0.0.1
--   WRK_BODY_SCRIPT=path     the script that sets the request (v2_one_row.lua, bench/serving/body.lua)
-- wrk -t must be a multiple of the number of ports, so every replica gets the same connections.
dofile(os.getenv("WRK_BODY_SCRIPT"))

local ports = {}
for port in string.gmatch(os.getenv("WRK_PORTS"), "%d+") do
  table.insert(ports, port)
end
local started = 0

function setup(thread)
  thread.addr = wrk.lookup("127.0.0.1", ports[(started % #ports) + 1])[1]
  started = started + 1
end
