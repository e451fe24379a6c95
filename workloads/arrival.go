package workloads

import (
	"fmt"
	"math/rand/v2"
	"time"
)

// Loop says when a client sends its commands.
//
// Closed loop (Rate = 0): the client keeps Outstanding commands in flight and sends the
// next as soon as one completes; latency is measured from send to reply.
//
// Open loop (Rate > 0): commands arrive as a Poisson process of Rate commands per second,
// independent of the system's progress. The client still caps what it has in flight at
// Outstanding; when the cap holds a command back, its latency is measured from its
// scheduled arrival time, not from when it was finally sent. That is the
// coordinated-omission correction (Tene, "How NOT to measure latency"): a stalled system
// cannot hide its stall by stopping the clock of the commands it delayed.
type Loop struct {
	Outstanding int     // commands in flight per client (closed loop) or the cap (open loop); default 1
	Rate        float64 // open loop: arrivals per second for this client; 0 = closed loop
}

// Validate reports a bad field.
func (l Loop) Validate() error {
	if l.Outstanding < 0 {
		return fmt.Errorf("workloads: outstanding %d: want >= 1", l.Outstanding)
	}
	if l.Rate < 0 {
		return fmt.Errorf("workloads: rate %v: want >= 0", l.Rate)
	}
	return nil
}

// Open reports whether l is an open loop.
func (l Loop) Open() bool { return l.Rate > 0 }

// Arrivals yields the scheduled send times of an open-loop client: a Poisson process
// (exponential inter-arrival times of mean 1/Rate), deterministic given its seed.
type Arrivals struct {
	rng  *rand.Rand
	mean float64 // seconds
	next time.Duration
}

// NewArrivals starts a Poisson process of rate arrivals per second at offset 0.
func NewArrivals(rate float64, seed int64, client uint64) *Arrivals {
	return &Arrivals{rng: rand.New(rand.NewPCG(uint64(seed)^0x9e3779b97f4a7c15, client)), mean: 1 / rate}
}

// Next returns the next arrival as an offset from the start of the run.
func (a *Arrivals) Next() time.Duration {
	a.next += time.Duration(a.rng.ExpFloat64() * a.mean * float64(time.Second))
	return a.next
}

// SplitRate divides a total open-loop rate evenly between clients.
func SplitRate(total float64, clients int) float64 {
	if clients <= 0 {
		return 0
	}
	return total / float64(clients)
}
