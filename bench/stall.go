package bench

import (
	"time"
)

// stallInterval is how often the stall probe wakes up.
const stallInterval = 5 * time.Millisecond

// stallProbe measures how late the benchmark process gets the CPU back: a goroutine sleeps
// stallInterval at a time and records by how much each sleep overran. On a quiet machine
// the overrun is about a millisecond at p99; when other processes saturate the cores (race
// tests, fuzzers) every goroutine of the process — replicas' event loops, the WAN
// emulator's links, the clients — waits like the probe does, and the latencies measured
// include that wait. The result is stored with each run (result.Run.HostStall) so that a
// disturbed run can be told from a slow protocol.
type stallProbe struct {
	from  time.Time // overruns of sleeps that end before this are not recorded (warm-up)
	stopC chan struct{}
	doneC chan struct{}
	hist  *Latency // owned by run until doneC is closed
}

func startStallProbe(from time.Time) *stallProbe {
	p := &stallProbe{from: from, stopC: make(chan struct{}), doneC: make(chan struct{}), hist: NewLatency()}
	go p.run()
	return p
}

func (p *stallProbe) run() {
	defer close(p.doneC)
	t := time.NewTimer(stallInterval)
	defer t.Stop()
	for {
		start := time.Now()
		t.Reset(stallInterval)
		select {
		case <-p.stopC:
			return
		case <-t.C:
		}
		p.observe(start, time.Now())
	}
}

// observe records one sleep of stallInterval that began at start and returned at end.
func (p *stallProbe) observe(start, end time.Time) {
	if end.Before(p.from) {
		return
	}
	p.hist.Record(max(end.Sub(start)-stallInterval, 0))
}

// stop ends the probe and returns the overruns it recorded.
func (p *stallProbe) stop() *Latency {
	close(p.stopC)
	<-p.doneC
	return p.hist
}

// otherCPU returns how many CPUs' worth of time processes other than this one used
// between a and b (Linux: /proc/stat minus getrusage), and false where unknown.
func otherCPU(a, b cpuSample) (float64, bool) {
	wall := b.at.Sub(a.at)
	if !a.ok || !b.ok || wall <= 0 {
		return 0, false
	}
	other := (b.busy - a.busy) - (b.self - a.self)
	return max(float64(other)/float64(wall), 0), true
}
