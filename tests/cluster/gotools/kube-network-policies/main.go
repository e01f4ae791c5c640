// Package kubenetworkpolicies only anchors the wrapper module that pins the kube-network-policies
// version; build-binaries.sh builds the module's own command from a patched copy (host-daemon.patch).
package kubenetworkpolicies

import _ "sigs.k8s.io/kube-network-policies/pkg/networkpolicy" // keeps the module in go.mod
