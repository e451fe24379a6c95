package epaxos

import (
	"testing"

	"github.com/parliament-lab/parliament/protocol"
)

// Scenario tests: each one is a short story of a cluster, told with the in-test network
// of harness_test.go. Every commit anywhere is checked for agreement as it happens.

func TestFastPathWithoutConflicts(t *testing.T) {
	for _, n := range []int{3, 5, 7} {
		c := newCluster(t, n, nil)
		// Replica 1 proposes a write nobody else has seen a conflict for.
		c.propose(1, c.put("a", "1"))
		c.deliverAll()
		in := c.mustCommitted(iid(1, 1))
		if len(in.Deps) != 0 || in.Seq != 1 {
			t.Errorf("n=%d: first command committed with deps %v seq %d, want none and 1", n, in.Deps, in.Seq)
		}
		st := c.eng[1].Stats()
		if st.FastPath != 1 || st.SlowPath != 0 || st.Committed != 1 {
			t.Errorf("n=%d: stats %+v, want one fast-path commit", n, st)
		}
		// Exactly one round trip: PreAccept, PreAcceptOK and ECommit, no Accept.
		for _, m := range c.sent {
			if m.Type == protocol.MsgEAccept {
				t.Errorf("n=%d: fast path sent %v", n, m)
			}
		}
	}
}

func TestSlowPathWhenAReplicaReportsExtraDeps(t *testing.T) {
	c := newCluster(t, 5, nil)
	// Replica 5 starts a write on x; its PreAccept reaches 3 and 4 only.
	c.propose(5, c.put("x", "5"))
	c.deliverWhere(and(ofType(protocol.MsgPreAccept), or(to(3), to(4))))
	c.dropWhere(from(5))
	// Replica 1 writes x too. 3, 4 and 5 report 5.1 as an extra dependency, 2 does not:
	// two identical votes (1 and 2) are fewer than the fast quorum of 3.
	c.propose(1, c.put("x", "1"))
	c.deliverWhere(about(iid(1, 1)))
	in := c.mustCommitted(iid(1, 1))
	if n, ok := in.Dep(5); !ok || n != 1 {
		t.Fatalf("1.1 committed with deps %v, want the union including 5.1", in.Deps)
	}
	if st := c.eng[1].Stats(); st.SlowPath != 1 || st.FastPath != 0 {
		t.Fatalf("stats %+v, want one slow-path commit", st)
	}
	c.run(200)
	c.checkVisibility()
}

func TestConcurrentConflictingCommandsExecuteInOneOrder(t *testing.T) {
	for _, n := range []int{3, 5} {
		c := newCluster(t, n, nil)
		// Replicas 1 and 2 write the same key at the same moment.
		c.propose(1, c.put("k", "from-1"))
		c.propose(2, c.put("k", "from-2"))
		c.deliverAll()
		c.run(200)
		a, b := c.mustCommitted(iid(1, 1)), c.mustCommitted(iid(2, 1))
		if !dependsOn(a, b) && !dependsOn(b, a) {
			t.Fatalf("n=%d: neither conflicting instance depends on the other: %v / %v", n, a.Deps, b.Deps)
		}
		want := executesBefore(a, b)
		for _, id := range c.ids {
			ai, _ := c.committedAt(id, a.ID)
			bi, _ := c.committedAt(id, b.ID)
			if executesBefore(ai, bi) != want {
				t.Fatalf("n=%d: replica %d orders the two writes differently", n, id)
			}
		}
	}
}

func TestFastQuorumOfSevenIsFiveNotFour(t *testing.T) {
	c := newCluster(t, 7, nil)
	c.propose(1, c.put("a", "1"))
	c.deliverWhere(ofType(protocol.MsgPreAccept))
	// Three identical votes plus the leader's: four, a majority but not a fast quorum.
	c.deliverWhere(and(ofType(protocol.MsgPreAcceptOK), or(from(2), from(3), from(4))))
	if _, ok := c.committedAt(1, iid(1, 1)); ok {
		t.Fatal("committed with 4 of 7 identical votes; the fast quorum of 7 is 5")
	}
	c.deliverWhere(and(ofType(protocol.MsgPreAcceptOK), from(5)))
	if _, ok := c.committedAt(1, iid(1, 1)); !ok {
		t.Fatal("not committed with 5 of 7 identical votes")
	}
	if st := c.eng[1].Stats(); st.FastPath != 1 {
		t.Fatalf("stats %+v, want a fast-path commit", st)
	}
}

// The fast/slow decision is a function of the set of votes: delivering the same votes
// in any order gives the same outcome.
func TestFastPathDecisionIndependentOfArrivalOrder(t *testing.T) {
	orders := [][]protocol.ReplicaID{{2, 3, 4, 5}, {5, 4, 3, 2}, {3, 5, 2, 4}}
	var outcome []string
	for _, order := range orders {
		c := newCluster(t, 5, nil)
		// Replica 2 alone knows a conflicting instance from 5: its vote differs.
		c.propose(5, c.put("x", "5"))
		c.deliverWhere(and(ofType(protocol.MsgPreAccept), to(2)))
		c.dropWhere(from(5))
		c.propose(1, c.put("x", "1"))
		c.deliverWhere(and(ofType(protocol.MsgPreAccept), from(1)))
		for _, r := range order {
			c.deliverWhere(and(ofType(protocol.MsgPreAcceptOK), from(r)))
		}
		c.deliverAll()
		in := c.mustCommitted(iid(1, 1))
		st := c.eng[1].Stats()
		outcome = append(outcome, fingerprint(in)+" fast="+string(rune('0'+st.FastPath)))
	}
	for i := range outcome {
		if outcome[i] != outcome[0] {
			t.Fatalf("outcome depends on arrival order:\n%v\n%v", outcome[0], outcome[i])
		}
	}
}

func TestThriftySendsToTheClosestQuorumAndWidens(t *testing.T) {
	c := newCluster(t, 5, func(cfg *Config) {
		cfg.Thrifty = true
		cfg.LatencyRank = nil
		if cfg.ID == 1 {
			cfg.LatencyRank = []protocol.ReplicaID{4, 5, 2, 3}
		}
	})
	c.propose(1, c.put("a", "1"))
	var dests []protocol.ReplicaID
	for _, m := range c.queue {
		dests = append(dests, m.To)
	}
	if len(dests) != 2 || dests[0] != 4 || dests[1] != 5 {
		t.Fatalf("thrifty PreAccept went to %v, want the 2 closest peers [4 5]", dests)
	}
	// 5 is silent: after ThriftyWidenTicks the leader asks everyone else.
	c.dropWhere(to(5))
	c.deliverWhere(to(4))
	c.tick(c.eng[1].cfg.ThriftyWidenTicks)
	c.dropWhere(to(5))
	c.deliverAll()
	c.mustCommitted(iid(1, 1))
	if st := c.eng[1].Stats(); st.FastPath != 1 {
		t.Fatalf("stats %+v: widened thrifty quorum should still take the fast path", st)
	}
}

func TestBatchingOneInstancePerReady(t *testing.T) {
	c := newCluster(t, 3, func(cfg *Config) { cfg.MaxBatch = 3 })
	e := c.eng[1]
	e.Propose([]protocol.Command{c.put("a", "1"), c.put("b", "1")})
	e.Propose([]protocol.Command{c.put("c", "1"), c.put("d", "1"), c.put("e", "1")})
	c.flush(1)
	c.deliverAll()
	a, b := c.mustCommitted(iid(1, 1)), c.mustCommitted(iid(1, 2))
	if len(a.Cmds) != 3 || len(b.Cmds) != 2 {
		t.Fatalf("batches of %d and %d commands, want 3 and 2 (MaxBatch 3)", len(a.Cmds), len(b.Cmds))
	}
}

func TestRetransmitsOverALossyLink(t *testing.T) {
	c := newCluster(t, 3, nil)
	c.propose(1, c.put("a", "1"))
	c.dropWhere(func(protocol.Message) bool { return true }) // every PreAccept lost
	c.tick(c.eng[1].cfg.RetransmitTicks)
	c.deliverAll()
	c.mustCommitted(iid(1, 1))
}

// ---- recovery ------------------------------------------------------------------------

func TestRecoveryAfterPreAcceptReachedAMinority(t *testing.T) {
	c := newCluster(t, 5, nil)
	c.propose(1, c.put("a", "1"))
	c.deliverWhere(and(ofType(protocol.MsgPreAccept), to(2)))
	c.crash(1)
	c.dropWhere(from(1))
	c.run(500)
	in := c.mustCommitted(iid(1, 1))
	if len(in.Cmds) != 1 || in.Cmds[0].Op != protocol.OpPut {
		t.Fatalf("recovered 1.1 as %s; replica 2 had seen the command", fingerprint(in))
	}
	if c.eng[2].Stats().Recoveries == 0 {
		t.Fatalf("replica 2, the only one that saw 1.1, did not recover it")
	}
}

func TestRecoveryAfterFastQuorumKeepsTheFastPathDeps(t *testing.T) {
	for _, leaderCommitted := range []bool{true, false} {
		c := newCluster(t, 5, nil)
		// 5.1 writes a and commits everywhere, so 1.1 depends on it.
		c.propose(5, c.put("a", "5"))
		c.deliverAll()
		c.propose(1, c.put("a", "1"))
		c.deliverWhere(and(ofType(protocol.MsgPreAccept), or(to(2), to(3))))
		if leaderCommitted {
			// The leader commits on the fast path; its ECommits are lost with it.
			c.deliverWhere(and(ofType(protocol.MsgPreAcceptOK), to(1)))
			if _, ok := c.committedAt(1, iid(1, 1)); !ok {
				t.Fatal("leader did not commit on the fast path with 3 of 5 identical votes")
			}
		}
		c.crash(1)
		c.dropWhere(from(1))
		// Meanwhile replica 4 writes a as well: recovery must not let it change 1.1.
		c.propose(4, c.put("a", "4"))
		c.run(1000)
		in := c.mustCommitted(iid(1, 1))
		if n, ok := in.Dep(5); !ok || n != 1 || len(in.Deps) != 1 {
			t.Fatalf("leaderCommitted=%v: 1.1 recovered with deps %v, want exactly the fast-path deps [5.1]", leaderCommitted, in.Deps)
		}
		c.checkVisibility()
	}
}

func TestRecoveryAfterAcceptReachedOneReplica(t *testing.T) {
	c := newCluster(t, 5, nil)
	c.propose(5, c.put("x", "5"))
	c.deliverWhere(and(ofType(protocol.MsgPreAccept), or(to(3), to(4))))
	c.dropWhere(from(5))
	c.propose(1, c.put("x", "1"))
	c.deliverWhere(and(ofType(protocol.MsgPreAccept), from(1)))
	c.deliverWhere(ofType(protocol.MsgPreAcceptOK))
	// The leader went slow (3 and 4 reported 5.1); its Accept reaches only 2.
	c.deliverWhere(and(ofType(protocol.MsgEAccept), to(2)))
	accepted := c.eng[2].get(iid(1, 1), false)
	if accepted == nil || accepted.status != protocol.StatusAccepted {
		t.Fatal("setup: replica 2 did not accept 1.1")
	}
	want := fingerprint(c.eng[2].snapshot(accepted))
	c.crash(1)
	c.dropWhere(from(1))
	c.run(1000)
	in := c.mustCommitted(iid(1, 1))
	in.Status, in.Ballot, in.VBallot = 0, protocol.Ballot{}, protocol.Ballot{}
	if got := fingerprint(in); got != want {
		t.Fatalf("recovered %s, want the accepted value %s", got, want)
	}
}

func TestRecoveryAfterCommitReachedOneReplica(t *testing.T) {
	c := newCluster(t, 5, nil)
	c.propose(1, c.put("a", "1"))
	c.deliverWhere(ofType(protocol.MsgPreAccept))
	c.deliverWhere(ofType(protocol.MsgPreAcceptOK))
	c.deliverWhere(and(ofType(protocol.MsgECommit), to(2)))
	c.crash(1)
	c.dropWhere(from(1))
	c.run(1000)
	c.mustCommitted(iid(1, 1))
	for _, m := range c.sent {
		if m.Type == protocol.MsgEAccept && m.Inst == iid(1, 1) {
			t.Fatalf("recovery re-ran Accept (%v) although replica 2 knew the commit", m)
		}
	}
}

func TestRecoveryCommitsNoopWhenNobodySawTheCommand(t *testing.T) {
	c := newCluster(t, 3, nil)
	c.propose(1, c.put("a", "1"))
	c.dropWhere(from(1)) // every PreAccept lost
	c.crash(1)
	// The executor at 2 learned (say from a dependency) that 1.1 exists: it suspects it.
	c.eng[2].Suspect([]protocol.InstanceID{iid(1, 1)})
	c.flush(2)
	for _, m := range c.queue {
		t.Logf("queued %v", m)
	}
	c.deliverAll()
	in := c.mustCommitted(iid(1, 1))
	if !isNoop(in.Cmds) {
		t.Fatalf("1.1 recovered as %s, want a no-op", fingerprint(in))
	}
	// The leader comes back, learns that its instance became a no-op and proposes the
	// command again in a new instance: nothing is lost.
	c.restart(1)
	c.run(1000)
	again := c.mustCommitted(iid(1, 2))
	if len(again.Cmds) != 1 || string(again.Cmds[0].Key) != "a" {
		t.Fatalf("1.2 = %s, want the re-proposed put a", fingerprint(again))
	}
}

func TestRestartKeepsVotesAndPromises(t *testing.T) {
	c := newCluster(t, 3, nil)
	c.propose(1, c.put("a", "1"))
	c.deliverWhere(and(ofType(protocol.MsgPreAccept), to(2)))
	c.crash(2)
	c.restart(2)
	inst := c.eng[2].get(iid(1, 1), false)
	if inst == nil || inst.status != protocol.StatusPreAccepted || inst.vballot != (protocol.Ballot{Replica: 1}) {
		t.Fatalf("replica 2 forgot its ballot-0 vote on restart: %+v", inst)
	}
	c.run(1000)
	c.mustCommitted(iid(1, 1))
}

// TestSutraCounterexample replays the schedule of Sutra, "On the correctness of
// Egalitarian Paxos" (Information Processing Letters 156, 2020; arXiv:1906.10917), §3
// and github.com/otrack/on-epaxos-correctness tla+/CounterExample.tla, adapted to this
// engine's messages. Three replicas; 1.1 is recovered twice with different values
// accepted at ballots b1 < b2, then a third recovery sees a replica whose PROMISED ballot
// is higher than b2 but whose VOTE is from b1. With one ballot variable per instance
// (the original TLA+ spec and Go code) that replica reports its vote under the promised
// ballot and the third recovery adopts the b1 value, although the b2 value was chosen:
// replicas diverge. Keeping the promise (Ballot) and the ballot of the vote (VBallot)
// apart makes the third recovery pick the b2 value.
func TestSutraCounterexample(t *testing.T) {
	c := newCluster(t, 3, func(cfg *Config) { cfg.RecoveryTicks = 1 << 20 })
	// 3.1 (c1) and 2.1 (c3) write k; their PreAccepts are lost.
	c.propose(3, c.put("k", "c1"))
	c.propose(2, c.put("k", "c3"))
	c.dropWhere(func(protocol.Message) bool { return true })
	// 1.1 (c2) writes k; only 3 gets its PreAccept (and answers with the extra dep 3.1,
	// an answer that is lost).
	c.propose(1, c.put("k", "c2"))
	c.deliverWhere(and(ofType(protocol.MsgPreAccept), to(3)))
	c.dropWhere(func(protocol.Message) bool { return true })

	// Recovery b1 by 3 with quorum {3, 1}: restart Phase 1 with deps {3.1}; only 3 itself
	// accepts the result (its EAccepts are lost).
	c.eng[3].Suspect([]protocol.InstanceID{iid(1, 1)})
	c.flush(3)
	c.deliverWhere(or(and(ofType(protocol.MsgEPrepare), to(1)), ofType(protocol.MsgEPrepareOK)))
	c.deliverWhere(or(and(ofType(protocol.MsgPreAccept), to(1)), and(ofType(protocol.MsgPreAcceptOK), to(3))))
	r3 := c.eng[3].get(iid(1, 1), false)
	if r3.status != protocol.StatusAccepted {
		t.Fatalf("setup: 3 did not accept at b1: %+v", r3)
	}
	b1, v1 := r3.vballot, fingerprint(c.eng[3].snapshot(r3))
	c.dropWhere(func(protocol.Message) bool { return true })

	// Recovery b2 > b1 by 2 with quorum {2, 1}: 2 also knows 2.1, so the value differs.
	// 1 and 2 accept it: it is chosen, and 2 commits it (its ECommits are lost).
	// (2's first ballot 1.2 is below b1 = 1.3: 1 refuses it and 2 retries higher.)
	for i := 0; i < 2; i++ {
		c.eng[2].Suspect([]protocol.InstanceID{iid(1, 1)})
		c.flush(2)
		c.deliverWhere(func(m protocol.Message) bool {
			return m.Inst == iid(1, 1) && (m.To == 1 || m.To == 2) && m.Type != protocol.MsgECommit
		})
	}
	chosen, ok := c.committedAt(2, iid(1, 1))
	if !ok {
		t.Fatalf("setup: 2 did not commit at b2: %s", c.describe())
	}
	b2 := c.eng[1].get(iid(1, 1), false).vballot
	if !b1.Less(b2) || fingerprint(chosen) == v1 {
		t.Fatalf("setup: want distinct values at b1 %v < b2 %v", b1, b2)
	}
	// 2's EPrepare(b2) finally reaches 3, which promises b2 (its answer is lost).
	c.deliverWhere(func(m protocol.Message) bool {
		return m.Type == protocol.MsgEPrepare && m.To == 3 && m.Ballot == b2
	})
	c.dropWhere(func(protocol.Message) bool { return true })
	// 2 is now unreachable (down) while the next recovery runs, as in Sutra's schedule
	// where 2's commit races with it.
	c.crash(2)

	// Recovery b3 by 3 with quorum {3, 1}: 3's promise is now above b2 while its vote is
	// from b1; 1 voted at b2. Both promised b3, so a single ballot variable would report
	// b3 for both votes and the tie would let 3 pick its own b1 value. (3 promised 2's
	// recovery ballot, so Suspect would defer to it: the recovery starts as 3's recovery
	// timer would start it once 2 went quiet.)
	c.recoverNow(3, iid(1, 1))
	c.flush(3)
	if r3 := c.eng[3].get(iid(1, 1), false); r3.vballot != b1 || !b2.Less(r3.ballot) {
		t.Fatalf("3 holds vote %v under promise %v; want vote b1 %v kept apart from a promise above b2 %v",
			r3.vballot, r3.ballot, b1, b2)
	}
	c.deliverWhere(and(ofType(protocol.MsgEPrepare), to(1)))
	for _, m := range c.queue {
		if m.Type == protocol.MsgEPrepareOK && m.From == 1 && m.VBallot != b2 {
			t.Fatalf("1 reports its vote at %v, want b2 %v", m.VBallot, b2)
		}
	}
	c.deliverAll()
	c.restart(2)
	c.run(1000)
	// The harness fails on any disagreement; check the chosen value won explicitly.
	for _, id := range c.ids {
		in, _ := c.committedAt(id, iid(1, 1))
		if fingerprint(in) != fingerprint(chosen) {
			t.Fatalf("replica %d committed %s, want the value chosen at b2 %s", id, fingerprint(in), fingerprint(chosen))
		}
	}
}

// Two command leaders crash with conflicting instances that miss each other, each one
// possibly fast-committed as far as a recovery quorum can tell: 1.1 reached 3 first
// and 2.1 reached 5 first (identical votes), then each reached the other's voter (votes
// that add a dependency). Validation of 1.1 finds 2.1 as an invalidator and waits for
// it, validation of 2.1 finds 1.1 and waits for it: without a rule the two recoveries
// wait on each other forever. Both cannot have been fast-committed (their identical
// voters are disjoint and two fast quorums of 5 intersect); the leader of 1.1 cannot
// have voted for 2.1's candidate (1.1 does not cover 2.1, and a vote of its own would),
// which leaves 2.1 one possible identical vote besides its leader's, fewer than the
// fast quorum needs (and symmetrically for 1.1 at the replica that recovers 2.1 first):
// one of them restarts Phase 1 and depends on the other, which keeps its value.
func TestRecoveryTwoCrashedLeadersWaitingOnEachOther(t *testing.T) {
	c := newCluster(t, 5, nil)
	c.propose(1, c.put("k", "a"))
	c.propose(2, c.put("k", "b"))
	c.deliverWhere(and(ofType(protocol.MsgPreAccept), from(1), to(3)))
	c.deliverWhere(and(ofType(protocol.MsgPreAccept), from(2), to(5)))
	c.deliverWhere(and(ofType(protocol.MsgPreAccept), from(1), to(5)))
	c.deliverWhere(and(ofType(protocol.MsgPreAccept), from(2), to(3)))
	c.crash(1)
	c.crash(2)
	c.dropWhere(func(protocol.Message) bool { return true })
	if v := c.eng[3].get(iid(1, 1), false).vballot; v != (protocol.Ballot{Replica: 1}) {
		t.Fatalf("setup: 3's vote for 1.1 is not identical (vballot %v)", v)
	}
	if v := c.eng[5].get(iid(2, 1), false).vballot; v != (protocol.Ballot{Replica: 2}) {
		t.Fatalf("setup: 5's vote for 2.1 is not identical (vballot %v)", v)
	}
	c.run(2000)
	a, b := c.mustCommitted(iid(1, 1)), c.mustCommitted(iid(2, 1))
	if (len(a.Deps) == 0) == (len(b.Deps) == 0) || !(dependsOn(a, b) || dependsOn(b, a)) {
		t.Errorf("1.1 = %s, 2.1 = %s: want one to keep its candidate (no deps) and the other to depend on it",
			fingerprint(a), fingerprint(b))
	}
	c.checkVisibility()
}
