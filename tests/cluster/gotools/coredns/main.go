// CoreDNS with the plugins the local cluster's Corefile uses (realnode.COREFILE: errors, health,
// ready, kubernetes, cache) and no others. Upstream's main links every plugin in core/plugin, with
// the AWS, Azure and Google Cloud SDKs of route53, azure and clouddns: its cold build took 285 s of
// the install (CI, 2026-12-03). The directive order stays upstream's (core/dnsserver/zdirectives.go):
// a Corefile directive that is not compiled in fails at startup with "unknown directive".
package main

import (
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/ready"
)

func main() {
	coremain.Run()
}
