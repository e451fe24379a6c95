package epaxos

import (
	"slices"

	"github.com/parliament-lab/parliament/protocol"
)

// startInstance opens the next instance of this replica's row with cmds (Phase 1 of the
// EPaxos paper, Fig. 2 steps 1-5): compute deps and seq from the local conflict index,
// pre-accept locally at ballot 0 and send PreAccept.
func (e *Engine) startInstance(cmds []protocol.Command) {
	id := protocol.InstanceID{Replica: e.self, Num: e.nextNum}
	e.nextNum++
	inst := e.get(id, true)
	for inst.status != protocol.StatusNone || !inst.ballot.IsZero() {
		// The number is taken (a recovery elsewhere filled it while we were down).
		id.Num = e.nextNum
		e.nextNum++
		inst = e.get(id, true)
	}
	b := protocol.Ballot{Replica: e.self}
	deps := e.scr
	clear(deps)
	seq := max(e.conflictAttrs(inst, cmds, deps, -1), 1)
	if e.anyGF && !isNoop(cmds) {
		// Depend on everything executed at every replica: a replica that forgot those
		// instances without a per-key summary (blind) adds them to its vote, and this
		// keeps its vote identical to the proposal (compact.go, doc.go "Truncation").
		for r, v := range e.gf {
			deps[r] = max(deps[r], v)
		}
	}
	inst.status = protocol.StatusPreAccepted
	inst.ballot, inst.vballot = b, b
	inst.mine = true
	inst.orig = cmds
	e.inflight++
	e.setAttrs(inst, cmds, deps, seq)
	e.save(inst)

	ls := e.newLead(inst, phPreAccept, b)
	copy(ls.base, inst.deps)
	copy(ls.union, inst.deps)
	ls.baseSeq, ls.maxSeq = seq, seq
	ls.baseList = e.list(inst)
	ls.same = 1
	e.sendPhase(inst, ls, e.fq-1)
	e.decidePreAccept(inst) // a single-replica fast quorum (mutation) commits at once
}

// onPreAccept is an acceptor receiving PreAccept (ballot 0 from the command leader, or a
// higher ballot from a recoverer restarting Phase 1). It votes once per ballot: the
// proposed deps and seq merged with the conflicts it knows.
func (e *Engine) onPreAccept(m *protocol.Message) {
	inst := e.admitRequest(m, protocol.MsgPreAcceptOK)
	if inst == nil {
		return
	}
	if inst.status >= protocol.StatusAccepted && !inst.vballot.Less(m.Ballot) {
		return // stale: this ballot has moved on to Accept
	}
	inst.touched = e.now
	if inst.status == protocol.StatusPreAccepted && inst.ballot == m.Ballot &&
		(m.Ballot.Round == 0 || inst.vballot == m.Ballot) {
		// Duplicate (retransmission): repeat the vote, never vote twice in one ballot.
		e.send(protocol.Message{Type: protocol.MsgPreAcceptOK, To: m.From, Inst: m.Inst, Ballot: m.Ballot,
			OK: true, Deps: e.list(inst), Seq: inst.seq})
		return
	}
	leaderRow := e.ri(m.Inst.Replica)
	given := e.depsFrom(e.scr2, m.Deps)
	deps := e.scr
	copy(deps, given)
	seq := max(m.Seq, e.conflictAttrs(inst, m.Cmds, deps, leaderRow))
	e.promise(inst, m.Ballot)
	inst.status = protocol.StatusPreAccepted
	if m.Ballot.Round > 0 || (seq == m.Seq && slices.Equal(deps, given)) {
		inst.vballot = m.Ballot
	} else {
		// A changed ballot-0 vote is no vote for the leader's value: VBallot stays zero
		// so that recovery does not count it as a possible fast-path vote.
		inst.vballot = protocol.Ballot{}
	}
	e.setAttrs(inst, m.Cmds, deps, seq)
	e.save(inst)
	e.watchInst(inst)
	e.send(protocol.Message{Type: protocol.MsgPreAcceptOK, To: m.From, Inst: m.Inst, Ballot: m.Ballot,
		OK: true, Deps: e.list(inst), Seq: inst.seq})
}

// onPreAcceptOK is the coordinator collecting votes.
func (e *Engine) onPreAcceptOK(m *protocol.Message) {
	inst, ls, _, ok := e.admitReply(m, phPreAccept)
	if !ok {
		return
	}
	deps := e.depsFrom(e.scr, m.Deps)
	if m.Seq == ls.baseSeq && slices.Equal(deps, ls.base) {
		ls.same++
	}
	for r, v := range deps {
		ls.union[r] = max(ls.union[r], v)
	}
	ls.maxSeq = max(ls.maxSeq, m.Seq)
	e.decidePreAccept(inst)
}

// decidePreAccept applies the fast/slow rule to the SET of votes received so far, so the
// outcome never depends on their arrival order (EPaxos paper §4.3):
//   - ballot 0 and at least FastQuorum votes (leader included) identical to the
//     proposal: commit the proposal (fast path);
//   - otherwise, once a fast quorum of identical votes can no longer form among the
//     replicas asked (or the fast-path wait expired) and a majority voted: Accept the
//     union of the deps and the maximum seq (slow path).
func (e *Engine) decidePreAccept(inst *instance) {
	ls := inst.lead
	if ls.ballot.Round == 0 {
		if ls.same >= e.fq {
			e.stats.FastPath++
			e.commitInst(inst, inst.cmds, ls.base, ls.baseSeq, true)
			return
		}
		outstanding := 0
		for p := range ls.asked {
			if ls.asked[p] && !ls.replied[p] {
				outstanding++
			}
		}
		if ls.same+outstanding >= e.fq && !ls.gaveUp {
			return // the fast path is still possible: wait for the rest of the set
		}
	}
	if 1+ls.oks >= e.f+1 {
		seq, deps := ls.maxSeq, e.scr
		copy(deps, ls.union)
		e.resetPhase(ls, phAccept)
		e.startAccept(inst, ls, inst.cmds, deps, seq)
	}
}
