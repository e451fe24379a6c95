package epaxos

import (
	"github.com/parliament-lab/parliament/protocol"
)

// startAccept runs the Paxos-Accept phase of ls.ballot for (cmds, deps, seq): accept
// locally, then EAccept to a majority (thrifty) or everyone (EPaxos paper Fig. 2, Phase 2).
func (e *Engine) startAccept(inst *instance, ls *lead, cmds []protocol.Command, deps []uint64, seq uint64) {
	ls.phase = phAccept
	inst.status = protocol.StatusAccepted
	inst.vballot = ls.ballot
	e.setAttrs(inst, cmds, deps, seq)
	e.save(inst)
	e.sendPhase(inst, ls, e.f)
}

// onAccept is an acceptor receiving EAccept.
func (e *Engine) onAccept(m *protocol.Message) {
	inst := e.admitRequest(m, protocol.MsgEAcceptOK)
	if inst == nil {
		return
	}
	inst.touched = e.now
	if !(inst.status == protocol.StatusAccepted && inst.vballot == m.Ballot) {
		e.promise(inst, m.Ballot)
		inst.status = protocol.StatusAccepted
		inst.vballot = m.Ballot
		e.setAttrs(inst, m.Cmds, e.depsFrom(e.scr, m.Deps), m.Seq)
		e.save(inst)
		e.watchInst(inst)
	}
	e.send(protocol.Message{Type: protocol.MsgEAcceptOK, To: m.From, Inst: m.Inst, Ballot: m.Ballot, OK: true})
}

// onAcceptOK is the coordinator counting accepts; a majority (leader included) commits.
func (e *Engine) onAcceptOK(m *protocol.Message) {
	inst, ls, _, ok := e.admitReply(m, phAccept)
	if !ok {
		return
	}
	if 1+ls.oks >= e.f+1 {
		if inst.mine && ls.ballot.Round == 0 {
			e.stats.SlowPath++
		}
		e.commitInst(inst, inst.cmds, inst.deps, inst.seq, true)
	}
}

// commitInst marks inst committed with the given attributes, hands it to the executor and,
// if this replica coordinated the decision, tells every peer.
func (e *Engine) commitInst(inst *instance, cmds []protocol.Command, deps []uint64, seq uint64, broadcast bool) {
	inst.status = protocol.StatusCommitted
	e.setAttrs(inst, cmds, deps, seq)
	e.save(inst)
	e.emit(inst)
	e.finishLead(inst)
	if broadcast {
		// Announced to every peer at the next Ready, together with the other commits of
		// that Ready (flushCommits): one ECommitBatch per peer instead of one ECommit per
		// instance and peer.
		e.bcast = append(e.bcast, protocol.Instance{ID: inst.id, Status: protocol.StatusCommitted,
			Seq: inst.seq, Deps: e.list(inst), Cmds: inst.cmds})
	}
	if inst.mine {
		inst.mine = false
		e.inflight--
		e.stats.Committed++
		if isNoop(inst.cmds) && !isNoop(inst.orig) {
			// Recovery replaced our command with a no-op (no replica had seen it):
			// propose it again in a new instance rather than lose it.
			e.pending = append(e.pending, inst.orig...)
		}
		inst.orig = nil
	}
}

func isNoop(cmds []protocol.Command) bool {
	for i := range cmds {
		if cmds[i].Op != protocol.OpNoop {
			return false
		}
	}
	return true
}

// onCommit learns a decision from a peer. A recovering replica just adopts it.
func (e *Engine) onCommit(id protocol.InstanceID, cmds []protocol.Command, deps []protocol.InstanceID, seq uint64) {
	inst := e.get(id, true)
	if inst == nil || inst.status == protocol.StatusCommitted {
		return
	}
	// A coordinator that learns the outcome passes it on to the replicas it involved.
	e.commitInst(inst, cmds, e.depsFrom(e.scr, deps), seq, inst.lead != nil)
}

func (e *Engine) sendCommit(inst *instance, to protocol.ReplicaID) {
	e.send(protocol.Message{Type: protocol.MsgECommit, To: to, Inst: inst.id, Cmds: inst.cmds, Deps: e.list(inst), Seq: inst.seq})
}

// flushCommits sends the commits decided here since the last Ready to every peer: a
// single one as ECommit, several as one ECommitBatch per peer (the Insts slice is shared
// by those messages and never modified). A batch also carries the compacted frontier in
// Deps once there is one (compact.go).
func (e *Engine) flushCommits() {
	switch len(e.bcast) {
	case 0:
		return
	case 1:
		in := &e.bcast[0]
		m := protocol.Message{Type: protocol.MsgECommit, Inst: in.ID, Cmds: in.Cmds, Deps: in.Deps, Seq: in.Seq}
		for _, p := range e.order {
			m.To = e.ids[p]
			e.send(m)
		}
		e.bcast = e.bcast[:0] // nothing of e.bcast's memory left in the messages
		return
	}
	m := protocol.Message{Type: protocol.MsgECommitBatch, Insts: e.bcast, Deps: e.frontierList()}
	for _, p := range e.order {
		m.To = e.ids[p]
		e.send(m)
	}
	e.bcast = nil // handed out: the next batch gets new memory
}
