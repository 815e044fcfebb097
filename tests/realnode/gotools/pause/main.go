// Command pause is the sandbox process of every pod on the real-node tier: it holds the pod's
// namespaces open, reaps orphaned children (it is PID 1 when the pod shares its PID namespace)
// and exits on SIGINT/SIGTERM. It stands in for registry.k8s.io/pause, which the tier never pulls.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	signals := make(chan os.Signal, 4)
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
