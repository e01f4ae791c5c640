// Package helmunittest only anchors the wrapper module that pins the helm-unittest plugin build.
package helmunittest
