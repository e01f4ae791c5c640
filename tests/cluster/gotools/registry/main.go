// Package registry only anchors the wrapper module that pins the CNCF distribution registry build.
package registry
