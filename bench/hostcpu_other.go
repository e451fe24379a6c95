//go:build !linux

package bench

import "time"

type cpuSample struct {
	at         time.Time
	busy, self time.Duration
	ok         bool
}

// sampleCPU is not implemented outside Linux: results then show other_cpu 0.
func sampleCPU() cpuSample { return cpuSample{at: time.Now()} }
