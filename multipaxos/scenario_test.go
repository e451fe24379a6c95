package multipaxos

import (
	"slices"
	"testing"

	"github.com/parliament-lab/parliament/protocol"
)

// Scenario tests: each reads as a story about a cluster, in the style of etcd-io/raft.

func isType(t protocol.MsgType) func(protocol.Message) bool {
	return func(m protocol.Message) bool { return m.Type == t }
}

// A fresh cluster elects one leader by phase 1, the others learn it from its heartbeats,
// and a proposal commits everywhere as slot 1 with no dependency, the next as slot 2
// depending on slot 1.
func TestElectionThenCommit(t *testing.T) {
	nw := newNetwork(t, 3, 1, nil)
	l := nw.electLeader(100)
	for _, nd := range nw.nodes {
		if nd.id != l && nd.e.Role() != RoleFollower {
			t.Fatalf("replica %d is %v, want follower of %d", nd.id, nd.e.Role(), l)
		}
		if got := nd.e.Ballot(); got != nw.node(l).e.ballot {
			t.Fatalf("replica %d promised %v, want the leader's ballot %v", nd.id, got, nw.node(l).e.ballot)
		}
	}
	if st := nw.node(l).e.Stats(); st.Elections != 1 || st.Recoveries != 1 {
		t.Fatalf("leader stats %+v, want one election won after one campaign", st)
	}
	nw.propose(l, put(1, 1, "x", "a"))
	nw.deliverAll()
	nw.propose(l, put(1, 2, "x", "b"))
	nw.deliverAll()
	nw.requireLogs("x=a", "x=b")
	if st := nw.node(l).e.Stats(); st.Committed != 2 || st.Proposed != 2 {
		t.Fatalf("leader stats %+v, want 2 proposed and 2 committed", st)
	}
}

// Every replica campaigns in the same round and every Prepare of that round is lost: no
// candidate gets a majority (a split vote). Their next timeouts come from the seeded jitter,
// so they differ; the first candidate to retry (round 1) outranks every round-0 ballot and
// wins cleanly.
func TestSplitVoteResolvedByJitter(t *testing.T) {
	nw := newNetwork(t, 3, 7, nil)
	nw.drop = func(protocol.Message) bool { return true } // the network is down
	for _, nd := range nw.nodes {
		nd.e.campaign() // all in round 0: ballots 0.1, 0.2, 0.3, every Prepare lost
		nw.collect(nd.id)
	}
	for range 2 {
		nw.now++
		for _, nd := range nw.nodes {
			nw.tick(nd.id)
		}
	}
	// Each candidate's remaining time before it retries.
	left := map[protocol.ReplicaID]int{}
	first, firstLeft := protocol.ReplicaID(0), 1<<30
	for _, nd := range nw.nodes {
		if nd.e.Role() != RoleCandidate {
			t.Fatalf("replica %d is %v, want a candidate without a majority", nd.id, nd.e.Role())
		}
		left[nd.id] = nd.e.electionTimeout - nd.e.electionElapsed
		// On a tie the higher ballot (higher replica ID, same round) wins.
		if left[nd.id] <= firstLeft {
			first, firstLeft = nd.id, left[nd.id]
		}
	}
	if left[1] == left[2] && left[2] == left[3] {
		t.Fatalf("every replica retries at the same tick (%v): no jitter", left)
	}
	// The round-0 Prepares (retransmissions included) stay lost; everything else flows.
	nw.drop = func(m protocol.Message) bool { return m.Type == protocol.MsgPrepare && m.Ballot.Round == 0 }
	l := nw.electLeader(40)
	if l != first {
		t.Fatalf("leader %d, want %d, the first to retry (remaining ticks %v)", l, first, left)
	}
	if b := nw.node(l).e.ballot; b.Round != 1 {
		t.Fatalf("leader ballot %v, want round 1 (one retry)", b)
	}
}

// Two replicas campaign at the same moment over a slow network (2 ticks each way) again and
// again. Nacks and randomized back-off must end the duel: within a bounded number of ticks
// one leader commits a command at every replica.
func TestDuellingProposersNoLivelock(t *testing.T) {
	for seed := int64(1); seed <= 20; seed++ {
		nw := newNetwork(t, 3, seed, func(c *Config) { c.ElectionTicks = 6 })
		nw.latency = 2
		nw.node(1).e.campaign()
		nw.node(2).e.campaign()
		nw.collect(1)
		nw.collect(2)
		committed := false
		for tick := 0; tick < 400 && !committed; tick += 5 {
			nw.run(5)
			if l := nw.leader(); l != 0 && nw.allFollow(l) {
				nw.propose(l, put(1, uint64(tick+1), "k", "v"))
				nw.run(10)
				committed = true
				for _, nd := range nw.nodes {
					if slices.Index(nd.committedValues(), "k=v") < 0 {
						committed = false
					}
				}
			}
		}
		if !committed {
			t.Fatalf("seed %d: no single leader committed within 400 ticks (livelock?)", seed)
		}
	}
}

// The leader proposes X but its Accepts reach only one of four other replicas, then it
// crashes: X was accepted by a minority (2 of 5) and was not chosen. The new leader may
// choose X (if its phase-1 majority includes the replica holding X) or reuse slot 1 for a
// new command (if not); either way every replica, the restarted old leader included, agrees.
func TestLeaderCrashAfterMinorityAccept(t *testing.T) {
	for _, tc := range []struct {
		name        string
		hearFromTwo bool
		wantFirst   []string // what the log holds before Y
	}{
		{"new majority excludes the acceptor", false, nil},
		{"new majority includes the acceptor", true, []string{"x=X"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			nw := newNetwork(t, 5, 3, nil)
			l := nw.electLeader(100)
			if l == 2 || l == 3 {
				t.Skipf("scenario assumes leader is not 2 or 3, got %d", l)
			}
			nw.propose(l, put(1, 1, "x", "X"))
			accepts := nw.take(isType(protocol.MsgAccept))
			for _, m := range accepts {
				if m.To == 2 {
					nw.deliver(m)
				}
			}
			nw.dropWhere(isType(protocol.MsgAccepted))
			nw.crash(l)

			// Replica 3 campaigns; replica 2's promise (holding X) arrives only in one case.
			nw.node(3).e.campaign()
			nw.collect(3)
			if !tc.hearFromTwo {
				nw.dropWhere(func(m protocol.Message) bool { return m.Type == protocol.MsgPrepare && m.To == 2 })
			}
			nw.deliverAll()
			if nw.leader() != 3 {
				t.Fatalf("leader %d, want 3", nw.leader())
			}
			nw.propose(3, put(2, 1, "y", "Y"))
			nw.tickAll(10)
			nw.restart(l)
			nw.tickAll(10)
			nw.requireLogs(append(tc.wantFirst, "y=Y")...)
		})
	}
}

// The leader's Accept for X reaches a majority (itself and replica 2) but every Accepted
// reply is lost, so nobody knows X is chosen; then the leader crashes. Replica 3, which
// never saw X, wins the election with replica 2's promise, finds X in phase 1 and must
// propose X again, never a value of its own: X commits everywhere.
func TestLeaderCrashAfterMajorityAcceptReproposes(t *testing.T) {
	nw := newNetwork(t, 3, 5, nil)
	l := nw.electLeader(100)
	other := []protocol.ReplicaID{}
	for _, nd := range nw.nodes {
		if nd.id != l {
			other = append(other, nd.id)
		}
	}
	acceptor, newLeader := other[0], other[1]
	nw.propose(l, put(1, 1, "x", "X"))
	for _, m := range nw.take(isType(protocol.MsgAccept)) {
		if m.To == acceptor {
			nw.deliver(m)
		}
	}
	nw.dropWhere(isType(protocol.MsgAccepted))
	nw.crash(l)

	nw.propose(newLeader, put(2, 1, "x", "MINE")) // no leader known: redirected, not proposed
	nw.node(newLeader).e.campaign()
	nw.collect(newLeader)
	nw.deliverAll()
	if nw.leader() != newLeader {
		t.Fatalf("leader %d, want %d", nw.leader(), newLeader)
	}
	nw.tickAll(5)
	nw.requireLogs("x=X")
	nw.restart(l)
	nw.tickAll(10)
	nw.requireLogs("x=X")
}

// The same story with the test-only mutation UnsafeIgnorePromisedValues: the old leader had
// learned X was chosen (and committed it) before crashing; the new leader proposes a no-op
// over X. The harness must see two replicas commit different values for slot 1. This proves
// the mutation breaks safety, so the simulator's checker can be tested against it.
func TestUnsafeIgnorePromisedValuesBreaksAgreement(t *testing.T) {
	for _, unsafe := range []bool{false, true} {
		nw := newNetwork(t, 3, 5, func(c *Config) { c.UnsafeIgnorePromisedValues = unsafe })
		nw.tolerate = true
		l := nw.electLeader(100)
		var acceptor, newLeader protocol.ReplicaID
		for _, nd := range nw.nodes {
			if nd.id != l {
				if acceptor == 0 {
					acceptor = nd.id
				} else {
					newLeader = nd.id
				}
			}
		}
		nw.propose(l, put(1, 1, "x", "X"))
		for _, m := range nw.take(isType(protocol.MsgAccept)) {
			if m.To == acceptor {
				nw.deliver(m) // the acceptor accepts; its Accepted reply is queued
			}
		}
		for _, m := range nw.take(isType(protocol.MsgAccepted)) {
			nw.deliver(m) // the leader learns X is chosen and commits it
		}
		if got := nw.node(l).committedValues(); !slices.Equal(got, []string{"x=X"}) {
			t.Fatalf("old leader committed %q, want [x=X]", got)
		}
		nw.dropWhere(func(protocol.Message) bool { return true }) // commit notifications lost
		nw.crash(l)
		nw.node(newLeader).e.campaign()
		nw.collect(newLeader)
		nw.deliverAll()
		nw.tickAll(5)
		nw.restart(l) // re-emits x=X from its records
		nw.tickAll(10)
		if unsafe && len(nw.violations) == 0 {
			t.Fatal("UnsafeIgnorePromisedValues: no agreement violation detected; the mutation must break safety")
		}
		if !unsafe && len(nw.violations) != 0 {
			t.Fatalf("safe engine violated agreement: %v", nw.violations)
		}
	}
}

// Lost and duplicated messages are harmless: with 30% of messages dropped and 30%
// duplicated, every proposal made at the leader still commits, once, in the same order.
func TestMessageLossAndDuplication(t *testing.T) {
	nw := newNetwork(t, 3, 11, nil)
	l := nw.electLeader(100)
	n := 0
	nw.drop = func(m protocol.Message) bool {
		n++
		switch n % 10 {
		case 0, 3, 7:
			return true
		case 1, 5, 8:
			nw.queue = append(nw.queue, envelope{m: m}) // duplicate (one extra copy)
		}
		return false
	}
	var want []string
	for i := range 40 {
		c := put(1, uint64(i+1), "k", string(rune('a'+i%26))+string(rune('0'+i/26)))
		want = append(want, value([]protocol.Command{c}))
		nw.propose(l, c)
		nw.deliverAll()
		nw.tickAll(1)
	}
	nw.tickAll(60)
	if nw.leader() != l {
		t.Fatalf("leader changed from %d to %d under loss", l, nw.leader())
	}
	nw.heal()
	nw.tickAll(10)
	nw.requireLogs(want...)
}

// A leader cut off from the others keeps its old ballot. Meanwhile another replica is
// elected with a higher ballot. When the old leader's messages arrive again they are
// refused with a Nack carrying the higher ballot, change nothing at the receiver, and the
// old leader steps down and follows.
func TestStaleBallotMessagesIgnored(t *testing.T) {
	nw := newNetwork(t, 3, 2, nil)
	old := nw.electLeader(100)
	oldBallot := nw.node(old).e.ballot
	nw.isolate(old)
	nw.propose(old, put(1, 1, "x", "STALE")) // accepted by nobody but itself
	var next protocol.ReplicaID
	for range 100 {
		nw.now++
		for _, nd := range nw.nodes {
			if nd.id != old {
				nw.tick(nd.id)
			}
		}
		nw.deliverAll()
		if next = nw.leader(); next != 0 && next != old {
			break
		}
	}
	if next == 0 || next == old {
		t.Fatal("no new leader while the old one was isolated")
	}
	nw.propose(next, put(2, 1, "y", "NEW"))
	nw.deliverAll()
	follower := protocol.ReplicaID(6) - old - next

	// Hand-deliver a stale Accept for slot 1 with the old ballot.
	f := nw.node(follower)
	disk := len(f.disk)
	f.e.Step(protocol.Message{Type: protocol.MsgAccept, From: old, To: follower, Ballot: oldBallot,
		Inst: protocol.InstanceID{Num: 1}, Cmds: []protocol.Command{put(1, 1, "x", "STALE")}, Index: 1})
	rd := f.e.Ready()
	if len(rd.Persist) != 0 || len(rd.Committed) != 0 || len(rd.Messages) != 1 ||
		rd.Messages[0].Type != protocol.MsgNack || rd.Messages[0].Ballot != f.e.Ballot() {
		t.Fatalf("stale accept produced %+v, want only a Nack with ballot %v", rd, f.e.Ballot())
	}
	f.e.Advance(rd)
	if len(f.disk) != disk {
		t.Fatal("stale accept persisted something")
	}

	nw.heal()
	nw.tickAll(20)
	if r := nw.node(old).e.Role(); r != RoleFollower || nw.node(old).e.Leader() != next {
		t.Fatalf("old leader is %v following %d, want follower of %d", r, nw.node(old).e.Leader(), next)
	}
	nw.requireLogs("y=NEW")
	if rd := nw.node(old).redirects; len(rd) != 0 {
		t.Fatalf("old leader redirected %v, but its proposal was already in a slot", rd)
	}
}

// A replica that promised a ballot, crashes and restarts from its records still refuses
// lower ballots (the promise survived) and still reports the value it accepted.
func TestRestartKeepsPromisesAndAcceptedValues(t *testing.T) {
	nw := newNetwork(t, 3, 9, nil)
	l := nw.electLeader(100)
	b := nw.node(l).e.ballot
	f, c := protocol.ReplicaID(1), protocol.ReplicaID(2) // a follower and a future candidate
	switch l {
	case 1:
		f, c = 2, 3
	case 2:
		c = 3
	}
	nw.propose(l, put(1, 1, "x", "X"))
	for _, m := range nw.take(isType(protocol.MsgAccept)) {
		if m.To == f {
			nw.deliver(m)
		}
	}
	promised := protocol.Ballot{Round: 5, Replica: c}
	nw.deliver(protocol.Message{Type: protocol.MsgPrepare, From: c, To: f, Ballot: promised, Index: 1})
	nw.queue = nil
	nw.crash(f)
	nw.restart(f)
	e := nw.node(f).e
	if e.Ballot() != promised {
		t.Fatalf("restarted replica promised %v, want %v", e.Ballot(), promised)
	}
	// Lower ballots are refused, whether in a Prepare or an Accept.
	lower := protocol.Ballot{Round: 4, Replica: c}
	e.Step(protocol.Message{Type: protocol.MsgPrepare, From: c, To: f, Ballot: lower, Index: 1})
	e.Step(protocol.Message{Type: protocol.MsgAccept, From: l, To: f, Ballot: b, Inst: protocol.InstanceID{Num: 2},
		Cmds: []protocol.Command{put(1, 2, "x", "Z")}})
	rd := e.Ready()
	if len(rd.Persist) != 0 || len(rd.Messages) != 2 || rd.Messages[0].Type != protocol.MsgNack || rd.Messages[0].Ballot != promised ||
		rd.Messages[1].Type != protocol.MsgNack || rd.Messages[1].Ballot != promised {
		t.Fatalf("lower prepare and accept got %v persisting %v, want two Nacks with %v and nothing persisted", rd.Messages, rd.Persist, promised)
	}
	e.Advance(rd)
	// A higher Prepare gets a promise reporting X accepted in ballot b.
	higher := promised.Next(c)
	e.Step(protocol.Message{Type: protocol.MsgPrepare, From: c, To: f, Ballot: higher, Index: 1})
	rd = e.Ready()
	if len(rd.Persist) != 1 || rd.Persist[0].Type != protocol.RecordBallot || rd.Persist[0].Ballot != higher {
		t.Fatalf("promise persisted %v, want RecordBallot %v in the same Ready", rd.Persist, higher)
	}
	if len(rd.Messages) != 1 || rd.Messages[0].Type != protocol.MsgPromise || len(rd.Messages[0].Insts) != 1 {
		t.Fatalf("promise %v, want one reported slot", rd.Messages)
	}
	in := rd.Messages[0].Insts[0]
	if in.ID.Num != 1 || in.VBallot != b || value(in.Cmds) != "x=X" || in.Status != protocol.StatusAccepted {
		t.Fatalf("reported %+v, want slot 1 x=X accepted in %v", in, b)
	}
	e.Advance(rd)
}

// A replica cut off while the others commit 600 slots learns them on reconnection: the
// leader's heartbeat reveals its commit point, the replica asks for the chosen slots in
// bounded pieces (256 per reply) until it has them all.
func TestLaggingReplicaCatchesUp(t *testing.T) {
	nw := newNetwork(t, 3, 4, nil)
	l := nw.electLeader(100)
	lag := protocol.ReplicaID(1)
	if l == 1 {
		lag = 2
	}
	nw.isolate(lag)
	var want []string
	for i := range 600 {
		c := put(1, uint64(i+1), "k", string(rune('a'+i%26)))
		want = append(want, value([]protocol.Command{c}))
		nw.propose(l, c)
		nw.deliverAll()
	}
	catchUps := 0
	nw.heal()
	nw.drop = func(m protocol.Message) bool {
		if m.Type == protocol.MsgCatchUpReply {
			catchUps++
			if len(m.Insts) > maxCatchUpSlots {
				t.Errorf("catch-up reply with %d slots, limit %d", len(m.Insts), maxCatchUpSlots)
			}
		}
		return false
	}
	nw.tickAll(10)
	nw.requireLogs(want...)
	if catchUps < 3 {
		t.Fatalf("%d catch-up replies, want at least 3 for 600 slots", catchUps)
	}
}

// A restarted replica re-emits what it had committed (its state machine starts empty) and
// then catches up on what it missed while down.
func TestRestartedReplicaReplaysAndCatchesUp(t *testing.T) {
	nw := newNetwork(t, 3, 6, nil)
	l := nw.electLeader(100)
	f := protocol.ReplicaID(1)
	if l == 1 {
		f = 3
	}
	nw.propose(l, put(1, 1, "a", "1"))
	nw.tickAll(3)
	nw.crash(f)
	nw.propose(l, put(1, 2, "b", "2"))
	nw.tickAll(3)
	nw.restart(f)
	if got := nw.node(f).committedValues(); !slices.Equal(got, []string{"a=1"}) {
		t.Fatalf("restarted replica replayed %q, want [a=1]", got)
	}
	nw.tickAll(5)
	nw.requireLogs("a=1", "b=2")
}

// Every replica's election timeout (4..7 ticks) is shorter than its round trip to a majority
// (12 ticks): each campaign times out before its promises arrive, and each Prepare resets the
// other replicas' timers. Candidates back off (the timeout doubles per failed campaign), so
// within bounded time one waits long enough to hear a majority, leads, and commits.
func TestCandidateBacksOffWhenRoundTripExceedsTimeout(t *testing.T) {
	for seed := int64(1); seed <= 10; seed++ {
		nw := newNetwork(t, 3, seed, func(c *Config) { c.ElectionTicks, c.HeartbeatTicks = 4, 1 })
		nw.latency = 6
		committed := false
		for tick := 0; tick < 600 && !committed; tick += 10 {
			nw.run(10)
			if l := nw.leader(); l != 0 && nw.allFollow(l) {
				nw.propose(l, put(1, 1, "k", "v"))
				nw.run(30)
				committed = true
				for _, nd := range nw.nodes {
					if !slices.Equal(nd.committedValues(), []string{"k=v"}) {
						committed = false
					}
				}
			}
		}
		if !committed {
			t.Fatalf("seed %d: no leader committed within 600 ticks although every round trip exceeds the timeout", seed)
		}
		if l := nw.leader(); nw.node(l).e.failedCampaigns != 0 {
			t.Fatalf("seed %d: leader still counts %d failed campaigns", seed, nw.node(l).e.failedCampaigns)
		}
	}
}
