package epaxos

import (
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"testing"

	"github.com/parliament-lab/parliament/protocol"
)

// TestRandomizedAgreement runs many seeded schedules with loss, duplication, reordering,
// crashes and restarts, then heals the cluster and checks agreement (no instance
// committed with two values: checked on every commit by the harness), visibility (of two
// conflicting committed instances one depends on the other), and that everything known
// gets committed. EPAXOS_SEEDS=n runs more seeds; a failure names its seed.
func TestRandomizedAgreement(t *testing.T) {
	seeds := 150
	if testing.Short() {
		seeds = 30
	}
	if s, err := strconv.Atoi(os.Getenv("EPAXOS_SEEDS")); err == nil {
		seeds = s
	}
	for seed := 1; seed <= seeds; seed++ {
		for _, n := range []int{3, 5} {
			t.Run(fmt.Sprintf("seed=%d/n=%d", seed, n), func(t *testing.T) {
				randomRun(t, uint64(seed), n, nil)
			})
		}
	}
}

func randomRun(t testing.TB, seed uint64, n int, mutate func(*Config)) {
	randomRunOpts(t, seed, n, mutate, false)
}

// total sums the internal counters of every live engine and of the engines replaced by
// restarts.
func (c *cluster) total() counters {
	s := c.gone
	for _, e := range c.eng {
		s.add(e.counts)
	}
	return s
}

func (s *counters) add(o counters) {
	s.forgotten += o.forgotten
	s.snapOffered += o.snapOffered
	s.snapInstalled += o.snapInstalled
	s.abstained += o.abstained
	s.invalidatedOld += o.invalidatedOld
}

// randomRunOpts is randomRun, optionally with truncation: replicas compact at random
// moments (Compact with what they could execute, sometimes replacing their log with
// LiveRecords), keep few instances (RetainInstances 2..17), and the final phase acts
// like the runtime's executor (suspecting what committed instances wait on), so that a
// replica that missed forgotten instances must catch up through a snapshot. The fault
// schedule draws from the same generator as without truncation.
func randomRunOpts(t testing.TB, seed uint64, n int, mutate func(*Config), compact bool) *cluster {
	rng := rand.New(rand.NewPCG(seed, uint64(n)))
	crng := rand.New(rand.NewPCG(seed, 0xc0))
	retain := 1 + crng.IntN(8)
	pCompact := 5 + crng.IntN(20)
	thrifty := rng.IntN(2) == 0
	c := newCluster(t, n, func(cfg *Config) {
		cfg.Seed = int64(seed)
		cfg.RecoveryTicks = 8
		cfg.RetransmitTicks = 3
		cfg.ThriftyWidenTicks = 2
		cfg.MaxInFlight = 4
		cfg.Thrifty = thrifty
		if compact {
			cfg.RetainInstances = retain
			cfg.FrontierTicks = 2
		}
		if mutate != nil {
			mutate(cfg)
		}
	})
	f := MaxFailures(n)
	keys := []string{"a", "b", "c"}
	live := func() []protocol.ReplicaID {
		var out []protocol.ReplicaID
		for _, id := range c.ids {
			if !c.down[id] {
				out = append(out, id)
			}
		}
		return out
	}
	pLoss := rng.IntN(20)
	for step := 0; step < 400; step++ {
		l := live()
		if compact && crng.IntN(100) < pCompact {
			id := l[crng.IntN(len(l))]
			c.compact(id)
			if crng.IntN(2) == 0 {
				c.truncate(id)
			}
		}
		if compact && crng.IntN(100) < 15 {
			// More traffic, delivered at once, so that rows grow past RetainInstances
			// while a replica is down.
			id := l[crng.IntN(len(l))]
			c.propose(id, c.put(keys[crng.IntN(len(keys))], "x"))
			c.deliverWhere(func(m protocol.Message) bool { return m.From == id || m.To == id })
		}
		r := rng.IntN(100)
		switch {
		case r < 15:
			id := l[rng.IntN(len(l))]
			var cmds []protocol.Command
			for k := rng.IntN(2) + 1; k > 0; k-- {
				op := protocol.OpPut
				if rng.IntN(3) == 0 {
					op = protocol.OpGet
				}
				cmds = append(cmds, c.cmd(op, keys[rng.IntN(len(keys))], strconv.Itoa(step)))
			}
			c.propose(id, cmds...)
		case r < 60+pLoss:
			if len(c.queue) > 0 {
				i := rng.IntN(len(c.queue))
				if r >= 60 {
					c.queue = append(c.queue[:i], c.queue[i+1:]...) // lost
				} else {
					c.deliverAt(i)
				}
			}
		case r < 84:
			if len(c.queue) > 0 {
				c.queue = append(c.queue, c.queue[rng.IntN(len(c.queue))]) // duplicated
			}
		case r < 94:
			id := l[rng.IntN(len(l))]
			c.eng[id].Tick()
			c.flush(id)
		case r < 96:
			if len(l) > n-f {
				c.crash(l[rng.IntN(len(l))])
			}
		case r < 98:
			if compact && crng.IntN(4) != 0 {
				break // longer outages: the others forget what the crashed replica misses
			}
			for _, id := range c.ids {
				if c.down[id] {
					c.restart(id)
					break
				}
			}
		default:
			// The executor somewhere suspects an instance it heard of.
			id := l[rng.IntN(len(l))]
			row := c.ids[rng.IntN(n)]
			if k := c.eng[id].rowEnd(c.eng[id].ri(row)); k > 0 {
				c.eng[id].Suspect([]protocol.InstanceID{iid(row, uint64(rng.IntN(int(k))+1))})
				c.flush(id)
			}
		}
	}
	for _, id := range c.ids {
		if c.down[id] {
			c.restart(id)
		}
	}
	c.exec = compact
	if compact {
		c.compactEvery = 1 + crng.IntN(10)
	}
	c.run(3000)
	if compact {
		// New client traffic after healing: writes to every key at every replica
		// depend on everything before, so a replica that missed forgotten instances
		// must catch up (through a snapshot) to execute them.
		for _, id := range c.ids {
			for _, k := range keys {
				c.propose(id, c.put(k, "after"))
			}
		}
		c.run(3000)
	}
	c.checkVisibility()
	return c
}

// failure is what catcher turns a fatal harness error into.
type failure struct{ msg string }

// catcher is a testing.TB whose fatal errors panic with a failure, so that a test can
// assert that a run FAILS.
type catcher struct{ testing.TB }

func (catcher) Helper() {}
func (catcher) Fatalf(format string, args ...any) {
	panic(failure{fmt.Sprintf(format, args...)})
}
func (c catcher) Errorf(format string, args ...any) { c.Fatalf(format, args...) }

func caught(fn func()) (msg string) {
	defer func() {
		if r := recover(); r != nil {
			f, ok := r.(failure)
			if !ok {
				panic(r)
			}
			msg = f.msg
		}
	}()
	fn()
	return ""
}

// The test-only mutations exist for the simulator to prove its checks can fail; the
// randomized harness here must catch them too, or its checks are toothless.
func TestMutationsAreCaught(t *testing.T) {
	mutations := map[string]func(*Config){
		"UnsafeFastQuorumMinusOne":     func(c *Config) { c.UnsafeFastQuorumMinusOne = true },
		"UnsafeRecoveryIgnoreAccepted": func(c *Config) { c.UnsafeRecoveryIgnoreAccepted = true },
	}
	for _, name := range []string{"UnsafeFastQuorumMinusOne", "UnsafeRecoveryIgnoreAccepted"} {
		found := ""
		for seed := uint64(1); seed <= 400 && found == ""; seed++ {
			for _, n := range []int{3, 5} {
				if msg := caught(func() { randomRun(catcher{t}, seed, n, mutations[name]) }); msg != "" {
					found = fmt.Sprintf("seed=%d n=%d: %.200s", seed, n, msg)
					break
				}
			}
		}
		if found == "" {
			t.Errorf("%s: no violation found in 400 seeds", name)
			continue
		}
		t.Logf("%s caught: %s", name, found)
	}
}
