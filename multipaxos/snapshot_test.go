package multipaxos

import (
	"math"
	"slices"
	"strconv"
	"testing"

	"github.com/parliament-lab/parliament/protocol"
)

// Truncation and snapshot catch-up (protocol.Compactor), as stories. The harness plays the
// runtime: it snapshots a replica's state machine at its executed frontier, calls Compact,
// may replace the replica's log with LiveRecords, fills MsgSnapshot.Data with the matching
// snapshot and restores the receiver's state machine from it before stepping the message.

// wipe loses a replica's disk and snapshots and starts it empty (a replaced machine).
func (nw *network) wipe(id protocol.ReplicaID) {
	nw.crash(id)
	nd := nw.node(id)
	nd.disk, nd.snaps = nil, map[uint64][]string{}
	nw.restart(id)
}

// A long run with periodic compaction keeps memory and the log bounded at every replica: the
// slots in memory, the ring buffer and the records that rebuild a replica stay under fixed
// bounds while 8,000 slots commit. The same run without Compact keeps every slot (the
// engine never forgets a slot no snapshot covers), so the bounds are not met by accident.
func TestBoundedMemoryWithPeriodicCompact(t *testing.T) {
	const slots, every, retain = 8000, 200, 50
	run := func(compact bool) (maxSlots, maxRing, maxDisk int) {
		nw := newNetwork(t, 3, 1, func(c *Config) { c.RetainCmds = retain })
		l := nw.electLeader(100)
		for i := range slots {
			nw.propose(l, put(1, uint64(i+1), "k"+strconv.Itoa(i%7), strconv.Itoa(i)))
			nw.deliverAll()
			if compact && i%every == every-1 {
				for _, nd := range nw.nodes {
					nw.compact(nd.id, true)
				}
			}
			for _, nd := range nw.nodes {
				maxSlots = max(maxSlots, nd.e.log.n)
				maxRing = max(maxRing, len(nd.e.log.ring))
				maxDisk = max(maxDisk, len(nd.disk))
			}
		}
		for _, nd := range nw.nodes {
			if got := nd.executed(); got != slots {
				t.Fatalf("compact=%v: replica %d executed %d slots, want %d", compact, nd.id, got, slots)
			}
		}
		return maxSlots, maxRing, maxDisk
	}
	maxSlots, maxRing, maxDisk := run(true)
	// Between two compactions: `every` new slots, plus `retain` compacted ones kept.
	if maxSlots > every+retain+1 || maxRing > 512 || maxDisk > 2*(every+retain)+10 {
		t.Fatalf("with compaction: up to %d slots in memory, ring %d, %d records on disk; want <= %d, <= 512, <= %d",
			maxSlots, maxRing, maxDisk, every+retain+1, 2*(every+retain)+10)
	}
	if maxSlots, _, _ := run(false); maxSlots < slots {
		t.Fatalf("without compaction only %d slots stayed in memory, want all %d", maxSlots, slots)
	}
}

// A follower compacts and replaces its log with LiveRecords while it holds a value accepted
// above its commit point, then crashes. Restarted from those records alone it keeps its
// promise and the accepted value (reported in phase 1 with its ballot), restores its state
// machine from the snapshot without re-emitting the slots it covers, and commits the
// accepted slot when the leader retransmits it.
func TestRestartFromLiveRecords(t *testing.T) {
	nw := newNetwork(t, 3, 9, nil)
	l := nw.electLeader(100)
	f := protocol.ReplicaID(1)
	if l == 1 {
		f = 2
	}
	b := nw.node(l).e.ballot
	nw.propose(l, put(1, 1, "a", "1"))
	nw.deliverAll()
	nw.propose(l, put(1, 2, "b", "2"))
	nw.deliverAll()
	// Slot 3 reaches only f, and f's acceptance is lost.
	nw.propose(l, put(1, 3, "c", "3"))
	for _, m := range nw.take(isType(protocol.MsgAccept)) {
		if m.To == f {
			nw.deliver(m)
		}
	}
	nw.dropWhere(isType(protocol.MsgAccepted))

	nw.compact(f, true)
	recs := nw.node(f).disk
	var types []protocol.RecordType
	for _, r := range recs {
		types = append(types, r.Type)
	}
	wantTypes := []protocol.RecordType{protocol.RecordSnapshot, protocol.RecordBallot, protocol.RecordInstance, protocol.RecordCommitIndex}
	if !slices.Equal(types, wantTypes) || recs[0].Index != 2 || recs[1].Ballot != b ||
		recs[2].Inst.ID.Num != 3 || recs[2].Inst.Status != protocol.StatusAccepted || recs[2].Inst.VBallot != b || recs[3].Index != 2 {
		t.Fatalf("LiveRecords %+v, want snapshot@2, ballot %v, slot 3 accepted in %v, commit 2", recs, b, b)
	}

	nw.crash(f)
	nw.restart(f)
	nd := nw.node(f)
	if len(nd.log) != 0 || !slices.Equal(nd.committedValues(), []string{"a=1", "b=2"}) || nd.e.CommitIndex() != 2 {
		t.Fatalf("restarted replica re-emitted %d slots, state %q, commit %d; want nothing re-emitted over the snapshot [a=1 b=2]",
			len(nd.log), nd.committedValues(), nd.e.CommitIndex())
	}
	if nd.e.Ballot() != b {
		t.Fatalf("restarted replica promised %v, want %v", nd.e.Ballot(), b)
	}
	// Phase 1 from a would-be candidate: the accepted value is still reported.
	c := 6 - l - f
	nd.e.Step(protocol.Message{Type: protocol.MsgPrepare, From: c, To: f, Ballot: b.Next(c), Index: 1})
	rd := nd.e.Ready()
	if len(rd.Messages) != 1 || rd.Messages[0].Type != protocol.MsgPromise || rd.Messages[0].Index != 2 ||
		len(rd.Messages[0].Insts) != 1 || rd.Messages[0].Insts[0].ID.Num != 3 || rd.Messages[0].Insts[0].VBallot != b {
		t.Fatalf("promise %+v, want commit 2 and slot 3 accepted in %v", rd.Messages, b)
	}
	nd.e.Advance(rd)
	// That candidate never follows up; the cluster elects a leader again and slot 3 commits.
	nw.tickAll(100)
	nw.requireLogs("a=1", "b=2", "c=3")
}

// A replica that lost its disk (a replaced machine) rejoins a cluster whose replicas have
// compacted far beyond what they retain: the leader answers its first catch-up with one
// snapshot, the replica installs it, then learns the remaining slots from the log, and
// commits new slots with everyone.
func TestEmptyReplicaCatchesUpBySnapshotThenLog(t *testing.T) {
	nw := newNetwork(t, 3, 4, func(c *Config) { c.RetainCmds = 20 })
	l := nw.electLeader(100)
	f := protocol.ReplicaID(1)
	if l == 1 {
		f = 3
	}
	var want []string
	propose := func(n int) {
		for range n {
			c := put(1, uint64(len(want)+1), "k", strconv.Itoa(len(want)))
			want = append(want, value([]protocol.Command{c}))
			nw.propose(l, c)
			nw.deliverAll()
		}
	}
	propose(500)
	for _, nd := range nw.nodes {
		nw.compact(nd.id, true)
	}
	propose(300) // above the snapshot: learned from the log
	nw.wipe(f)
	if got := nw.node(f).e.CommitIndex(); got != 0 {
		t.Fatalf("wiped replica starts at commit %d, want 0", got)
	}
	var snaps, replies []protocol.Message
	nw.drop = func(m protocol.Message) bool {
		switch {
		case m.Type == protocol.MsgSnapshot:
			snaps = append(snaps, m)
		case m.Type == protocol.MsgCatchUpReply && m.To == f:
			replies = append(replies, m)
		}
		return false
	}
	nw.tickAll(20)
	if len(snaps) != 1 || snaps[0].To != f || snaps[0].Index != 500 {
		t.Fatalf("snapshots sent %v, want exactly one of slot 500 to %d", snaps, f)
	}
	if len(replies) < 2 || replies[0].Insts[0].ID.Num != 501 {
		t.Fatalf("catch-up replies after the snapshot: %d, want at least 2 starting at slot 501", len(replies))
	}
	nw.requireLogs(want...)
	if nd := nw.node(f); len(nd.log) != 300 {
		t.Fatalf("replica emitted %d slots after the snapshot, want the 300 above it", len(nd.log))
	}
	propose(1)
	nw.requireLogs(want...)
}

// A snapshot lost in transit is sent again, but no more often than every 2*ElectionTicks
// ticks although the replica asks again every 2*HeartbeatTicks: snapshots are large.
func TestSnapshotRetransmissionIsRateLimited(t *testing.T) {
	nw := newNetwork(t, 3, 2, func(c *Config) { c.RetainCmds = 0 })
	l := nw.electLeader(100)
	f := protocol.ReplicaID(1)
	if l == 1 {
		f = 2
	}
	for i := range 10 {
		nw.propose(l, put(1, uint64(i+1), "k", strconv.Itoa(i)))
		nw.deliverAll()
	}
	for _, nd := range nw.nodes {
		nw.compact(nd.id, true)
	}
	nw.wipe(f)
	var sent []uint64
	nw.drop = func(m protocol.Message) bool {
		if m.Type == protocol.MsgSnapshot {
			sent = append(sent, nw.now)
			return true // lost
		}
		return false
	}
	cfg := nw.node(l).cfg
	nw.tickAll(5 * cfg.ElectionTicks)
	if len(sent) < 2 || len(sent) > 3 {
		t.Fatalf("snapshots sent at ticks %v over %d ticks, want 2 or 3 (one per %d ticks)", sent, 5*cfg.ElectionTicks, 2*cfg.ElectionTicks)
	}
	for i := 1; i < len(sent); i++ {
		if sent[i]-sent[i-1] < uint64(2*cfg.ElectionTicks) {
			t.Fatalf("snapshots sent at ticks %v: closer than %d ticks", sent, 2*cfg.ElectionTicks)
		}
	}
	nw.heal()
	nw.tickAll(3 * cfg.ElectionTicks)
	if nw.node(f).e.CommitIndex() != 10 {
		t.Fatalf("replica at commit %d after the network healed, want 10", nw.node(f).e.CommitIndex())
	}
}

// A snapshot that reaches a leader (a reply delayed from when it was a follower) is
// installed, since the runtime has already restored it, but the leader steps down first:
// its commit point must only cover slots chosen through its own quorum.
func TestSnapshotInstalledByLeaderStepsDown(t *testing.T) {
	nw := newNetwork(t, 3, 1, nil)
	l := nw.electLeader(100)
	other := protocol.ReplicaID(1)
	if l == 1 {
		other = 2
	}
	sm := []string{"x=1", "x=2", "x=3"}
	nw.node(other).snaps[3] = sm
	nw.deliver(protocol.Message{Type: protocol.MsgSnapshot, From: other, To: l, Index: 3,
		Deps: []protocol.InstanceID{{Num: 3}}, Data: encodeSnapshot(sm)})
	e := nw.node(l).e
	if e.Role() != RoleFollower || e.CommitIndex() != 3 || len(nw.node(l).log) != 0 {
		t.Fatalf("leader after a snapshot: %v at commit %d, emitted %d; want follower at 3, nothing emitted", e.Role(), e.CommitIndex(), len(nw.node(l).log))
	}
	last := nw.node(l).disk[len(nw.node(l).disk)-2:]
	if last[0].Type != protocol.RecordSnapshot || last[0].Index != 3 || last[1].Type != protocol.RecordCommitIndex || last[1].Index != 3 {
		t.Fatalf("persisted %+v, want RecordSnapshot 3 then RecordCommitIndex 3", last)
	}
	// A stale copy changes nothing; neither does a corrupt frontier.
	nw.deliver(protocol.Message{Type: protocol.MsgSnapshot, From: other, To: l, Index: 2,
		Deps: []protocol.InstanceID{{Num: 2}}, Data: encodeSnapshot(sm[:2])})
	e.Step(protocol.Message{Type: protocol.MsgSnapshot, From: other, To: l, Index: math.MaxUint64,
		Deps: []protocol.InstanceID{{Num: math.MaxUint64}}})
	if e.CommitIndex() != 3 {
		t.Fatalf("stale or corrupt snapshot moved the commit point to %d", e.CommitIndex())
	}
}

// An acceptor that knows a slot chosen (here: learned by catch-up, with the ballot it was
// chosen in) refuses a stale leader's Accept for that slot in a lower ballot: that leader's
// value may differ, and acknowledging it would count a vote the acceptor never cast (it
// stores nothing for a chosen slot), which could let a second value be chosen. In the
// current leader's ballot (or any higher) the Accept is acknowledged.
func TestChosenSlotAcceptInLowerBallotRefused(t *testing.T) {
	cfg := DefaultConfig()
	cfg.ID, cfg.Replicas = 2, ids(5)
	e, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	stale := protocol.Ballot{Round: 1, Replica: 1}
	chosenIn := protocol.Ballot{Round: 3, Replica: 4}
	// Follow the stale leader (ballot 1.1), then learn slot 1 chosen in ballot 3.4 from a peer.
	e.Step(protocol.Message{Type: protocol.MsgHeartbeat, From: 1, To: 2, Ballot: stale, Index: 1})
	e.Step(protocol.Message{Type: protocol.MsgCatchUpReply, From: 4, To: 2, Index: 1, Insts: []protocol.Instance{
		{ID: protocol.InstanceID{Num: 1}, Status: protocol.StatusCommitted, VBallot: chosenIn, Cmds: []protocol.Command{put(1, 1, "x", "chosen")}},
	}})
	if e.CommitIndex() != 1 || e.Ballot() != stale {
		t.Fatalf("commit %d promised %v, want slot 1 committed while following %v", e.CommitIndex(), e.Ballot(), stale)
	}
	e.Advance(e.Ready())
	accept := func(b protocol.Ballot) protocol.Message {
		e.Step(protocol.Message{Type: protocol.MsgAccept, From: b.Replica, To: 2, Ballot: b, Inst: protocol.InstanceID{Num: 1},
			Cmds: []protocol.Command{put(1, 9, "x", "other")}})
		rd := e.Ready()
		defer e.Advance(rd) // Advance recycles rd's buffers
		for _, m := range rd.Messages {
			if m.Type == protocol.MsgAccepted || m.Type == protocol.MsgNack {
				return m
			}
		}
		t.Fatalf("no answer to an Accept in %v: %v", b, rd.Messages)
		return protocol.Message{}
	}
	if m := accept(stale); m.Type != protocol.MsgNack || m.Ballot != chosenIn {
		t.Fatalf("stale leader's Accept for a chosen slot answered %v, want a Nack with %v", m, chosenIn)
	}
	// After compaction the slot is gone from memory; the bound survives in chosenBallot.
	e.Compact([]protocol.InstanceID{{Num: 1}})
	e.cfg.RetainCmds = 0
	e.compact()
	if e.log.get(1) != nil {
		t.Fatal("compacted slot still in memory")
	}
	if m := accept(stale); m.Type != protocol.MsgNack || m.Ballot != chosenIn {
		t.Fatalf("after compaction: stale Accept answered %v, want a Nack with %v", m, chosenIn)
	}
	current := protocol.Ballot{Round: 4, Replica: 5}
	if m := accept(current); m.Type != protocol.MsgAccepted || !m.OK {
		t.Fatalf("current leader's Accept for a chosen slot answered %v, want Accepted", m)
	}
	// The bound survives a restart from LiveRecords.
	cfg.Records = e.LiveRecords()
	e, err = New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if e.chosenBallot != chosenIn || e.CommitIndex() != 1 {
		t.Fatalf("restarted with chosen ballot %v commit %d, want %v and 1", e.chosenBallot, e.CommitIndex(), chosenIn)
	}
}
