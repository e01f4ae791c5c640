// Package etcd only anchors the wrapper module that pins the etcd build.
package etcd
