package multipaxos

import "github.com/parliament-lab/parliament/protocol"

// Phase 1 (Paxos Made Simple §2.2 and §3): a replica that suspects the leader picks a ballot
// higher than any it has seen and asks every acceptor to promise it for all slots above its
// commit point. Acceptors answer with every value they accepted there; with a majority of
// promises the candidate knows, for each slot, the only value that may have been chosen.

func (e *Engine) tickFollower() {
	e.electionElapsed++
	if e.electionElapsed >= e.electionTimeout {
		e.campaign()
		return
	}
	// Retry a lost catch-up request.
	if e.catchUpInflight && e.now-e.catchUpSent >= e.retransmitTicks && e.leaderCommit > e.commitIndex {
		e.sendCatchUp(e.leader)
	}
}

func (e *Engine) tickCandidate() {
	e.electionElapsed++
	if e.electionElapsed >= e.electionTimeout {
		e.campaign() // no majority in time: try again with a higher ballot
		return
	}
	if e.now-e.prepareSent >= e.retransmitTicks {
		e.broadcastPrepare(true)
	}
}

// campaign starts phase 1 with a ballot above every ballot heard of.
func (e *Engine) campaign() {
	top := e.promised
	if top.Less(e.maxSeen) {
		top = e.maxSeen
	}
	e.ballot = top.Next(e.id)
	e.promise(e.ballot) // our own promise, persisted with the Prepares
	if e.role == RoleCandidate {
		e.failedCampaigns++ // phase 1 timed out: wait longer this time (resetElectionTimer)
	}
	e.role = RoleCandidate
	e.step = stepCandidate
	e.leader = 0
	e.stats.Recoveries++
	e.resetElectionTimer()
	e.logger.Debug("multipaxos: campaigning", "replica", e.id, "ballot", e.ballot)

	e.promises = 1 << e.self
	e.prepareIndex = e.commitIndex + 1
	e.peerCommit, e.peerCommitFrom = e.commitIndex, 0
	e.votes = e.votes[:0]
	for s := e.prepareIndex; s <= e.log.last(); s++ {
		sl := e.log.get(s)
		e.vote(s, sl.status, sl.vballot, sl.cmds)
	}
	e.broadcastPrepare(false)
	if popcount(e.promises) >= e.quorum {
		e.becomeLeader()
	}
}

// broadcastPrepare sends MsgPrepare to every peer (only to those that have not promised when
// retransmitting).
func (e *Engine) broadcastPrepare(retransmit bool) {
	e.prepareSent = e.now
	for i, r := range e.replicas {
		if i == e.self || (retransmit && e.promises&(1<<i) != 0) {
			continue
		}
		e.send(protocol.Message{Type: protocol.MsgPrepare, To: r, Ballot: e.ballot, Index: e.prepareIndex})
	}
}

// vote merges one reported slot into the candidate's phase-1 view: a chosen (committed)
// value wins outright, otherwise the value accepted in the highest ballot.
func (e *Engine) vote(s uint64, status protocol.Status, vb protocol.Ballot, cmds []protocol.Command) {
	if s < e.prepareIndex || s-e.prepareIndex >= maxAheadSlots {
		return
	}
	if status != protocol.StatusAccepted && status != protocol.StatusCommitted {
		return
	}
	i := int(s - e.prepareIndex)
	for len(e.votes) <= i {
		e.votes = append(e.votes, vote{})
	}
	v := &e.votes[i]
	switch {
	case v.status == protocol.StatusCommitted:
	case status == protocol.StatusCommitted, v.status == protocol.StatusNone, v.vballot.Less(vb):
		*v = vote{cmds: cmds, vballot: vb, status: status}
	}
}

// handlePrepare is the acceptor's phase 1b, the same in every role.
func (e *Engine) handlePrepare(m *protocol.Message) {
	if m.Ballot.Replica != m.From {
		return
	}
	if m.Ballot.Less(e.promised) {
		e.send(protocol.Message{Type: protocol.MsgNack, To: m.From, Ballot: e.promised})
		return
	}
	if e.promised.Less(m.Ballot) {
		e.promise(m.Ballot)
		e.becomeFollower(0) // the candidate is not leader yet; give it a full timeout
	}
	// Report every value accepted (or known chosen) at or above the candidate's first slot.
	var insts []protocol.Instance
	for s := max(m.Index, e.log.base); s <= e.log.last(); s++ {
		sl := e.log.get(s)
		if sl.status == protocol.StatusNone {
			continue
		}
		insts = append(insts, protocol.Instance{
			ID: protocol.InstanceID{Num: s}, Status: sl.status, VBallot: sl.vballot, Seq: s, Cmds: sl.cmds,
		})
	}
	e.send(protocol.Message{Type: protocol.MsgPromise, To: m.From, Ballot: m.Ballot, OK: true, Insts: insts, Index: e.commitIndex})
}

// handleNack: someone promised a higher ballot. A leader or candidate steps down and waits a
// fresh randomized timeout before trying again (duelling proposers back off).
func (e *Engine) handleNack(m *protocol.Message) {
	if e.maxSeen.Less(m.Ballot) {
		e.maxSeen = m.Ballot
	}
	if e.role != RoleFollower && e.ballot.Less(m.Ballot) {
		e.logger.Debug("multipaxos: nacked", "replica", e.id, "ballot", e.ballot, "higher", m.Ballot)
		e.becomeFollower(0)
	}
}

func stepCandidate(e *Engine, m protocol.Message) {
	if m.Type != protocol.MsgPromise || m.Ballot != e.ballot || !m.OK {
		return
	}
	bit := uint64(1) << e.index(m.From)
	if e.promises&bit != 0 {
		return // duplicate
	}
	e.promises |= bit
	if m.Index > e.peerCommit {
		e.peerCommit, e.peerCommitFrom = m.Index, m.From
	}
	for i := range m.Insts {
		in := &m.Insts[i]
		if in.ID.Replica == 0 {
			e.vote(in.ID.Num, in.Status, in.VBallot, in.Cmds)
		}
	}
	if popcount(e.promises) >= e.quorum {
		e.becomeLeader()
	}
}

// becomeLeader ends phase 1: every slot above the commit point gets the value phase 1 found
// (the classic safety rule: never replace a value that may have been chosen) or a no-op for
// a gap, and is proposed again in the new ballot.
func (e *Engine) becomeLeader() {
	unsafe := e.cfg.UnsafeIgnorePromisedValues
	// A promiser reported a commit point above ours: every slot up to it is chosen and we
	// must know its value. It may have been dropped (RetainCmds) everywhere we asked; then
	// phase 1 cannot tell us the value and leading would be unsafe.
	for s := e.prepareIndex; s <= e.peerCommit && !unsafe; s++ {
		i := s - e.prepareIndex
		if i >= uint64(len(e.votes)) || e.votes[i].status != protocol.StatusCommitted {
			e.logger.Warn("multipaxos: cannot lead: chosen slot unknown (peers dropped it)", "replica", e.id, "inst", s, "ballot", e.ballot)
			e.becomeFollower(0)
			// Learn the chosen slots (or a snapshot covering them) from the promiser
			// that reported them, so that a later campaign can succeed.
			e.sendCatchUp(e.peerCommitFrom)
			return
		}
	}
	e.role = RoleLeader
	e.step = stepLeader
	e.leader = e.id
	e.stats.Elections++
	e.failedCampaigns = 0
	e.heartbeatElapsed = 0
	e.checkTicks = 0
	// The promises just heard count for the first check-quorum period: over a long round
	// trip no heartbeat ack can arrive before that period ends.
	e.heard = e.promises | 1<<e.self
	clear(e.toldCommit)
	e.logger.Debug("multipaxos: leading", "replica", e.id, "ballot", e.ballot, "slots", len(e.votes))

	last := e.prepareIndex + uint64(len(e.votes)) - 1
	e.log.dropAfter(last) // only empty slots can lie above the last reported one
	for s := e.prepareIndex; s <= last; s++ {
		v := e.votes[s-e.prepareIndex]
		cmds, status := v.cmds, protocol.StatusAccepted
		switch {
		case unsafe:
			// Test-only mutation: propose our own commands (or a no-op) over whatever phase
			// 1 found. This can replace a chosen value.
			if len(e.pending) > 0 {
				n := min(len(e.pending), e.cfg.MaxBatch)
				cmds = e.pending[:n:n]
				e.pending = e.pending[n:]
			} else {
				cmds = []protocol.Command{protocol.Noop()}
			}
		case v.status == protocol.StatusCommitted:
			status = protocol.StatusCommitted
		case v.status == protocol.StatusNone:
			cmds = []protocol.Command{protocol.Noop()} // a gap: nothing can have been chosen
		}
		sl := e.log.ensure(s)
		*sl = slot{cmds: cmds, vballot: e.ballot, status: status, acks: 1 << e.self, sentTick: e.now}
		e.persistSlot(s, sl)
		e.broadcastAccept(s, sl, 0)
		if status != protocol.StatusCommitted && popcount(sl.acks) >= e.quorum {
			sl.status = protocol.StatusCommitted
			e.stats.Committed++
		}
	}
	e.votes = e.votes[:0]
	e.advanceCommit()
	e.broadcastHeartbeat()
}
