// Command pause is the sandbox ("pause") container of the e2e node's pods: it holds the pod's namespaces
// open, reaps any child that ends up with it, and exits 0 on SIGINT or SIGTERM. build.sh builds it
// statically and scripts/image.sh packs it as registry.local/pause, the sandbox_image of the node's
// containerd (the node has no registry to pull the usual one from).
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
