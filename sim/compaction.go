package sim

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"time"

	"github.com/parliament-lab/parliament/check"
	"github.com/parliament-lab/parliament/executor"
	"github.com/parliament-lab/parliament/kv"
	"github.com/parliament-lab/parliament/protocol"
)

// Truncation (protocol.Compactor), simulated as replica/ does it:
//
//   - Every replica snapshots its state machine periodically (the seed's period, with
//     jitter): the store's bytes (kv.Snapshot) at the executor's frontier (per row, the
//     executed prefix). The snapshot is durable at once (the snapshot file); then the
//     engine may forget what it covers (Compact) and the replica's durable records become
//     the engine's LiveRecords (the write-ahead log truncated). A torn checkpoint crashes
//     between the two: the snapshot is durable, the log still the old one.
//   - An outgoing MsgSnapshot gets, in Data, the durable snapshot at the frontier it names
//     (m.Deps), framed as an 8-byte serial number (which names the checker's record of
//     what the snapshot holds) followed by the store's bytes.
//   - A MsgSnapshot the engine will install (epaxos: SnapshotAhead; multipaxos: frontier
//     above the commit point) restores the store from Data, a fresh executor at the
//     frontier with the committed instances still pending above it, and becomes the
//     replica's durable snapshot, before the engine steps it; then the log is truncated
//     to LiveRecords, as after a local snapshot.
//   - A restart restores the store and the executor from the durable snapshot whose
//     frontier the records' RecordSnapshot names, then rebuilds the engine from them.

// compactPlan is the seed's compaction: how often each replica snapshots, and how much
// the engines retain of what they compacted (engineKnobs.retain).
type compactPlan struct {
	every  int64 // virtual nanoseconds between snapshots at one replica; 0 = never
	retain int
}

func drawCompaction(mode Compaction, rng *rand.Rand) compactPlan {
	var p compactPlan
	if mode == CompactOff || (mode == CompactSwarm && rng.Float64() < 0.2) {
		return p
	}
	// Log-uniform between 25 ms and 1.5 s: some seeds snapshot after nearly every
	// instance, some a few times per run.
	lo, hi := math.Log(float64(25*time.Millisecond)), math.Log(float64(1500*time.Millisecond))
	p.every = int64(math.Exp(lo + (hi-lo)*rng.Float64()))
	if rng.Float64() < 0.7 {
		// Tiny retention: lagging and restarted peers catch up by snapshot transfer.
		p.retain = 1 + rng.IntN(8)
	}
	return p
}

func (p compactPlan) String() string {
	if p.every == 0 {
		return "off"
	}
	r := "default"
	if p.retain > 0 {
		r = fmt.Sprint(p.retain)
	}
	return fmt.Sprintf("every=%s retain=%s", time.Duration(p.every).Round(time.Millisecond), r)
}

// snapshot is one state-machine snapshot taken by a replica. Snapshots are immutable and
// shared: the replica that took it, every replica that installed it, the messages.
type snapshot struct {
	serial   uint64
	by       protocol.ReplicaID
	frontier []protocol.InstanceID // normalized (normFrontier)
	data     []byte                // kv.Snapshot
	exec     *check.ExecState      // what the producer had executed
}

// normFrontier returns f without empty rows, sorted by row, one entry per row.
func normFrontier(f []protocol.InstanceID) []protocol.InstanceID {
	out := make([]protocol.InstanceID, 0, len(f))
	for _, d := range f {
		if d.Num == 0 {
			continue
		}
		if i := slices.IndexFunc(out, func(x protocol.InstanceID) bool { return x.Replica == d.Replica }); i >= 0 {
			out[i].Num = max(out[i].Num, d.Num)
			continue
		}
		out = append(out, d)
	}
	return sortedIDs(out)
}

func sameFrontier(a, b []protocol.InstanceID) bool { return slices.Equal(a, b) }

// recordsFrontier returns the frontier an engine restarts from: per row, the highest
// point of any RecordSnapshot in recs (both engines take the maximum).
func recordsFrontier(recs []protocol.Record) []protocol.InstanceID {
	var f []protocol.InstanceID
	for i := range recs {
		r := &recs[i]
		if r.Type != protocol.RecordSnapshot {
			continue
		}
		if len(r.Inst.Deps) == 0 && r.Index > 0 {
			f = append(f, protocol.InstanceID{Num: r.Index}) // Multi-Paxos form without Deps
		}
		f = append(f, r.Inst.Deps...)
	}
	return normFrontier(f)
}

// executedFrontier is what the replica's executor has executed, per row.
func (s *sim) executedFrontier(nd *node) []protocol.InstanceID {
	var f []protocol.InstanceID
	for _, row := range s.rows {
		if n := nd.exec.ExecutedPrefix(row); n > 0 {
			f = append(f, protocol.InstanceID{Replica: row, Num: n})
		}
	}
	return f
}

func (nd *node) findSnapshot(f []protocol.InstanceID) *snapshot {
	for i := len(nd.snaps) - 1; i >= 0; i-- {
		if sameFrontier(nd.snaps[i].frontier, f) {
			return nd.snaps[i]
		}
	}
	return nil
}

// snapFrontier is the frontier of the latest snapshot (nil: none).
func (nd *node) snapFrontier() []protocol.InstanceID {
	if l := nd.latestSnapshot(); l != nil {
		return l.frontier
	}
	return nil
}

func (nd *node) latestSnapshot() *snapshot {
	if len(nd.snaps) == 0 {
		return nil
	}
	return nd.snaps[len(nd.snaps)-1]
}

// scheduleSnapshot arms the replica's next snapshot, jittered around the seed's period.
func (s *sim) scheduleSnapshot(nd *node, first bool) {
	if s.plan.every == 0 || nd.comp == nil {
		return
	}
	d := s.plan.every/2 + s.compRng.Int64N(s.plan.every)
	if first {
		d = 1 + s.compRng.Int64N(s.plan.every)
	}
	s.schedule(event{at: s.now + d, kind: evSnapshot, node: nd.idx, inc: nd.inc})
}

// checkpoint takes a snapshot at the replica's executed frontier, lets the engine forget
// what it covers and truncates the replica's durable records to the engine's live ones.
func (s *sim) checkpoint(e *event) {
	nd := s.nodes[e.node]
	if !nd.up || e.inc != nd.inc || s.stopped {
		return
	}
	s.scheduleSnapshot(nd, false)
	f := s.executedFrontier(nd)
	if len(f) == 0 {
		return
	}
	if l := nd.latestSnapshot(); l != nil && sameFrontier(l.frontier, f) {
		return
	}
	st, v := s.checker.Snapshot(nd.id, f)
	if v != nil {
		s.violation(v)
		return
	}
	snap := &snapshot{serial: uint64(len(s.snaps)) + 1, by: nd.id, frontier: f, data: nd.store.Snapshot(), exec: st}
	s.snaps = append(s.snaps, snap)
	// Two snapshots of the same executed instances, whoever took them and however they
	// got there (restarts, installs), must hold the same state.
	key := st.Key()
	if prev, ok := s.snapByExec[key]; ok {
		if v := check.SameState([]protocol.ReplicaID{prev.by, nd.id}, [][]byte{prev.data, snap.data}, s.describeStates); v != nil {
			v.Detail = fmt.Sprintf("snapshot #%d (replica %d) and #%d (replica %d) at %v: %s", prev.serial, prev.by, snap.serial, nd.id, f, v.Detail)
			s.violation(v)
			return
		}
	} else {
		if s.snapByExec == nil {
			s.snapByExec = map[string]*snapshot{}
		}
		s.snapByExec[key] = snap
	}
	nd.snaps = append(nd.snaps, snap) // durable: the snapshot file
	s.res.Snapshots++
	if nd.tornNext {
		s.tracef("r%d snapshot #%d at %v is durable; crashes before truncating its log (%d records)",
			nd.id, snap.serial, f, len(nd.durable))
		s.crash(nd, "torn checkpoint")
		return
	}
	before := len(nd.durable)
	nd.comp.Compact(f)
	if !s.truncate(nd, snap) {
		return
	}
	if s.trace != nil {
		s.tracef("r%d snapshot #%d at %v (%d bytes, %d instances executed); log %d -> %d records",
			nd.id, snap.serial, f, len(snap.data), st.Instances(), before, len(nd.durable))
	}
	s.process(nd)
}

// truncate replaces the replica's durable records by the engine's live records, which
// must start from snap (protocol.Compactor), and deletes its older snapshots.
func (s *sim) truncate(nd *node, snap *snapshot) bool {
	live := nd.comp.LiveRecords()
	if len(live) == 0 || live[0].Type != protocol.RecordSnapshot || !sameFrontier(recordsFrontier(live[:1]), snap.frontier) {
		got := "no RecordSnapshot"
		if len(live) > 0 && live[0].Type == protocol.RecordSnapshot {
			got = fmt.Sprint(recordsFrontier(live[:1]))
		}
		s.violate(check.Contract, fmt.Sprintf("replica %d: LiveRecords start from %s, not from the snapshot at %v just taken or installed",
			nd.id, got, snap.frontier))
		return false
	}
	nd.durable = protocol.CloneRecords(live)
	nd.snaps = []*snapshot{snap}
	for id := range nd.live {
		if check.Covers(snap.frontier, id) {
			delete(nd.live, id)
		}
	}
	return true
}

// fillSnapshot puts the durable snapshot at the frontier an outgoing MsgSnapshot names
// into its Data (the engine leaves Data empty).
func (s *sim) fillSnapshot(nd *node, m *protocol.Message) bool {
	f := normFrontier(m.Deps)
	snap := nd.findSnapshot(f)
	if snap == nil {
		have := "none"
		if l := nd.latestSnapshot(); l != nil {
			have = fmt.Sprint(l.frontier)
		}
		s.violate(check.Contract, fmt.Sprintf("replica %d sends a snapshot at %v to %d, but has no durable snapshot there (latest: %s)",
			nd.id, f, m.To, have))
		return false
	}
	m.Data = binary.LittleEndian.AppendUint64(make([]byte, 0, 8+len(snap.data)), snap.serial)
	m.Data = append(m.Data, snap.data...)
	s.res.SnapshotsSent++
	return true
}

// snapshotAhead reports whether the engine will install a snapshot with frontier f, which
// is when the state machine must be restored from it first.
func (s *sim) snapshotAhead(nd *node, f []protocol.InstanceID) bool {
	switch e := nd.eng.(type) {
	case interface {
		SnapshotAhead([]protocol.InstanceID) bool
	}:
		return e.SnapshotAhead(f)
	case interface{ CommitIndex() uint64 }:
		for _, d := range f {
			if d.Replica == 0 {
				return d.Num > e.CommitIndex() && d.Num != math.MaxUint64
			}
		}
	}
	return false
}

// deliverSnapshot steps a MsgSnapshot into the replica, restoring its state machine from
// the snapshot first when the engine will install it, and truncating its log after.
func (s *sim) deliverSnapshot(nd *node, m *protocol.Message) {
	if !s.snapshotAhead(nd, m.Deps) {
		s.tracef("r%d: snapshot from r%d at %v is not ahead of it", nd.id, m.From, m.Deps)
		nd.eng.Step(*m)
		return
	}
	f := normFrontier(m.Deps)
	if len(m.Data) < 8 {
		s.violate(check.Contract, fmt.Sprintf("replica %d got a snapshot at %v from %d without data", nd.id, f, m.From))
		return
	}
	serial := binary.LittleEndian.Uint64(m.Data)
	if serial == 0 || serial > uint64(len(s.snaps)) {
		s.violate(check.Panic, fmt.Sprintf("replica %d got a snapshot with unknown serial %d", nd.id, serial))
		return
	}
	snap := s.snaps[serial-1]
	if !sameFrontier(snap.frontier, f) {
		s.violate(check.Contract, fmt.Sprintf("replica %d got a snapshot message at %v carrying snapshot #%d at %v",
			nd.id, f, serial, snap.frontier))
		return
	}
	st := kv.New()
	if err := st.Restore(m.Data[8:]); err != nil {
		s.violate(check.Panic, fmt.Sprintf("replica %d: snapshot #%d from %d does not restore: %v", nd.id, serial, m.From, err))
		return
	}
	// A fresh executor at the frontier. Every committed instance known here above the
	// frontier goes to it again, in ID order (reproducible), executed here or not: the
	// frontier is per-row prefixes, so the snapshot may lack an instance this replica
	// executed above its own prefix (SnapshotAhead compares with the engine's compacted
	// frontier, not with what executed), and only executing it again keeps its effects.
	// One the snapshot holds executes as a duplicate, which the store's sessions make a
	// no-op for writes. (replica/ re-adds only the pending ones: mutation
	// "install-drops-executed".)
	was := s.executedFrontier(nd)
	old := nd.exec
	ids := make([]protocol.InstanceID, 0, len(nd.live))
	for id := range nd.live {
		if check.Covers(f, id) {
			delete(nd.live, id) // executed by the snapshot
			continue
		}
		if s.cfg.Mutation == mutInstallDropsExecuted && old.Executed(id) {
			continue
		}
		ids = append(ids, id)
	}
	ids = sortedIDs(ids)
	readded := make(map[protocol.InstanceID]bool, len(ids))
	for _, id := range ids {
		readded[id] = true
	}
	// What the checker counts as executed here but the snapshot lacks is lost unless it
	// executes again: re-added, or not yet handed out by this engine (it arrived with an
	// earlier installed snapshot; the engine emits it once it learns the commit).
	kept := func(id protocol.InstanceID) bool {
		_, emitted := nd.live[id]
		return readded[id] || !emitted
	}
	if v := s.checker.Restored(nd.id, snap.exec, kept); v != nil {
		s.violation(v)
		return
	}
	if s.cfg.Mutation != mutInstallKeepsStore {
		nd.store = st
	}
	nd.exec = executor.New(executor.Config{Apply: func(inst *protocol.Instance) { s.apply(nd, inst) }})
	nd.exec.Restore(f)
	for _, id := range ids {
		nd.exec.Add(nd.live[id])
	}
	nd.snaps = append(nd.snaps, snap) // durable before the engine's next records
	s.res.Installs++
	if s.trace != nil {
		s.tracef("r%d installs snapshot #%d of r%d from r%d at %v (was executed to %v; %d committed instances above it handed to the new executor)",
			nd.id, serial, snap.by, m.From, f, was, len(ids))
	}
	nd.eng.Step(*m)
	nd.exec.Execute()
	s.truncate(nd, snap)
}

// restoreAtBoot restores the store and the executor of a (re)starting replica from the
// durable snapshot its records start from, if any.
func (s *sim) restoreAtBoot(nd *node) bool {
	f := recordsFrontier(nd.durable)
	if len(f) == 0 {
		return true
	}
	snap := nd.findSnapshot(f)
	if snap == nil {
		s.violate(check.Durability, fmt.Sprintf("replica %d restarts from records that start from a snapshot at %v, but no durable snapshot has that frontier (%d kept)",
			nd.id, f, len(nd.snaps)))
		return false
	}
	if err := nd.store.Restore(snap.data); err != nil {
		s.violate(check.Panic, fmt.Sprintf("replica %d: snapshot #%d does not restore: %v", nd.id, snap.serial, err))
		return false
	}
	nd.exec.Restore(f)
	s.res.Restores++
	s.violation(s.checker.Restored(nd.id, snap.exec, nil))
	s.tracef("r%d restores snapshot #%d at %v", nd.id, snap.serial, f)
	return !s.stopped
}

// drainSuspect, once the workload is done, asks an EPaxos replica to recover the
// committed instances it has never heard of (a commit lost before the heal, of an
// instance nothing it executes depends on), so that every replica ends up executing every
// instance and their state machines can be compared. A real runtime learns such numbers
// from its peers' frontier reports (ECommitBatch); the simulator takes them from the
// checker.
func (s *sim) drainSuspect(nd *node) {
	if nd.susp == nil || nd.ticks < nd.drainNext {
		return
	}
	nd.drainNext = nd.ticks + suspectTicks
	var sus []protocol.InstanceID
	for _, id := range s.checker.Missing(nd.id) {
		if !nd.exec.Executed(id) { // the engine skips what it knows committed
			sus = append(sus, id)
		}
	}
	if len(sus) > 0 {
		s.tracef("r%d drain: recovers %v", nd.id, sus)
		nd.susp.Suspect(sus)
		s.process(nd)
	}
}

// drain runs on replica 1's ticks once every operation completed: when every replica has
// executed every committed instance, their state machines must be identical.
func (s *sim) drain() {
	total := s.checker.Instances()
	var behind *node
	for _, nd := range s.nodes {
		if !nd.up || s.checker.ExecutedInstances(nd.id) != total {
			behind = nd
			break
		}
	}
	if behind == nil {
		if s.cfg.tamper != nil {
			s.cfg.tamper(s.nodes[len(s.nodes)-1].store)
		}
		ids := make([]protocol.ReplicaID, len(s.nodes))
		states := make([][]byte, len(s.nodes))
		for i, nd := range s.nodes {
			ids[i], states[i] = nd.id, nd.store.Snapshot()
		}
		s.violation(check.SameState(ids, states, s.describeStates))
		if !s.stopped {
			s.tracef("every replica executed all %d committed instances; their state machines are identical", total)
			s.stopped = true
		}
		return
	}
	if s.now > s.drainAt+int64(s.cfg.LivenessBound) {
		missing := s.checker.Missing(behind.id)
		if len(missing) > 8 {
			missing = missing[:8]
		}
		s.violate(check.Liveness, fmt.Sprintf("replica %d executed %d of %d committed instances %s after the workload ended (missing %v...)",
			behind.id, s.checker.ExecutedInstances(behind.id), total, check.FormatTime(int64(s.cfg.LivenessBound)), missing))
	}
}

// describeStates names the keys whose values differ between two store snapshots.
func (s *sim) describeStates(a, b []byte) string {
	sa, sb := kv.New(), kv.New()
	if err := sa.Restore(a); err != nil {
		return err.Error()
	}
	if err := sb.Restore(b); err != nil {
		return err.Error()
	}
	var diffs []string
	for _, k := range s.keys {
		va, oka := sa.Get([]byte(k))
		vb, okb := sb.Get([]byte(k))
		if oka != okb || string(va) != string(vb) {
			diffs = append(diffs, fmt.Sprintf("%s: %q vs %q", k, va, vb))
		}
	}
	if len(diffs) == 0 {
		return "same values, different client sessions (executed command sets)"
	}
	return strings.Join(diffs, "; ")
}
