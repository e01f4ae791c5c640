// The real node's pod sandbox program (standard library only).
module modeldeploy.io/testcluster/pause

go 1.26.0
