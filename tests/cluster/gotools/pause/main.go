// Command pause is the real node's pod sandbox process: it holds the pod's namespaces, reaps
// orphans when it is the pod's PID 1 (shareProcessNamespace), and exits on SIGINT or SIGTERM.
// Kubernetes' own pause is C (build/pause/linux/pause.c) and is published only as an image on
// registry.k8s.io, which this machine cannot reach; this is the same behaviour in Go.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	signals := make(chan os.Signal, 8)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for sig := range signals {
		if sig != syscall.SIGCHLD {
			os.Exit(0)
		}
		for {
			var status syscall.WaitStatus
			pid, err := syscall.Wait4(-1, &status, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}
