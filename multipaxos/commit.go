package multipaxos

import "github.com/parliament-lab/parliament/protocol"

// Learning (Paxos Made Simple §2.4): the leader learns a slot is chosen from a majority of
// acceptances and tells the others its commit point. A follower commits slot s when the
// leader's commit point covers s and its own value for s was accepted in the leader's
// ballot (one value per slot per ballot, so it is the chosen one); otherwise it asks for the
// chosen values (catch-up).

// advanceCommit moves the commit point over every contiguous chosen slot and emits each one,
// strictly in slot order, for the executor.
func (e *Engine) advanceCommit() {
	for {
		s := e.commitIndex + 1
		sl := e.log.get(s)
		if sl == nil || sl.status != protocol.StatusCommitted {
			return
		}
		e.commitIndex = s
		e.retained += len(sl.cmds)
		if e.chosenBallot.Less(sl.vballot) {
			e.chosenBallot = sl.vballot
		}
		e.committed = append(e.committed, protocol.Instance{
			ID:      protocol.InstanceID{Num: s},
			Status:  protocol.StatusCommitted,
			VBallot: sl.vballot,
			Seq:     s,
			Deps:    e.depsOf(s),
			Cmds:    sl.cmds,
		})
	}
}

// depsOf returns [{0, s-1}] (nil for slot 1) carved from a shared arena: one allocation per
// many slots instead of one per slot.
func (e *Engine) depsOf(s uint64) []protocol.InstanceID {
	if s <= 1 {
		return nil
	}
	if len(e.depArena) == cap(e.depArena) {
		e.depArena = make([]protocol.InstanceID, 0, 512)
	}
	e.depArena = append(e.depArena, protocol.InstanceID{Num: s - 1})
	n := len(e.depArena)
	return e.depArena[n-1 : n : n]
}

// learnCommit handles the current leader's commit point c (the leader's ballot is
// e.promised).
func (e *Engine) learnCommit(c uint64) {
	e.leaderCommit = max(e.leaderCommit, c)
	for s := e.commitIndex + 1; s <= e.leaderCommit; s++ {
		sl := e.log.get(s)
		if sl == nil {
			break
		}
		if sl.status == protocol.StatusAccepted && sl.vballot == e.promised {
			sl.status = protocol.StatusCommitted
		}
		if sl.status != protocol.StatusCommitted {
			break
		}
	}
	e.advanceCommit()
	if e.commitIndex < e.leaderCommit && (!e.catchUpInflight || e.now-e.catchUpSent >= e.retransmitTicks) {
		e.sendCatchUp(e.leader)
	}
}

func (e *Engine) sendCatchUp(to protocol.ReplicaID) {
	if to == 0 || to == e.id {
		return
	}
	e.catchUpInflight = true
	e.catchUpSent = e.now
	e.send(protocol.Message{Type: protocol.MsgCatchUp, To: to, Index: e.commitIndex + 1})
}

// handleCatchUp answers with chosen slots from m.Index on (bounded), in any role.
func (e *Engine) handleCatchUp(m *protocol.Message) {
	if m.Index < e.log.base && m.Index <= e.commitIndex && m.Index <= e.snapIndex {
		// The slots asked for are gone from memory but folded into our snapshot: transfer
		// it; the peer then continues from its frontier with the slots we still hold.
		e.sendSnapshot(m.From)
		return
	}
	from := max(m.Index, e.log.base)
	var insts []protocol.Instance
	ncmds := 0
	for s := from; s <= e.commitIndex && len(insts) < maxCatchUpSlots && ncmds < maxCatchUpCmds; s++ {
		sl := e.log.get(s)
		insts = append(insts, protocol.Instance{
			ID: protocol.InstanceID{Num: s}, Status: protocol.StatusCommitted, VBallot: sl.vballot, Seq: s, Cmds: sl.cmds,
		})
		ncmds += len(sl.cmds)
	}
	if m.Index < e.log.base && m.Index <= e.commitIndex {
		// Cannot happen while only compacted slots are dropped (base <= snapIndex+1); kept
		// so that a broken invariant is visible rather than a silent stall.
		e.logger.Warn("multipaxos: catch-up asks for dropped slots not yet in a snapshot", "replica", e.id, "from", m.From, "inst", m.Index,
			"base", e.log.base, "snapshot", e.snapIndex)
	}
	e.send(protocol.Message{Type: protocol.MsgCatchUpReply, To: m.From, Insts: insts, Index: e.commitIndex})
}

// handleCatchUpReply records chosen values (persisted as committed) and asks for more if the
// leader is still ahead. Only followers use it: a leader learns only through its own
// quorum, so that its commit point never covers a slot it proposed a different value for.
func (e *Engine) handleCatchUpReply(m *protocol.Message) {
	before := e.commitIndex
	for i := range m.Insts {
		in := &m.Insts[i]
		s := in.ID.Num
		if in.ID.Replica != 0 || in.Status != protocol.StatusCommitted || s <= e.commitIndex || s-e.commitIndex > maxAheadSlots {
			continue
		}
		sl := e.log.ensure(s)
		if sl.status == protocol.StatusCommitted {
			continue
		}
		sl.cmds, sl.vballot, sl.status = in.Cmds, in.VBallot, protocol.StatusCommitted
		e.persistSlot(s, sl)
	}
	e.advanceCommit()
	if e.commitIndex == before {
		// No progress (a duplicate, or the replier dropped the slots we need): leave the
		// request in flight so that only the retransmission timer asks again, never a
		// request/reply loop.
		return
	}
	e.catchUpInflight = false
	// Slots after the caught-up ones may have been accepted in the leader's ballot; the
	// leader's commit point (never the replier's: it carries no ballot) says which. This
	// asks the leader for more if needed.
	e.learnCommit(0)
	if !e.catchUpInflight && e.commitIndex < m.Index {
		e.sendCatchUp(m.From)
	}
}
