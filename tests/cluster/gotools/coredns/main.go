// Package coredns only anchors the wrapper module that pins the CoreDNS build
// (its main package sits at the module root, with the plugin list compiled in).
package coredns
