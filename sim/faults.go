package sim

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/parliament-lab/parliament/check"
)

// swarm is the fault mix of one seed: which of the enabled fault kinds strike, and how
// hard. Drawing it per seed (swarm testing) makes rare combinations common across seeds.
type swarm struct {
	loss, dup  float64 // per message
	reorder    float64 // per message: extra delay that ignores per-link FIFO
	reorderMax int64
	delay      float64 // per message: a delay spike (per-link FIFO still holds: a stalled link)
	spikeMin   int64
	spikeMax   int64
	partitions int
	crashes    int
	torn       float64 // per crash: the replica dies at its next input with that Ready unprocessed
	tick       []int64 // per replica: virtual nanoseconds per tick
	healAt     int64
}

// swarmActive is the chance that an enabled fault kind is active in a given seed.
const swarmActive = 0.75

func drawSwarm(f Faults, n int, tick time.Duration, skewMax float64, rng *rand.Rand) swarm {
	var sw swarm
	active := func(enabled bool) bool { return enabled && rng.Float64() < swarmActive }
	if active(f.Loss) {
		sw.loss = 0.2 * rng.Float64()
	}
	if active(f.Dup) {
		sw.dup = 0.1 * rng.Float64()
	}
	if active(f.Reorder) {
		sw.reorder = 0.3 * rng.Float64()
		sw.reorderMax = int64(time.Millisecond) + rng.Int64N(int64(100*time.Millisecond))
	}
	if active(f.Delay) {
		sw.delay = 0.03 * rng.Float64()
		sw.spikeMin = int64(100 * time.Millisecond)
		sw.spikeMax = sw.spikeMin + rng.Int64N(int64(2*time.Second))
	}
	if active(f.Partition) {
		sw.partitions = 1 + rng.IntN(4)
	}
	if active(f.Crash) {
		sw.crashes = 1 + rng.IntN(3)
		sw.torn = rng.Float64()
	}
	skew := active(f.Skew)
	sw.tick = make([]int64, n)
	for i := range sw.tick {
		sw.tick[i] = int64(tick)
		if skew {
			// A replica whose clock runs fast suspects its peers early; one that runs slow
			// suspects late. Timeouts are in ticks, so both must be safe. The factor is
			// log-uniform between 1/(1+skewMax) and 1+skewMax.
			f := math.Exp(math.Log1p(skewMax) * (2*rng.Float64() - 1))
			sw.tick[i] = int64(float64(tick) * f)
		}
	}
	sw.healAt = int64(time.Second) + rng.Int64N(int64(7*time.Second))
	return sw
}

func (sw *swarm) String() string {
	var parts []string
	if sw.loss > 0 {
		parts = append(parts, fmt.Sprintf("loss=%.3f", sw.loss))
	}
	if sw.dup > 0 {
		parts = append(parts, fmt.Sprintf("dup=%.3f", sw.dup))
	}
	if sw.reorder > 0 {
		parts = append(parts, fmt.Sprintf("reorder=%.3f/%s", sw.reorder, time.Duration(sw.reorderMax).Round(time.Millisecond)))
	}
	if sw.delay > 0 {
		parts = append(parts, fmt.Sprintf("delay=%.3f/%s", sw.delay, time.Duration(sw.spikeMax).Round(time.Millisecond)))
	}
	if sw.partitions > 0 {
		parts = append(parts, fmt.Sprintf("partitions=%d", sw.partitions))
	}
	if sw.crashes > 0 {
		parts = append(parts, fmt.Sprintf("crashes=%d torn=%.2f", sw.crashes, sw.torn))
	}
	skewed := false
	ticks := make([]string, len(sw.tick))
	for i, t := range sw.tick {
		ticks[i] = time.Duration(t).Round(100 * time.Microsecond).String()
		skewed = skewed || t != sw.tick[0]
	}
	if skewed {
		parts = append(parts, "ticks="+strings.Join(ticks, ","))
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, " ")
}

// partition cuts a set of directed links from start to end.
type partition struct {
	start, end int64
	cut        [][2]int // (from, to) replica indexes
	desc       string
}

// scheduleFaults draws the partitions and crashes of the faults phase up front (from the
// faults stream), so the schedule of a seed does not depend on how the run unfolds.
func (s *sim) scheduleFaults() {
	n := s.cfg.Replicas
	rng := s.faultRng
	for i := 0; i < s.sw.partitions && n > 1; i++ {
		p := partition{start: rng.Int64N(s.healAt)}
		p.end = min(p.start+int64(50*time.Millisecond)+rng.Int64N(int64(3*time.Second)), s.healAt)
		switch rng.IntN(4) {
		case 0: // split into two sides, symmetric
			perm := rng.Perm(n)
			k := 1 + rng.IntN(n-1)
			side := make([]bool, n)
			for _, x := range perm[:k] {
				side[x] = true
			}
			for a := range n {
				for b := range n {
					if side[a] != side[b] {
						p.cut = append(p.cut, [2]int{a, b})
					}
				}
			}
			p.desc = fmt.Sprintf("split %v | rest", ids(perm[:k]))
		case 1: // isolate one replica, symmetric
			x := rng.IntN(n)
			for b := range n {
				if b != x {
					p.cut = append(p.cut, [2]int{x, b}, [2]int{b, x})
				}
			}
			p.desc = fmt.Sprintf("isolate %d", x+1)
		case 2: // one-way: a replica can send but not hear, or hear but not send
			x := rng.IntN(n)
			out := rng.IntN(2) == 0
			for b := range n {
				if b != x {
					if out {
						p.cut = append(p.cut, [2]int{x, b})
					} else {
						p.cut = append(p.cut, [2]int{b, x})
					}
				}
			}
			if out {
				p.desc = fmt.Sprintf("one-way: %d cannot send", x+1)
			} else {
				p.desc = fmt.Sprintf("one-way: %d cannot hear", x+1)
			}
		default: // random directed links
			var names []string
			for a := range n {
				for b := range n {
					if a != b && rng.IntN(10) < 3 {
						p.cut = append(p.cut, [2]int{a, b})
						names = append(names, fmt.Sprintf("%d->%d", a+1, b+1))
					}
				}
			}
			p.desc = "cut " + strings.Join(names, ",")
		}
		s.partitions = append(s.partitions, p)
		s.schedule(event{at: p.start, kind: evPartition, part: len(s.partitions) - 1})
	}
	for range s.sw.crashes {
		at := rng.Int64N(s.healAt)
		down := int64(10*time.Millisecond) + rng.Int64N(int64(3*time.Second))
		s.schedule(event{at: at, kind: evCrash, node: rng.IntN(n), dur: down})
	}
}

func ids(idx []int) []int {
	out := make([]int, len(idx))
	for i, x := range idx {
		out[i] = x + 1
	}
	return out
}

func (s *sim) partitionStart(i int) {
	if s.healed {
		return
	}
	p := &s.partitions[i]
	for _, l := range p.cut {
		s.blocked[l[0]][l[1]]++
	}
	s.res.Partitions++
	if s.trace != nil {
		s.tracef("partition #%d starts: %s (until %s)", i, p.desc, check.FormatTime(p.end))
	}
	s.schedule(event{at: p.end, kind: evPartitionEnd, part: i})
}

func (s *sim) partitionEnd(i int) {
	if s.healed {
		return
	}
	for _, l := range s.partitions[i].cut {
		s.blocked[l[0]][l[1]]--
	}
	s.tracef("partition #%d heals", i)
}

func (s *sim) crashEvent(e *event) {
	nd := s.nodes[e.node]
	if s.healed || !nd.up || nd.tornNext {
		return
	}
	nd.downFor = e.dur
	if s.faultRng.Float64() < s.sw.torn {
		// Torn: the replica dies while handling its next input, after the engine changed
		// its memory but before the Ready was persisted or sent (a crash before fsync).
		nd.tornNext = true
		s.tracef("r%d will crash at its next input (torn)", nd.id)
		return
	}
	s.crash(nd, "crash")
}

// heal ends the faults phase: partitions lift, the network stops losing, duplicating and
// delaying messages, and every crashed replica restarts.
func (s *sim) heal() {
	s.healed = true
	for a := range s.blocked {
		clear(s.blocked[a])
	}
	s.tracef("heal: partitions lifted, network reliable, crashed replicas restart")
	for _, nd := range s.nodes {
		nd.tornNext = false
		if !nd.up {
			s.restart(nd)
		}
	}
}
