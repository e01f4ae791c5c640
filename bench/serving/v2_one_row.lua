-- One-row OIP V2 request for the churn model (14 features, one missing value as null).
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"inputs":[{"name":"input","datatype":"FP32","shape":[1,14],"data":[2,35,1,4,6,20,8,17,5,107,9,null,2,1]}]}'
