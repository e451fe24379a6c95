package epaxos

import (
	"fmt"
	"os"
	"strconv"
	"testing"

	"github.com/parliament-lab/parliament/protocol"
)

// Truncation tests (compact.go): memory stays bounded, restart from LiveRecords,
// catch-up of a replica that missed forgotten instances through a snapshot, and
// agreement with compaction in the randomized schedules.

// A long run with periodic Compact holds a bounded number of instances: with every
// replica up, about what not all have executed yet; with one replica cut off (it never
// reports), exactly RetainInstances executed instances per row plus the tail that is
// not executable yet.
func TestCompactKeepsMemoryBounded(t *testing.T) {
	for _, tc := range []struct {
		name     string
		cut      bool
		retain   int
		executed int // bound on held instances covered by the compacted frontier
		total    int // bound on held instances
	}{
		{"all-up", false, 100000, 200, 600},
		// Two live rows. The not-executable tail is larger here: with replica 3 silent a
		// conflicting instance waits ThriftyWidenTicks (200 steps in this harness) for
		// the slow path.
		{"one-cut-off", true, 300, 2 * 300, 2 * (300 + 250)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			net := newMemNetCfg(t, 3, func(c *Config) {
				c.RetainInstances = tc.retain
				c.FrontierTicks = 1
			})
			if tc.cut {
				net.cut = 3
			}
			emitted := make([]map[protocol.InstanceID]bool, 3)
			for i := range emitted {
				emitted[i] = map[protocol.InstanceID]bool{}
			}
			net.onCommit = func(i int, in protocol.Instance) {
				if emitted[i][in.ID] {
					t.Fatalf("replica %d emitted %v twice", i+1, in.ID)
				}
				emitted[i][in.ID] = true
			}
			maxHeld, maxExec, steps := 0, 0, 4000
			for s := 0; s < steps; s++ {
				net.propose(2, 25)
				net.step()
				if s%20 != 0 {
					continue
				}
				for i, e := range net.engs {
					if tc.cut && i == 2 {
						continue
					}
					e.Compact(e.listOf(execFrontier(e)))
					e.Tick()
					if s > steps/4 {
						maxHeld = max(maxHeld, e.Held())
						exec := 0
						for r, row := range e.rows {
							for _, x := range row {
								if x != nil && x.id.Num <= e.cf[r] {
									exec++
								}
							}
						}
						maxExec = max(maxExec, exec)
					}
				}
			}
			total := len(emitted[0])
			if total < steps { // 2 or 3 proposers, one instance each per step
				t.Fatalf("only %d instances committed", total)
			}
			if maxExec > tc.executed || maxHeld > tc.total {
				t.Fatalf("held up to %d instances (%d executed) of %d committed; want <= %d (%d)",
					maxHeld, maxExec, total, tc.total, tc.executed)
			}
			t.Logf("%d instances committed, at most %d held (%d executed)", total, maxHeld, maxExec)
		})
	}
}

// A replica restarted from LiveRecords keeps its promises and votes for instances it
// still holds, does not emit what its snapshot covers, and never reuses an instance
// number although its own row was forgotten.
func TestRestartFromLiveRecords(t *testing.T) {
	c := newCluster(t, 3, nil)
	for i := range 10 {
		c.propose(1, c.put("k", strconv.Itoa(i)))
		c.propose(2, c.put("k", "two"+strconv.Itoa(i)))
		c.run(100)
	}
	for range 2 { // the second round sees the peers' frontiers: everything is forgotten
		for _, id := range c.ids {
			c.compact(id)
		}
		c.tick(c.eng[1].cfg.FrontierTicks)
		c.deliverAll()
	}
	if h := c.eng[1].Held(); h != 0 {
		t.Fatalf("replica 1 holds %d instances after every replica executed everything", h)
	}
	// An uncommitted vote at 1 that must survive: 2's PreAccept reaches 1 only.
	c.propose(2, c.put("k", "pending"))
	c.deliverWhere(and(ofType(protocol.MsgPreAccept), to(1)))
	c.dropWhere(func(protocol.Message) bool { return true })
	pending := iid(2, 11)
	if in := c.eng[1].get(pending, false); in == nil || in.status != protocol.StatusPreAccepted {
		t.Fatalf("setup: 1 did not pre-accept %v", pending)
	}
	front := c.eng[1].Frontier()
	c.truncate(1)
	if recs := c.disk[1]; recs[0].Type != protocol.RecordSnapshot || fmt.Sprint(recs[0].Inst.Deps) != fmt.Sprint(front) {
		t.Fatalf("LiveRecords starts with %+v, want a RecordSnapshot of %v", recs[0], front)
	}
	c.crash(1)
	c.restart(1)
	if len(c.commits[1]) != 0 {
		t.Fatalf("restarted replica emitted %d instances its snapshot covers", len(c.commits[1]))
	}
	if in := c.eng[1].get(pending, false); in == nil || in.status != protocol.StatusPreAccepted || in.vballot != (protocol.Ballot{Replica: 2}) {
		t.Fatalf("restart lost the vote for %v: %+v", pending, in)
	}
	c.propose(1, c.put("k", "after"))
	c.run(500)
	if in := c.mustCommitted(iid(1, 11)); string(in.Cmds[0].Value) != "after" {
		t.Fatalf("1.11 = %s, want the new command (instance numbers 1..10 are used)", fingerprint(in))
	}
	c.mustCommitted(pending)
	c.checkVisibility()
}

// A replica that was down while the others ran and forgot (RetainInstances) catches up
// through a snapshot: a request about a forgotten instance is answered with MsgSnapshot,
// and once installed the replica executes what follows without ever emitting what the
// snapshot covers.
func TestCatchUpThroughSnapshot(t *testing.T) {
	c := newCluster(t, 3, func(cfg *Config) { cfg.RetainInstances = 5 })
	c.exec = true
	c.crash(3)
	for i := range 30 {
		c.propose(protocol.ReplicaID(1+i%2), c.put("k", strconv.Itoa(i)))
		c.run(200)
	}
	f1 := c.compact(1)
	c.compact(2)
	if h := c.eng[1].Held(); h > 2*5 {
		t.Fatalf("replica 1 holds %d instances with RetainInstances 5 per row and replica 3 down", h)
	}
	c.restart(3)
	// 3 votes on a new write to k whose deps name instances it never saw; its executor
	// suspects them, 1 and 2 have forgotten them and offer a snapshot.
	c.propose(1, c.put("k", "new"))
	c.run(1000)
	offers := 0
	for _, m := range c.sent {
		if m.Type == protocol.MsgSnapshot && m.To == 3 {
			offers++
		}
	}
	if offers == 0 {
		t.Fatal("no snapshot offered to the lagging replica")
	}
	got := c.eng[3].Frontier()
	if fmt.Sprint(got) != fmt.Sprint(f1) && fmt.Sprint(got) != fmt.Sprint(c.eng[2].Frontier()) {
		t.Fatalf("replica 3 frontier %v, want a peer's snapshot frontier %v", got, f1)
	}
	newInst := iid(1, 16)
	in, ok := c.committedAt(3, newInst)
	if !ok {
		t.Fatalf("%v not committed at the caught-up replica: %s", newInst, c.describe())
	}
	if b := blocked(c.eng[3]); len(b) != 0 {
		t.Fatalf("replica 3 still waits on %v", b)
	}
	for id := range c.commits[3] {
		if id != newInst {
			t.Errorf("replica 3 emitted %v; the snapshot covers it", id)
		}
	}
	_ = in
	c.checkVisibility()
}

// The randomized schedules of TestRandomizedAgreement with truncation: agreement,
// visibility and liveness (every committed instance executable at every replica) with
// forgotten instances, snapshots and restarts from LiveRecords.
func TestRandomizedAgreementWithCompaction(t *testing.T) {
	seeds := 150
	if testing.Short() {
		seeds = 30
	}
	if s, err := strconv.Atoi(os.Getenv("EPAXOS_SEEDS")); err == nil {
		seeds = s
	}
	var sum counters
	for seed := 1; seed <= seeds; seed++ {
		for _, n := range []int{3, 5} {
			t.Run(fmt.Sprintf("seed=%d/n=%d", seed, n), func(t *testing.T) {
				c := randomRunOpts(t, uint64(seed), n, nil, true)
				sum.add(c.total())
			})
		}
	}
	t.Logf("over all runs: %+v", sum)
	// The schedules must reach the new paths, or this test proves nothing about them.
	if !t.Failed() && seeds >= 20 && (sum.forgotten == 0 || sum.snapOffered == 0 || sum.snapInstalled == 0) {
		t.Fatalf("truncation paths not exercised: %+v", sum)
	}
}
