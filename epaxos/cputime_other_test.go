//go:build !unix

package epaxos

import "time"

func cpuTime() time.Duration { return 0 }
