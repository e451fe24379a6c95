//go:build unix

package epaxos

import (
	"syscall"
	"time"
)

// cpuTime is the CPU time (user + system, all threads) this process has used, so that
// benchmark throughput can be reported independently of other load on the machine.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
