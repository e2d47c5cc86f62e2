// Command pause is the test bed's pod sandbox process. It holds the pod's namespaces while the
// pod lives: it ignores its arguments, reaps the zombie children reparented to it, exits 0 on
// SIGTERM or SIGINT and otherwise sleeps.
package main

import (
	"errors"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	// SIGCHLD may coalesce and the channel may drop a signal when full; reap collects every
	// child that has exited whenever one arrives, so nothing is left behind.
	signals := make(chan os.Signal, 8)
	signal.Notify(signals, syscall.SIGCHLD, syscall.SIGTERM, syscall.SIGINT)
	reap()
	for sig := range signals {
		if sig != syscall.SIGCHLD {
			os.Exit(0)
		}
		reap()
	}
}

// reap waits for exited children without blocking until none is left.
func reap() {
	for {
		var status syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &status, syscall.WNOHANG, nil)
		if errors.Is(err, syscall.EINTR) {
			continue
		}
		if err != nil || pid <= 0 {
			return
		}
	}
}
