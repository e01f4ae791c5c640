-- One-row OIP V2 request (14 features, one missing value as null), with a sticky key header.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["X-User-Id"] = "customer-42"
wrk.body = '{"inputs":[{"name":"input","datatype":"FP32","shape":[1,14],"data":[2,35,1,4,6,20,8,17,5,107,9,null,2,1]}]}'
