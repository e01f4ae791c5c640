// Package helm only anchors the wrapper module that pins the helm build.
package helm
