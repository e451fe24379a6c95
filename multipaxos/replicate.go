package multipaxos

import "github.com/parliament-lab/parliament/protocol"

// Phase 2 (Paxos Made Simple §3): the leader proposes each batch of client commands in the
// next free slot with its ballot; acceptors that have not promised a higher ballot accept
// (and persist) it; a majority of acceptances chooses it. Up to Window slots are in flight.

// flushProposals puts the commands proposed since the last Ready where they belong: into new
// slots at the leader, into one MsgForward at a follower that knows the leader, or into
// Ready.Redirect when no leader is known.
func (e *Engine) flushProposals() {
	if len(e.pending) == 0 {
		return
	}
	switch {
	case e.role == RoleLeader:
		// Slots get sub-slices of pending, never copies (see enqueue): the common case is
		// one slot holding the whole batch, as proposed.
		for len(e.pending) > 0 && e.log.last()-e.commitIndex < uint64(e.cfg.Window) {
			n := min(len(e.pending), e.cfg.MaxBatch)
			e.proposeSlot(e.pending[:n:n])
			e.pending = e.pending[n:]
		}
		if len(e.pending) == 0 {
			e.pending = nil
		}
	case e.leader != 0:
		e.send(protocol.Message{Type: protocol.MsgForward, To: e.leader, Cmds: e.pending})
		e.pending = nil
	default:
		e.redirect = append(e.redirect, e.pending...)
		e.pending = nil
	}
}

// proposeSlot starts phase 2 for cmds in the next slot. The leader's own acceptance is
// persisted in the same Ready as the Accepts, so it is durable before any reply can count.
func (e *Engine) proposeSlot(cmds []protocol.Command) {
	s := e.log.last() + 1
	sl := e.log.ensure(s)
	*sl = slot{cmds: cmds, vballot: e.ballot, status: protocol.StatusAccepted, acks: 1 << e.self, sentTick: e.now}
	e.persistSlot(s, sl)
	e.broadcastAccept(s, sl, 0)
	if popcount(sl.acks) >= e.quorum { // a cluster of one
		sl.status = protocol.StatusCommitted
		e.stats.Committed++
		e.advanceCommit()
	}
}

// broadcastAccept sends MsgAccept for slot s to every peer not in skip.
func (e *Engine) broadcastAccept(s uint64, sl *slot, skip uint64) {
	for i, r := range e.replicas {
		if i == e.self || skip&(1<<i) != 0 {
			continue
		}
		e.toldCommit[i] = max(e.toldCommit[i], e.commitIndex)
		e.send(protocol.Message{
			Type: protocol.MsgAccept, To: r, Ballot: e.ballot,
			Inst: protocol.InstanceID{Num: s}, Cmds: sl.cmds, Index: e.commitIndex,
		})
	}
}

func (e *Engine) broadcastHeartbeat() {
	e.heartbeatElapsed = 0
	for i, r := range e.replicas {
		if i == e.self {
			continue
		}
		e.toldCommit[i] = max(e.toldCommit[i], e.commitIndex)
		e.send(protocol.Message{Type: protocol.MsgHeartbeat, To: r, Ballot: e.ballot, Index: e.commitIndex})
	}
}

// sendCommitNotifications tells every peer that has not heard it yet the new commit point,
// so followers learn a commit without waiting for the next Accept or heartbeat.
func (e *Engine) sendCommitNotifications() {
	for i, r := range e.replicas {
		if i == e.self || e.toldCommit[i] >= e.commitIndex {
			continue
		}
		e.toldCommit[i] = e.commitIndex
		e.send(protocol.Message{Type: protocol.MsgCommit, To: r, Ballot: e.ballot, Index: e.commitIndex})
	}
}

func (e *Engine) tickLeader() {
	e.heartbeatElapsed++
	if e.heartbeatElapsed >= e.cfg.HeartbeatTicks {
		e.broadcastHeartbeat()
	}
	// Check quorum: a leader that has not heard from a majority for an election timeout is
	// probably cut off; stepping down lets its clients go elsewhere.
	e.checkTicks++
	if e.checkTicks >= 2*e.cfg.ElectionTicks {
		e.checkTicks = 0
		if popcount(e.heard) < e.quorum {
			e.logger.Debug("multipaxos: lost quorum", "replica", e.id, "ballot", e.ballot)
			e.becomeFollower(0)
			return
		}
		e.heard = 1 << e.self
	}
	// Retransmit Accepts for slots not yet chosen (the transport may drop messages). The
	// scan is bounded by the window.
	for s := e.commitIndex + 1; s <= e.log.last(); s++ {
		sl := e.log.get(s)
		if sl.status == protocol.StatusCommitted || e.now-sl.sentTick < e.retransmitTicks {
			continue
		}
		sl.sentTick = e.now
		e.broadcastAccept(s, sl, sl.acks)
	}
}

func stepLeader(e *Engine, m protocol.Message) {
	switch m.Type {
	case protocol.MsgAccepted:
		if m.Ballot != e.ballot || !m.OK || m.Inst.Replica != 0 {
			return
		}
		bit := uint64(1) << e.index(m.From)
		e.heard |= bit
		sl := e.log.get(m.Inst.Num)
		if sl == nil || m.Inst.Num <= e.commitIndex || sl.status != protocol.StatusAccepted || sl.vballot != e.ballot {
			return
		}
		sl.acks |= bit
		if popcount(sl.acks) >= e.quorum {
			sl.status = protocol.StatusCommitted
			e.stats.Committed++
			e.advanceCommit()
		}
	case protocol.MsgHeartbeatAck:
		if m.Ballot == e.ballot && m.OK {
			e.heard |= 1 << e.index(m.From)
		}
	case protocol.MsgForward:
		e.enqueue(m.Cmds) // kept, never modified (protocol.Message allows it)
	}
}

func stepFollower(e *Engine, m protocol.Message) {
	switch m.Type {
	case protocol.MsgAccept:
		// Step already checked m.Ballot == e.promised and made m.From our leader.
		e.electionElapsed = 0
		s := m.Inst.Num
		if m.Inst.Replica != 0 || s == 0 {
			return
		}
		if bound, chosen := e.chosenBound(s); chosen && m.Ballot.Less(bound) {
			// A stale leader re-proposing a slot chosen in a higher ballot: its value may
			// differ from the chosen one. Refuse, and tell it the higher ballot.
			e.send(protocol.Message{Type: protocol.MsgNack, To: m.From, Ballot: bound, Inst: m.Inst})
			return
		}
		if s > e.commitIndex {
			if s-e.commitIndex > maxAheadSlots {
				return // far behind: learn by catch-up first
			}
			sl := e.log.ensure(s)
			if sl.status != protocol.StatusCommitted && (sl.status != protocol.StatusAccepted || sl.vballot != m.Ballot) {
				sl.cmds, sl.vballot, sl.status = m.Cmds, m.Ballot, protocol.StatusAccepted
				e.persistSlot(s, sl)
			}
		}
		// A committed slot holds the chosen value, the only one a leader can propose in a
		// ballot at or above chosenBound (checked above).
		e.send(protocol.Message{Type: protocol.MsgAccepted, To: m.From, Ballot: m.Ballot, Inst: m.Inst, OK: true})
		e.learnCommit(m.Index)
	case protocol.MsgHeartbeat:
		e.electionElapsed = 0
		e.learnCommit(m.Index)
		e.send(protocol.Message{Type: protocol.MsgHeartbeatAck, To: m.From, Ballot: m.Ballot, OK: true, Index: e.commitIndex})
	case protocol.MsgCommit:
		e.electionElapsed = 0
		e.learnCommit(m.Index)
	case protocol.MsgCatchUpReply:
		e.handleCatchUpReply(&m)
	}
}
