// Package kwok only anchors the wrapper module that pins the kwok build.
package kwok
