// Package kube only anchors the wrapper module; the binaries are built with
// `go build k8s.io/kubernetes/cmd/<name>` from this directory.
package kube
