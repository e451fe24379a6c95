package epaxos

import (
	"github.com/parliament-lab/parliament/protocol"
)

// Truncation (protocol.Compactor). See doc.go, "Truncation", for the rules and why they
// keep the dependency invariant; the comments here name the pieces.
//
// Per row r (replica index), prefix semantics:
//
//	base[r] <= cf[r]         instances <= base are forgotten; rows[r] starts after base
//	cf[r]                    compacted frontier: every instance <= cf executed here
//	blind[r] <= base[r]      forgotten without a per-key summary (restart, snapshot)
//	gf[r] = min_p cf_p[r]    executed at every replica, as far as reports say
//
// In memory, an instance numbered <= cf is committed; one numbered <= cf and not in
// memory is "gone": requests about it are answered with a MsgSnapshot.

// counters are internal event counts for tests (and future metrics).
type counters struct {
	forgotten      uint64 // instances dropped from memory
	snapOffered    uint64 // MsgSnapshot sent
	snapInstalled  uint64 // MsgSnapshot installed
	abstained      uint64 // validations this replica could not answer
	invalidatedOld uint64 // validations invalidated by a forgotten instance
}

// Compact lets the engine forget instances covered by frontier, which the runtime has
// executed and folded into a durable state-machine snapshot. Instances are kept while
// some replica has not reported executing them, but never more than RetainInstances
// per row beyond the frontier.
func (e *Engine) Compact(frontier []protocol.InstanceID) {
	changed := false
	for _, d := range frontier {
		r := e.ri(d.Replica)
		if r < 0 || d.Num <= e.cf[r] {
			continue
		}
		e.coverUncommitted(r, d.Num)
		e.cf[r] = d.Num
		changed = true
	}
	if !changed {
		return
	}
	e.cfList = nil
	e.nextNum = max(e.nextNum, e.cf[e.me]+1)
	e.updateGlobal()
}

// LiveRecords returns records that rebuild this engine as it is now: a RecordSnapshot
// whose Inst.Deps is the compacted frontier, then the full state of every instance
// still in memory, row by row. Own instance numbers are never reused after a restart
// from them: every number allocated here is either covered by the frontier or has a
// record.
func (e *Engine) LiveRecords() []protocol.Record {
	cnt := 1
	for _, row := range e.rows {
		cnt += len(row)
	}
	recs := make([]protocol.Record, 0, cnt)
	recs = append(recs, protocol.Record{Type: protocol.RecordSnapshot, Inst: protocol.Instance{Deps: e.frontierList()}})
	for _, row := range e.rows {
		for _, inst := range row {
			if inst == nil || (inst.status == protocol.StatusNone && inst.ballot.IsZero()) {
				continue
			}
			recs = append(recs, protocol.Record{Type: protocol.RecordInstance, Inst: e.snapshot(inst)})
		}
	}
	return recs
}

// Held returns the number of instances this replica keeps in memory, for tests and
// metrics: it stays bounded when Compact is called regularly.
func (e *Engine) Held() int {
	n := 0
	for _, row := range e.rows {
		for _, inst := range row {
			if inst != nil {
				n++
			}
		}
	}
	return n
}

// Frontier returns the compacted frontier (prefix semantics, one entry per row with
// a nonzero frontier): what Compact, a snapshot or a restart covered.
func (e *Engine) Frontier() []protocol.InstanceID { return e.frontierList() }

// SnapshotAhead reports whether a snapshot whose frontier is frontier (a MsgSnapshot's
// Deps) would move this replica forward: at least as far in every row and further in
// one. Only then does Step install it, and only then should the runtime restore its
// state machine from the snapshot's Data (restoring from a snapshot that is behind in
// some row would lose instances executed here).
func (e *Engine) SnapshotAhead(frontier []protocol.InstanceID) bool {
	ahead := false
	seen := 0
	for _, d := range frontier {
		r := e.ri(d.Replica)
		if r < 0 {
			continue
		}
		if d.Num < e.cf[r] {
			return false
		}
		if d.Num > e.cf[r] {
			ahead = true
		}
		seen++
	}
	if seen < e.n {
		// Rows the frontier does not name are at 0 there.
		for r := range e.cf {
			if e.cf[r] > 0 && !names(frontier, e.ids[r]) {
				return false
			}
		}
	}
	return ahead
}

func names(l []protocol.InstanceID, r protocol.ReplicaID) bool {
	for _, d := range l {
		if d.Replica == r {
			return true
		}
	}
	return false
}

func (e *Engine) frontierList() []protocol.InstanceID {
	if e.cfList == nil {
		e.cfList = e.listOf(e.cf)
	}
	return e.cfList
}

// gone reports whether id is covered by the compacted frontier but no longer (or never)
// held in memory: this replica executed it and can only offer a snapshot.
func (e *Engine) gone(id protocol.InstanceID) bool {
	r := e.ri(id.Replica)
	return r >= 0 && id.Num > 0 && id.Num <= e.cf[r] && e.get(id, false) == nil
}

// sendSnapshot tells replica to that it needs instances forgotten here: a MsgSnapshot
// with the compacted frontier and empty Data, which the runtime fills with the matching
// state-machine snapshot. At most one per peer every RecoveryTicks unless the frontier
// moved: a lagging peer asks about many instances, and a snapshot is expensive.
func (e *Engine) sendSnapshot(to protocol.ReplicaID) {
	p := e.ri(to)
	if p < 0 || p == e.me || e.now-e.snapSent[p] < int64(e.cfg.RecoveryTicks) {
		return
	}
	e.snapSent[p] = e.now
	e.counts.snapOffered++
	e.send(protocol.Message{Type: protocol.MsgSnapshot, To: to, Deps: e.frontierList()})
}

// noteFrontier records the compacted frontier peer p reported.
func (e *Engine) noteFrontier(p int, frontier []protocol.InstanceID) {
	if p < 0 || p == e.me {
		return
	}
	changed := false
	pc := e.peerCF[p]
	for _, d := range frontier {
		if r := e.ri(d.Replica); r >= 0 && d.Num > pc[r] {
			pc[r] = d.Num
			changed = true
		}
	}
	if changed {
		e.updateGlobal()
	}
}

// updateGlobal recomputes the global frontier and forgets what it allows.
func (e *Engine) updateGlobal() {
	e.anyGF = false
	for r := range e.gf {
		g := e.cf[r]
		for p := range e.peerCF {
			if p != e.me {
				g = min(g, e.peerCF[p][r])
			}
		}
		// A peer that installed a snapshot may report less than it has; never go back.
		e.gf[r] = max(e.gf[r], g)
		e.anyGF = e.anyGF || e.gf[r] > 0
	}
	retain := uint64(e.cfg.RetainInstances)
	for r := range e.rows {
		target := e.gf[r]
		if e.cf[r] > retain {
			target = max(target, e.cf[r]-retain)
		}
		e.dropTo(r, min(target, e.cf[r]), true)
	}
}

// dropTo forgets every instance of row r numbered <= target. executed says they executed
// here (Compact): their keys are then summarized in goneAny/goneWrite for validation.
func (e *Engine) dropTo(r int, target uint64, executed bool) {
	if target <= e.base[r] {
		return
	}
	row := e.rows[r]
	k := min(target-e.base[r], uint64(len(row)))
	for _, inst := range row[:k] {
		if inst != nil {
			e.forget(r, inst, executed)
			e.counts.forgotten++
		}
	}
	clear(row[:k])
	// Slicing off the front keeps the array until the next growth reallocates it with
	// only the live part: memory stays proportional to what is held.
	e.rows[r] = row[k:]
	e.base[r] = target
}

func (e *Engine) forget(r int, inst *instance, executed bool) {
	if executed && inst.status >= protocol.StatusPreAccepted {
		for i, ks := range inst.ks {
			if ks == nil {
				continue
			}
			c := &inst.ksCmds[i]
			ks.goneAny[r] = max(ks.goneAny[r], inst.id.Num)
			if !c.IsRead() {
				ks.goneWrite[r] = max(ks.goneWrite[r], inst.id.Num)
			}
		}
	}
	e.finishLead(inst)
	if inst.mine {
		// Only through a snapshot: our instance was decided elsewhere and executed by
		// the snapshot's sender. Its commands are not proposed again (if it became a
		// no-op, the client's retry brings them back; the state machine is exactly-once).
		inst.mine = false
		inst.orig = nil
		e.inflight--
	}
	// Whatever list still points at it (watch, leading, restored) lets it go.
	inst.status = protocol.StatusCommitted
	inst.emitted = true
	inst.cmds, inst.deps, inst.depsList, inst.ks, inst.ksCmds = nil, nil, nil, nil, nil
}

// coverUncommitted forgets the uncommitted instances of row r up to num, which the
// runtime says executed: they were decided elsewhere (a snapshot). With a correct
// runtime Compact never finds one.
func (e *Engine) coverUncommitted(r int, num uint64) {
	row := e.rows[r]
	// Only the range newly covered: (cf, num] (below cf the invariant already holds).
	lo := max(e.cf[r], e.base[r]) - e.base[r]
	hi := min(num-e.base[r], uint64(len(row)))
	for i := lo; i < hi; i++ {
		if inst := row[i]; inst != nil && inst.status != protocol.StatusCommitted {
			e.forget(r, inst, false)
			row[i] = nil
		}
	}
}

// tickFrontier tells every peer the compacted frontier every FrontierTicks, once there
// is one: an ECommitBatch with no Insts and Deps = the frontier.
func (e *Engine) tickFrontier() {
	if e.now-e.cfSent < int64(e.cfg.FrontierTicks) {
		return
	}
	l := e.frontierList()
	if len(l) == 0 {
		return
	}
	e.cfSent = e.now
	m := protocol.Message{Type: protocol.MsgECommitBatch, Deps: l}
	for _, p := range e.order {
		m.To = e.ids[p]
		e.send(m)
	}
}

// onSnapshot installs a peer's snapshot frontier that is ahead of ours (SnapshotAhead):
// the runtime restored the state machine from m.Data before this Step. Everything
// covered counts as committed and executed and is never emitted; instances above it are
// recovered as usual.
func (e *Engine) onSnapshot(m *protocol.Message) {
	e.noteFrontier(e.ri(m.From), m.Deps)
	if !e.SnapshotAhead(m.Deps) {
		e.learnExecuted(m.Deps)
		return
	}
	e.counts.snapInstalled++
	for _, d := range m.Deps {
		r := e.ri(d.Replica)
		if r < 0 || d.Num <= e.cf[r] {
			continue
		}
		e.dropTo(r, e.cf[r], true) // executed here: keep their key summaries
		e.dropTo(r, d.Num, false)
		e.cf[r] = d.Num
		e.blind[r] = max(e.blind[r], d.Num)
		e.anyBlind = true
	}
	e.cfList = nil
	e.nextNum = max(e.nextNum, e.cf[e.me]+1)
	// Committed instances not yet handed to the runtime that the snapshot covers must not
	// be emitted (the runtime calls Step between Advance and Ready).
	k := 0
	for _, in := range e.committed {
		if r := e.ri(in.ID.Replica); r >= 0 && in.ID.Num <= e.cf[r] {
			continue
		}
		e.committed[k] = in
		k++
	}
	clear(e.committed[k:])
	e.committed = e.committed[:k]
	e.updateGlobal()
	e.cfSent = -1 << 40 // tell peers at the next tick
}
