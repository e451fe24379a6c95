package multipaxos

import (
	"math"

	"github.com/parliament-lab/parliament/protocol"
)

// Truncation and snapshot catch-up (protocol.Compactor). The runtime snapshots the state
// machine at its executed frontier [{0, F}] and calls Compact once the snapshot is durable;
// from then on slots up to F may leave memory (RetainCmds of them stay for cheap catch-up)
// and the write-ahead log may be replaced by LiveRecords. A peer that needs slots this
// replica no longer holds gets a MsgSnapshot instead, which the runtime fills with the
// state-machine snapshot; the peer installs it and continues with the log.
//
// Safety does not rest on the dropped slots: every slot dropped here is at or below the
// commit point this replica reports in its promises, so a candidate that cannot learn one of
// them from its phase-1 quorum refuses to lead (becomeLeader), and an Accept for a dropped
// slot is acknowledged only in a ballot that can only carry the chosen value (chosenBound).

// frontierSlot returns the Multi-Paxos entry {0, slot} of a frontier.
func frontierSlot(frontier []protocol.InstanceID) (uint64, bool) {
	for _, d := range frontier {
		if d.Replica == 0 {
			return d.Num, true
		}
	}
	return 0, false
}

// Compact implements protocol.Compactor. frontier is [{0, F}]: every slot up to F is
// executed and folded into a durable state-machine snapshot. The engine may now drop those
// slots; it keeps the newest of them up to RetainCmds commands, so that peers a little
// behind catch up from memory rather than by snapshot transfer. Nothing is persisted.
//
// The engine never drops a slot that no Compact covers: memory stays bounded only if the
// runtime compacts periodically.
func (e *Engine) Compact(frontier []protocol.InstanceID) {
	f, ok := frontierSlot(frontier)
	if !ok {
		return
	}
	// The runtime executes only what the engine emitted, so F <= commitIndex; clamp anyway
	// so that a confused caller can never make the engine claim uncommitted slots.
	f = min(f, e.commitIndex)
	if f <= e.snapIndex {
		return
	}
	e.snapIndex = f
	e.compact()
}

// LiveRecords implements protocol.Compactor: a RecordSnapshot for the compacted frontier
// (Ballot = chosenBallot, which bounds the ballots of the values it covers), the promised
// ballot, every slot above the frontier that holds a value (accepted with its VBallot, or
// committed), and the commit point. New rebuilds this engine from them as it is now,
// without the slots the snapshot covers. The records share memory with the engine: write
// them before calling into it again.
func (e *Engine) LiveRecords() []protocol.Record {
	recs := make([]protocol.Record, 0, 3+e.log.n)
	recs = append(recs, e.snapshotRecord())
	if !e.promised.IsZero() {
		recs = append(recs, protocol.Record{Type: protocol.RecordBallot, Ballot: e.promised})
	}
	for s := max(e.log.base, e.snapIndex+1); s <= e.log.last(); s++ {
		sl := e.log.get(s)
		if sl.status != protocol.StatusAccepted && sl.status != protocol.StatusCommitted {
			continue
		}
		recs = append(recs, protocol.Record{
			Type: protocol.RecordInstance,
			Inst: protocol.Instance{ID: protocol.InstanceID{Num: s}, Status: sl.status, VBallot: sl.vballot, Seq: s, Cmds: sl.cmds},
		})
	}
	return append(recs, protocol.Record{Type: protocol.RecordCommitIndex, Index: e.commitIndex})
}

func (e *Engine) snapshotRecord() protocol.Record {
	return protocol.Record{
		Type:   protocol.RecordSnapshot,
		Ballot: e.chosenBallot,
		Index:  e.snapIndex,
		Inst:   protocol.Instance{Deps: []protocol.InstanceID{{Num: e.snapIndex}}},
	}
}

// snapshotRetryTicks is how long a replica waits before sending another snapshot to the
// same peer: a snapshot is large, and the peer's catch-up retries (every
// 2*HeartbeatTicks) would otherwise send one per retry while the first is in transit.
func (e *Engine) snapshotRetryTicks() uint64 { return uint64(2 * e.cfg.ElectionTicks) }

// sendSnapshot asks the runtime to transfer its state-machine snapshot to peer `to`:
// MsgSnapshot{Index = compacted slot, Deps = [{0, slot}], VBallot = bound of the ballots of
// the values it covers}, with empty Data that the runtime fills.
func (e *Engine) sendSnapshot(to protocol.ReplicaID) {
	i := e.index(to)
	if i < 0 || e.snapIndex == 0 || e.now < e.snapNext[i] {
		return
	}
	e.snapNext[i] = e.now + e.snapshotRetryTicks()
	e.logger.Debug("multipaxos: sending snapshot", "replica", e.id, "to", to, "inst", e.snapIndex)
	e.send(protocol.Message{
		Type: protocol.MsgSnapshot, To: to, Index: e.snapIndex, VBallot: e.chosenBallot,
		Deps: []protocol.InstanceID{{Num: e.snapIndex}},
	})
}

// handleSnapshot installs a snapshot the runtime has already restored into the state
// machine: every slot up to its frontier is chosen and executed. Any role installs it (the
// runtime cannot take the restore back); a leader or candidate steps down first, because a
// leader's commit point must only cover slots chosen through its own quorum (followers
// commit what that commit point covers), which a transferred snapshot does not guarantee.
func (e *Engine) handleSnapshot(m *protocol.Message) {
	snap, ok := frontierSlot(m.Deps)
	if !ok {
		snap = m.Index
	}
	if snap <= e.commitIndex || snap == math.MaxUint64 {
		return // stale or duplicate (we are already there), or corrupt
	}
	if e.role != RoleFollower {
		e.becomeFollower(0)
	}
	e.logger.Debug("multipaxos: installing snapshot", "replica", e.id, "from", m.From, "inst", snap, "commit", e.commitIndex)
	// Whatever this replica held up to snap (accepted values included) is superseded by
	// the chosen values the snapshot folds in.
	e.dropThrough(snap)
	e.commitIndex = snap
	e.snapIndex = snap
	if e.chosenBallot.Less(m.VBallot) {
		e.chosenBallot = m.VBallot
	}
	// The runtime made the snapshot durable before this Ready's records: a restart then
	// starts from it instead of re-emitting older slots over it.
	e.persist = append(e.persist, e.snapshotRecord())
	e.catchUpInflight = false
	// Continue with the log: slots above snap already known chosen, or accepted in the
	// current leader's ballot and covered by its commit point, commit now; the rest is
	// asked of the leader, or of the sender when no leader is known.
	e.learnCommit(0)
	if !e.catchUpInflight && e.leader == 0 {
		e.sendCatchUp(m.From)
	}
}

// chosenBound returns, for a slot this replica knows is chosen, a ballot at or above the one
// in which its value was chosen (false when s is not known chosen here). By Paxos (P2b, Paxos
// Made Simple §2.2) every proposal in a ballot at least that high carries the chosen value,
// so only such an Accept may be acknowledged without storing it. A stale leader's Accept in
// a lower ballot may carry another value; acknowledging it would count a vote this replica
// never cast and could let that value be chosen a second time.
func (e *Engine) chosenBound(s uint64) (protocol.Ballot, bool) {
	sl := e.log.get(s)
	switch {
	case sl != nil && sl.status == protocol.StatusCommitted:
		return sl.vballot, true
	case s <= e.commitIndex:
		return e.chosenBallot, true // dropped from memory: bound over every chosen slot
	}
	return protocol.Ballot{}, false
}
