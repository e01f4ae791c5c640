-- POST the bytes of the file named by BODY_FILE; BINARY_HEADER_LENGTH, when set, is sent as
-- Inference-Header-Content-Length (the V2 binary tensor extension).
wrk.method = "POST"
local f = assert(io.open(os.getenv("BODY_FILE"), "rb"))
wrk.body = f:read("*a")
f:close()
local header_length = os.getenv("BINARY_HEADER_LENGTH")
if header_length ~= nil and header_length ~= "" then
  wrk.headers["Inference-Header-Content-Length"] = header_length
  wrk.headers["Content-Type"] = "application/octet-stream"
else
  wrk.headers["Content-Type"] = "application/json"
end
