package multipaxos

import (
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/parliament-lab/parliament/protocol"
)

// randomSeeds is how many seeds the randomized tests run; MULTIPAXOS_SEEDS raises it for
// long runs.
func randomSeeds(t *testing.T, short int) int {
	if s := os.Getenv("MULTIPAXOS_SEEDS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil {
			t.Fatalf("MULTIPAXOS_SEEDS=%q: %v", s, err)
		}
		return n
	}
	return short
}

// chaosOpts vary a chaos run.
type chaosOpts struct {
	tolerate bool          // record agreement violations instead of failing (mutation tests)
	mod      func(*Config) // knobs
	// compact makes replicas truncate at random moments, as the runtime does: snapshot,
	// Compact, and sometimes replace the log with LiveRecords. Lagging and restarted
	// replicas then catch up by snapshot transfer.
	compact bool
}

// chaos drives a cluster through a seeded random schedule: ticks, reordered, dropped and
// duplicated messages, proposals anywhere, crashes with restart from records, and
// partitions. The harness fails the test as soon as two replicas commit different values
// for one slot. It returns the network for liveness checks.
func chaos(t *testing.T, seed uint64, steps int, opts chaosOpts) *network {
	tolerate, mod := opts.tolerate, opts.mod
	rng := rand.New(rand.NewPCG(seed, 0x9a05))
	// A separate stream, so that runs without compaction keep their schedules.
	crng := rand.New(rand.NewPCG(seed, 0xc0c0))
	pCompact := crng.Float64() * 0.03
	n := []int{3, 5}[rng.IntN(2)]
	election := 4 + rng.IntN(8)
	heartbeat := 1 + rng.IntN(election-1)
	window, batch := 1+rng.IntN(8), 1+rng.IntN(4)
	nw := newNetwork(t, n, int64(seed), func(c *Config) {
		c.ElectionTicks, c.HeartbeatTicks, c.Window, c.MaxBatch = election, heartbeat, window, batch
		if mod != nil {
			mod(c)
		}
	})
	nw.tolerate = tolerate
	// Swarm testing: the fault mix itself is drawn per seed.
	pDrop, pDup, pCrash, pCut := rng.Float64()*0.3, rng.Float64()*0.2, rng.Float64()*0.01, rng.Float64()*0.01
	seq := uint64(0)
	down := 0
	for range steps {
		if opts.compact && crng.Float64() < pCompact {
			nw.compact(protocol.ReplicaID(1+crng.IntN(n)), crng.IntN(2) == 0)
		}
		switch x := rng.Float64(); {
		case x < 0.25:
			nw.now++
			nw.tick(protocol.ReplicaID(1 + rng.IntN(n)))
		case x < 0.75:
			if len(nw.queue) == 0 {
				continue
			}
			i := rng.IntN(len(nw.queue)) // reordering
			env := nw.queue[i]
			switch y := rng.Float64(); {
			case y < pDrop:
				nw.queue = slices.Delete(nw.queue, i, i+1)
			case y < pDrop+pDup:
				nw.deliver(env.m) // stays queued: delivered again later
			default:
				nw.queue = slices.Delete(nw.queue, i, i+1)
				nw.deliver(env.m)
			}
		case x < 0.85:
			seq++
			id := protocol.ReplicaID(1 + rng.IntN(n))
			nw.propose(id, put(uint64(id), seq, fmt.Sprintf("k%d", rng.IntN(4)), strconv.FormatUint(seq, 10)))
		case x < 0.85+pCrash*10:
			id := protocol.ReplicaID(1 + rng.IntN(n))
			nd := nw.node(id)
			if nd.up && down < (n-1)/2 {
				nw.crash(id)
				down++
			} else if !nd.up {
				nw.restart(id)
				down--
			}
		case x < 0.85+pCrash*10+pCut*10:
			a, b := protocol.ReplicaID(1+rng.IntN(n)), protocol.ReplicaID(1+rng.IntN(n))
			if a != b {
				k := [2]protocol.ReplicaID{a, b}
				nw.cut[k] = !nw.cut[k]
			}
		}
	}
	return nw
}

// heal restarts every crashed node and repairs the network, then requires that a leader
// emerges and commits a new command at every replica in bounded time.
func (nw *network) requireLiveness(t *testing.T) {
	t.Helper()
	nw.heal()
	for _, nd := range nw.nodes {
		if !nd.up {
			nw.restart(nd.id)
		}
	}
	l := nw.electLeader(1000)
	final := put(999, 1, "final", "yes")
	nw.propose(l, final)
	redirected := func() bool {
		for _, nd := range nw.nodes {
			if slices.ContainsFunc(nd.redirects, func(c protocol.Command) bool { return c.ClientID == 999 }) {
				return true
			}
		}
		return false
	}
	retry := false
	for range 200 {
		nw.tickAll(1)
		if redirected() {
			// A leader can still change right after healing (a follower that missed
			// heartbeats times out); the client follows the redirect and retries, as
			// soon as there is a leader again.
			for _, nd := range nw.nodes {
				nd.redirects = slices.DeleteFunc(nd.redirects, func(c protocol.Command) bool { return c.ClientID == 999 })
			}
			retry = true
		}
		if retry {
			if l = nw.leader(); l != 0 {
				nw.propose(l, final)
				retry = false
			}
		}
		done := true
		for _, nd := range nw.nodes {
			if !slices.ContainsFunc(nd.committedValues(), func(v string) bool { return strings.Contains(v, "final=yes") }) {
				done = false
			}
		}
		if done {
			return
		}
	}
	for _, nd := range nw.nodes {
		t.Logf("replica %d %v commit %d log %d last %d base %d pending %d ballot %v redirects %v", nd.id, nd.e.Role(), nd.e.CommitIndex(), len(nd.log), nd.e.log.last(), nd.e.log.base, len(nd.e.pending), nd.e.promised, value(nd.redirects))
		for s := nd.e.commitIndex + 1; s <= nd.e.log.last(); s++ {
			sl := nd.e.log.get(s)
			t.Logf("  slot %d %v %v acks %b %s", s, sl.status, sl.vballot, sl.acks, value(sl.cmds))
		}
	}
	t.Fatalf("final command not committed everywhere 200 ticks after healing (leader %d)", l)
}

// No two replicas ever commit different values for one slot, whatever the schedule; and
// once faults heal the cluster makes progress again.
func TestRandomizedAgreement(t *testing.T) {
	for seed := range uint64(randomSeeds(t, 60)) {
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) {
			nw := chaos(t, seed, 4000, chaosOpts{})
			nw.requireLiveness(t)
		})
	}
}

// The same with compaction and almost no committed slots retained in memory: lagging
// replicas often need snapshots, and a candidate that cannot learn a chosen slot must not
// lead; agreement must hold regardless (liveness is TestRandomizedAgreementWithCompaction's).
func TestRandomizedAgreementTinyRetention(t *testing.T) {
	for seed := range uint64(randomSeeds(t, 30)) {
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) {
			chaos(t, seed, 4000, chaosOpts{compact: true, mod: func(c *Config) { c.RetainCmds = int(seed % 8) }})
		})
	}
}

// The randomized test has teeth: with the unsafe mutation it finds agreement violations.
func TestRandomizedFindsUnsafeMutation(t *testing.T) {
	found := 0
	for seed := range uint64(randomSeeds(t, 60)) {
		nw := chaos(t, seed, 4000, chaosOpts{tolerate: true, mod: func(c *Config) { c.UnsafeIgnorePromisedValues = true }})
		found += len(nw.violations)
	}
	if found == 0 {
		t.Fatal("no agreement violation found with UnsafeIgnorePromisedValues")
	}
}

// Agreement and liveness with truncation on: replicas compact at random moments (often
// with almost nothing retained), sometimes replacing their log with LiveRecords, and crash
// and restart from those records; lagging and restarted replicas catch up by snapshot
// transfer and then the log. Snapshots are checked against the chosen values slot by slot.
func TestRandomizedAgreementWithCompaction(t *testing.T) {
	installed := 0
	for seed := range uint64(randomSeeds(t, 60)) {
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) {
			nw := chaos(t, seed, 4000, chaosOpts{compact: true, mod: func(c *Config) { c.RetainCmds = int(seed % 5) }})
			nw.requireLiveness(t)
			installed += nw.installed
		})
	}
	if installed == 0 {
		t.Fatal("no snapshot was ever installed: the test does not exercise snapshot catch-up")
	}
	t.Logf("%d snapshots installed", installed)
}
