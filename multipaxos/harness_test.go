package multipaxos

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/parliament-lab/parliament/protocol"
)

// This file is a small in-test network in the style of etcd-io/raft's interaction tests:
// engines exchange messages through a queue the test controls (deliver, drop, duplicate,
// reorder, delay), ticks are explicit, and a node can crash and restart from exactly the
// records it persisted. Every Ready is checked as it is collected: committed slots must come
// strictly in order, with Seq = slot and Deps = [{0, slot-1}], and no two replicas may ever
// commit different values for one slot.

type node struct {
	id   protocol.ReplicaID
	cfg  Config
	e    *Engine
	disk []protocol.Record // what was persisted: survives crashes
	// The state machine of this incarnation: snap holds the values of slots 1..len(snap)
	// it was restored from (a snapshot), log the committed slots applied since, in order.
	snap []string
	log  []protocol.Instance
	// snaps are the durable state-machine snapshots by frontier slot (the runtime's
	// snapshot files): made by compaction or received in a MsgSnapshot; survive crashes.
	snaps     map[uint64][]string
	redirects []protocol.Command
	readys    []string // a transcript, for determinism checks
	up        bool
}

// executed is the slot up to which the node's state machine has applied commands.
func (nd *node) executed() uint64 { return uint64(len(nd.snap) + len(nd.log)) }

type envelope struct {
	m  protocol.Message
	at uint64 // delivery time (latency mode)
}

type network struct {
	t     testing.TB
	nodes []*node // nodes[id-1]
	queue []envelope
	now   uint64

	latency uint64                         // ticks a message travels (run mode)
	cut     map[[2]protocol.ReplicaID]bool // directed links that drop everything
	drop    func(m protocol.Message) bool  // extra filter applied when a message is sent

	installed  int               // snapshots installed (MsgSnapshot ahead of the receiver)
	chosen     map[uint64]string // slot -> value first committed anywhere
	violations []string
	tolerate   bool // record agreement violations instead of failing (mutation tests)
}

func ids(n int) []protocol.ReplicaID {
	out := make([]protocol.ReplicaID, n)
	for i := range out {
		out[i] = protocol.ReplicaID(i + 1)
	}
	return out
}

func newNetwork(t testing.TB, n int, seed int64, mod func(*Config)) *network {
	nw := &network{t: t, cut: map[[2]protocol.ReplicaID]bool{}, chosen: map[uint64]string{}}
	for _, id := range ids(n) {
		cfg := DefaultConfig()
		cfg.ID, cfg.Replicas, cfg.Seed = id, ids(n), seed
		if mod != nil {
			mod(&cfg)
		}
		nd := &node{id: id, cfg: cfg, snaps: map[uint64][]string{}}
		nw.nodes = append(nw.nodes, nd)
		nw.start(nd)
	}
	return nw
}

func (nw *network) node(id protocol.ReplicaID) *node { return nw.nodes[id-1] }

func (nw *network) start(nd *node) {
	nw.t.Helper()
	cfg := nd.cfg
	cfg.Records = slices.Clone(nd.disk)
	// Like the runtime, restore the state machine from the snapshot the records start
	// from (the engine uses the highest RecordSnapshot).
	snapAt := diskSnapshot(nd.disk)
	sm, ok := nd.snaps[snapAt]
	if !ok && snapAt > 0 {
		nw.t.Fatalf("replica %d: records name snapshot %d, which was never made durable", nd.id, snapAt)
	}
	e, err := New(cfg)
	if err != nil {
		nw.t.Fatalf("New(%d): %v", nd.id, err)
	}
	nd.e, nd.snap, nd.log, nd.up = e, slices.Clone(sm), nil, true
	nw.collect(nd.id)
}

// diskSnapshot returns the highest snapshot frontier named by records.
func diskSnapshot(recs []protocol.Record) uint64 {
	var at uint64
	for _, r := range recs {
		if r.Type == protocol.RecordSnapshot {
			at = max(at, r.Index)
		}
	}
	return at
}

// compact plays the runtime's truncation: snapshot the state machine at the executed
// frontier, make it durable, Compact, and (if replace) replace the log with LiveRecords.
func (nw *network) compact(id protocol.ReplicaID, replace bool) {
	nw.t.Helper()
	nd := nw.node(id)
	if !nd.up {
		return
	}
	f := nd.executed()
	if f != nd.e.CommitIndex() {
		nw.t.Fatalf("replica %d executed %d, engine commit %d", id, f, nd.e.CommitIndex())
	}
	nd.snaps[f] = nd.committedValues()
	nd.e.Compact([]protocol.InstanceID{{Num: f}})
	if replace {
		recs := nd.e.LiveRecords()
		if len(recs) == 0 || recs[0].Type != protocol.RecordSnapshot || recs[0].Index < f ||
			!slices.Equal(recs[0].Inst.Deps, []protocol.InstanceID{{Num: recs[0].Index}}) {
			nw.t.Fatalf("replica %d LiveRecords start %v after Compact(%d), want a RecordSnapshot of the frontier", id, recs[:min(1, len(recs))], f)
		}
		nd.disk = slices.Clone(recs)
		for at := range nd.snaps {
			if at < recs[0].Index {
				delete(nd.snaps, at) // no record names it any more
			}
		}
	}
	nw.collect(id)
}

// encodeSnapshot and decodeSnapshot stand for the KV snapshot carried in MsgSnapshot.Data.
func encodeSnapshot(values []string) []byte { return []byte(strings.Join(values, "\x1e")) }

func decodeSnapshot(b []byte) []string {
	if len(b) == 0 {
		return nil
	}
	return strings.Split(string(b), "\x1e")
}

// crash stops a node: its in-memory state and the messages addressed to it are lost.
func (nw *network) crash(id protocol.ReplicaID) {
	nw.node(id).up = false
	nw.queue = slices.DeleteFunc(nw.queue, func(env envelope) bool { return env.m.To == id })
}

// restart rebuilds the node from its persisted records.
func (nw *network) restart(id protocol.ReplicaID) { nw.start(nw.node(id)) }

// isolate cuts every link to and from id; heal restores all links.
func (nw *network) isolate(id protocol.ReplicaID) {
	for _, o := range nw.nodes {
		if o.id != id {
			nw.cut[[2]protocol.ReplicaID{id, o.id}] = true
			nw.cut[[2]protocol.ReplicaID{o.id, id}] = true
		}
	}
}

func (nw *network) heal() { clear(nw.cut); nw.drop = nil }

// collect drains one node's Ready: persist, queue messages, check commits, Advance.
func (nw *network) collect(id protocol.ReplicaID) {
	nw.t.Helper()
	nd := nw.node(id)
	if !nd.up {
		return
	}
	rd := nd.e.Ready()
	nd.readys = append(nd.readys, fmt.Sprintf("%d p=%d m=%d c=%d r=%d l=%d", nw.now, len(rd.Persist), len(rd.Messages), len(rd.Committed), len(rd.Redirect), rd.Leader))
	nd.disk = append(nd.disk, rd.Persist...)
	for _, m := range rd.Messages {
		if m.From != id || m.To == id || m.To == 0 {
			nw.t.Fatalf("replica %d sent a malformed message %v", id, m)
		}
		if m.Type == protocol.MsgSnapshot {
			// The runtime fills Data with the snapshot matching the engine's frontier.
			sm, ok := nd.snaps[m.Index]
			if !ok || len(m.Data) != 0 || !slices.Equal(m.Deps, []protocol.InstanceID{{Num: m.Index}}) {
				nw.t.Fatalf("replica %d sent snapshot %v deps %v data %d bytes: no such durable snapshot or malformed", id, m, m.Deps, len(m.Data))
			}
			m.Data = encodeSnapshot(sm)
		}
		if nw.cut[[2]protocol.ReplicaID{m.From, m.To}] || (nw.drop != nil && nw.drop(m)) {
			continue
		}
		nw.queue = append(nw.queue, envelope{m: m, at: nw.now + nw.latency})
	}
	for _, inst := range rd.Committed {
		nw.checkCommitted(nd, inst)
		nd.log = append(nd.log, inst)
	}
	nd.redirects = append(nd.redirects, rd.Redirect...)
	nd.e.Advance(rd)
}

func (nw *network) checkCommitted(nd *node, inst protocol.Instance) {
	nw.t.Helper()
	s := nd.executed() + 1
	if inst.ID != (protocol.InstanceID{Num: s}) || inst.Seq != s || inst.Status != protocol.StatusCommitted {
		nw.t.Fatalf("replica %d committed %v seq %d status %v, want slot %d in order", nd.id, inst.ID, inst.Seq, inst.Status, s)
	}
	wantDeps := []protocol.InstanceID{{Num: s - 1}}
	if s == 1 {
		wantDeps = nil
	}
	if !slices.Equal(inst.Deps, wantDeps) {
		nw.t.Fatalf("replica %d slot %d deps %v, want %v", nd.id, s, inst.Deps, wantDeps)
	}
	if len(inst.Cmds) == 0 {
		nw.t.Fatalf("replica %d committed slot %d with no command", nd.id, s)
	}
	nw.checkChosen(nd, s, value(inst.Cmds))
}

func (nw *network) checkChosen(nd *node, s uint64, v string) {
	nw.t.Helper()
	if prev, ok := nw.chosen[s]; !ok {
		nw.chosen[s] = v
	} else if prev != v {
		msg := fmt.Sprintf("AGREEMENT VIOLATED: replica %d committed %s in slot %d, another replica committed %s", nd.id, v, s, prev)
		if !nw.tolerate {
			nw.t.Fatal(msg)
		}
		nw.violations = append(nw.violations, msg)
	}
}

// value is a readable fingerprint of a slot's commands.
func value(cmds []protocol.Command) string {
	var b strings.Builder
	for i, c := range cmds {
		if i > 0 {
			b.WriteByte(',')
		}
		if c.Op == protocol.OpNoop {
			b.WriteString("noop")
			continue
		}
		fmt.Fprintf(&b, "%s=%s", c.Key, c.Value)
	}
	return b.String()
}

// put returns a client command writing v to key k.
func put(client, seq uint64, k, v string) protocol.Command {
	return protocol.Command{ClientID: client, Seq: seq, Op: protocol.OpPut, Key: []byte(k), Value: []byte(v)}
}

func (nw *network) propose(id protocol.ReplicaID, cmds ...protocol.Command) {
	nw.t.Helper()
	nd := nw.node(id)
	if !nd.up {
		return
	}
	nd.e.Propose(cmds)
	nw.collect(id)
}

// deliver steps one message into its destination.
func (nw *network) deliver(m protocol.Message) {
	nw.t.Helper()
	nd := nw.node(m.To)
	if !nd.up {
		return
	}
	if m.Type == protocol.MsgSnapshot && m.Index > nd.executed() {
		// The runtime restores the state machine, makes the snapshot durable, then Steps.
		sm := decodeSnapshot(m.Data)
		if uint64(len(sm)) != m.Index {
			nw.t.Fatalf("snapshot %v holds %d slots", m, len(sm))
		}
		for i, v := range sm {
			nw.checkChosen(nd, uint64(i+1), v)
		}
		nd.snap, nd.log = sm, nil
		nd.snaps[m.Index] = slices.Clone(sm)
		nw.installed++
		nd.e.Step(m)
		if c := nd.e.CommitIndex(); c < m.Index {
			nw.t.Fatalf("replica %d installed snapshot %d but its commit point is %d", nd.id, m.Index, c)
		}
		nw.collect(m.To)
		return
	}
	nd.e.Step(m)
	nw.collect(m.To)
}

// deliverAll delivers queued messages in FIFO order until none is left.
func (nw *network) deliverAll() {
	nw.t.Helper()
	for steps := 0; len(nw.queue) > 0; steps++ {
		if steps > 200_000 {
			for _, env := range nw.queue[:min(20, len(nw.queue))] {
				nw.t.Logf("queued: %v idx=%d insts=%d cmds=%d", env.m, env.m.Index, len(env.m.Insts), len(env.m.Cmds))
			}
			nw.t.Fatal("deliverAll: messages never quiesce")
		}
		env := nw.queue[0]
		nw.queue = nw.queue[1:]
		nw.deliver(env.m)
	}
}

// take removes and returns the queued messages matching f, in order.
func (nw *network) take(f func(m protocol.Message) bool) []protocol.Message {
	var out []protocol.Message
	nw.queue = slices.DeleteFunc(nw.queue, func(env envelope) bool {
		if f(env.m) {
			out = append(out, env.m)
			return true
		}
		return false
	})
	return out
}

// dropWhere drops the queued messages matching f and returns how many.
func (nw *network) dropWhere(f func(m protocol.Message) bool) int { return len(nw.take(f)) }

func (nw *network) tick(id protocol.ReplicaID) {
	nd := nw.node(id)
	if !nd.up {
		return
	}
	nd.e.Tick()
	nw.collect(id)
}

// tickAll ticks every live node once, then delivers everything (zero-latency mode).
func (nw *network) tickAll(n int) {
	nw.t.Helper()
	for range n {
		nw.now++
		for _, nd := range nw.nodes {
			nw.tick(nd.id)
		}
		nw.deliverAll()
	}
}

// run advances time by n ticks in latency mode: each message arrives nw.latency ticks after
// it was sent.
func (nw *network) run(n int) {
	nw.t.Helper()
	for range n {
		nw.now++
		for _, nd := range nw.nodes {
			nw.tick(nd.id)
		}
		for {
			i := slices.IndexFunc(nw.queue, func(env envelope) bool { return env.at <= nw.now })
			if i < 0 {
				break
			}
			env := nw.queue[i]
			nw.queue = slices.Delete(nw.queue, i, i+1)
			nw.deliver(env.m)
		}
	}
}

// leader returns the unique live leader whose ballot is the highest, or 0.
func (nw *network) leader() protocol.ReplicaID {
	var best *node
	for _, nd := range nw.nodes {
		if nd.up && nd.e.Role() == RoleLeader && (best == nil || best.e.ballot.Less(nd.e.ballot)) {
			best = nd
		}
	}
	if best == nil {
		return 0
	}
	return best.id
}

// electLeader ticks until a leader exists that every live node follows.
func (nw *network) electLeader(maxTicks int) protocol.ReplicaID {
	nw.t.Helper()
	for range maxTicks {
		nw.tickAll(1)
		if l := nw.leader(); l != 0 && nw.allFollow(l) {
			return l
		}
	}
	nw.t.Fatalf("no leader after %d ticks", maxTicks)
	return 0
}

func (nw *network) allFollow(l protocol.ReplicaID) bool {
	for _, nd := range nw.nodes {
		if nd.up && nd.e.Leader() != l {
			return false
		}
	}
	return true
}

// committedValues returns a node's committed values in slot order.
func (nd *node) committedValues() []string {
	out := slices.Clone(nd.snap)
	for _, inst := range nd.log {
		out = append(out, value(inst.Cmds))
	}
	return out
}

// requireSameLogs checks that every live node committed exactly want.
func (nw *network) requireLogs(want ...string) {
	nw.t.Helper()
	for _, nd := range nw.nodes {
		if !nd.up {
			continue
		}
		if got := nd.committedValues(); !slices.Equal(got, want) {
			nw.t.Fatalf("replica %d committed %q, want %q", nd.id, got, want)
		}
	}
}
