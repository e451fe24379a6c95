package epaxos

import (
	"slices"

	"github.com/parliament-lab/parliament/protocol"
)

// Recovery (Explicit Prepare). See doc.go for the algorithm, its sources and the
// argument for its safety; the comments here name the steps.

// startRecovery runs Explicit Prepare on inst with a ballot higher than any seen for it.
func (e *Engine) startRecovery(inst *instance) {
	if inst.status == protocol.StatusCommitted || inst.lead != nil {
		return
	}
	round := max(inst.ballot.Round, inst.vballot.Round, inst.seen) + 1
	b := protocol.Ballot{Round: round, Replica: e.self}
	inst.ballot = b
	inst.touched = e.now
	e.save(inst) // our own promise survives a crash like any other
	ls := e.newLead(inst, phPrepare, b)
	ls.recovery = true
	ls.preps = append(ls.preps, e.prepOf(e.me, inst))
	e.stats.Recoveries++
	e.sendPhase(inst, ls, -1)
	e.watchInst(inst)
}

func (e *Engine) prepOf(from int, inst *instance) prepReply {
	p := prepReply{from: from, status: inst.status, vballot: inst.vballot, cmds: inst.cmds, seq: inst.seq}
	if inst.deps != nil {
		p.deps = slices.Clone(inst.deps)
	} else {
		p.deps = make([]uint64, e.n)
	}
	return p
}

// onPrepare is an acceptor receiving EPrepare: promise and report the last vote, with its
// ballot kept apart from the promise (Sutra 2019).
func (e *Engine) onPrepare(m *protocol.Message) {
	inst := e.get(m.Inst, true)
	if inst == nil {
		return
	}
	if inst.status == protocol.StatusCommitted {
		e.sendCommit(inst, m.From)
		return
	}
	if m.Ballot.Less(inst.ballot) {
		e.send(protocol.Message{Type: protocol.MsgEPrepareOK, To: m.From, Inst: m.Inst, Ballot: inst.ballot})
		return
	}
	if e.promise(inst, m.Ballot) {
		e.save(inst)
	}
	e.watchInst(inst)
	inst.touched = e.now
	e.send(protocol.Message{Type: protocol.MsgEPrepareOK, To: m.From, Inst: m.Inst, Ballot: m.Ballot, OK: true,
		Status: inst.status, VBallot: inst.vballot, Cmds: inst.cmds, Deps: e.list(inst), Seq: inst.seq})
}

func (e *Engine) onPrepareOK(m *protocol.Message) {
	inst := e.get(m.Inst, false)
	if inst != nil && inst.status == protocol.StatusCommitted {
		e.sendCommit(inst, m.From) // a late voter learns the outcome
		return
	}
	if inst == nil || inst.lead == nil || inst.lead.phase != phPrepare {
		return
	}
	ls := inst.lead
	if !m.OK {
		e.refused(inst, m.Ballot)
		return
	}
	from := e.ri(m.From)
	if m.Ballot != ls.ballot || ls.replied[from] {
		return
	}
	ls.replied[from] = true
	ls.oks++
	ls.preps = append(ls.preps, prepReply{from: from, status: m.Status, vballot: m.VBallot, cmds: m.Cmds,
		deps: e.depsFrom(nil, m.Deps), seq: m.Seq})
	if len(ls.preps) >= e.f+1 {
		e.decideRecovery(inst)
	}
}

// decideRecovery chooses what to propose at the recovery ballot from F+1 EPrepareOK
// replies (own state included), in this order:
//  1. a committed value (never reported here: a committed acceptor answers ECommit);
//  2. the accepted value of the highest VBallot (classic Paxos);
//  3. if the proposal may have committed on the fast path (enough ballot-0 votes identical
//     to it among replicas other than its leader), validate it (EValidate);
//  4. otherwise restart Phase 1 at the recovery ballot with the commands (deps recomputed
//     by a majority), or Accept a no-op when no replica in the quorum saw the command.
func (e *Engine) decideRecovery(inst *instance) {
	ls := inst.lead
	var best *prepReply
	if !e.cfg.UnsafeRecoveryIgnoreAccepted {
		for i := range ls.preps {
			p := &ls.preps[i]
			if p.status == protocol.StatusAccepted && (best == nil || best.vballot.Less(p.vballot)) {
				best = p
			}
		}
	}
	if best != nil {
		e.resetPhase(ls, phAccept)
		e.startAccept(inst, ls, best.cmds, best.deps, best.seq)
		return
	}
	leaderRow := e.ri(inst.id.Replica)
	leaderBallot := protocol.Ballot{Replica: inst.id.Replica}
	noFast := false
	votes, qn := 0, 0
	var cand *prepReply
	clear(ls.union)
	ls.maxSeq = 0
	ls.cmds = nil
	for i := range ls.preps {
		p := &ls.preps[i]
		if p.status >= protocol.StatusPreAccepted && len(p.cmds) > 0 {
			if ls.cmds == nil {
				ls.cmds = p.cmds
			}
			for r, v := range p.deps {
				ls.union[r] = max(ls.union[r], v)
			}
			ls.maxSeq = max(ls.maxSeq, p.seq)
		}
		if p.from == leaderRow {
			// The leader answered without having committed: it never took the fast
			// path, and no longer can (it promised our ballot).
			noFast = true
			continue
		}
		qn++
		switch {
		case p.status == protocol.StatusAccepted:
			noFast = true // only reachable with UnsafeRecoveryIgnoreAccepted
		case p.status == protocol.StatusPreAccepted && p.vballot.Round > 0:
			noFast = true // a recovery restarted Phase 1: it proved no fast commit
		case p.status == protocol.StatusPreAccepted && p.vballot == leaderBallot:
			votes++
			cand = p
		}
	}
	// Of the FastQuorum-1 non-leader members of any fast quorum, at least need are among
	// the qn non-leader replicas that answered.
	need := (e.fqR - 1) - ((e.n - 1) - qn)
	switch {
	case !noFast && cand != nil && votes >= need:
		e.resetPhase(ls, phValidate)
		ls.cand = prepReply{cmds: cand.cmds, deps: slices.Clone(cand.deps), seq: cand.seq}
		ls.wait = ls.wait[:0]
		ls.wait = append(ls.wait, e.validateLocal(inst, ls.cand.cmds, ls.cand.deps, ls.cand.seq, nil)...)
		e.sendPhase(inst, ls, -1)
		if 1 >= e.f+1 {
			e.startWait(inst)
		}
	case ls.cmds != nil:
		e.restartPhase1(inst, ls)
	default:
		e.resetPhase(ls, phAccept)
		e.startAccept(inst, ls, []protocol.Command{protocol.Noop()}, make([]uint64, e.n), 0)
	}
}

// restartPhase1 runs Phase 1 again at the recovery ballot with ls.cmds, proposing the
// union of the deps the recovery quorum reported; a majority's votes (never the fast
// path at a recovery ballot) then go to Accept.
func (e *Engine) restartPhase1(inst *instance, ls *lead) {
	e.resetPhase(ls, phPreAccept)
	copy(ls.base, ls.union)
	ls.baseSeq = ls.maxSeq
	ls.baseList = e.listOf(ls.base)
	deps := e.scr
	copy(deps, ls.base)
	seq := max(ls.baseSeq, e.conflictAttrs(ls.cmds, deps, e.ri(inst.id.Replica)))
	inst.status = protocol.StatusPreAccepted
	inst.vballot = ls.ballot
	e.setAttrs(inst, ls.cmds, deps, seq)
	e.save(inst)
	copy(ls.union, inst.deps)
	ls.maxSeq = seq
	e.sendPhase(inst, ls, e.f)
	e.decidePreAccept(inst)
}

// validateLocal is one replica's part of validation: record the instance if unknown (so
// that every later conflicting command here depends on it) and list the conflicting
// instances known here that are not covered by deps, i.e. could have been ordered
// without it. Committed ones are also appended to copies.
func (e *Engine) validateLocal(inst *instance, cmds []protocol.Command, deps []uint64, seq uint64, copies *[]protocol.Instance) []protocol.InstanceID {
	if inst.status == protocol.StatusNone {
		inst.status = protocol.StatusPreAccepted
		inst.vballot = protocol.Ballot{}
		e.setAttrs(inst, cmds, deps, seq)
	}
	e.save(inst)
	e.watchInst(inst)
	var out []protocol.InstanceID
	leaderRow := e.ri(inst.id.Replica)
	for r, row := range e.rows {
		if r == leaderRow {
			// Later instances of the leader's row always depend on earlier conflicting
			// ones: the leader knows its own row.
			continue
		}
		for num := deps[r] + 1; num <= uint64(len(row)); num++ {
			x := row[num-1]
			if x == nil || x.status < protocol.StatusPreAccepted || !conflictsAny(cmds, x.cmds) {
				continue
			}
			out = append(out, x.id)
			if copies != nil && x.status == protocol.StatusCommitted {
				*copies = append(*copies, e.snapshot(x))
			}
		}
	}
	return out
}

func (e *Engine) onValidate(m *protocol.Message) {
	inst := e.get(m.Inst, true)
	if inst == nil {
		return
	}
	if inst.status == protocol.StatusCommitted {
		e.sendCommit(inst, m.From)
		return
	}
	if m.Ballot.Less(inst.ballot) {
		e.send(protocol.Message{Type: protocol.MsgEValidateOK, To: m.From, Inst: m.Inst, Ballot: inst.ballot})
		return
	}
	e.promise(inst, m.Ballot)
	inst.touched = e.now
	var copies []protocol.Instance
	list := e.validateLocal(inst, m.Cmds, e.depsFrom(nil, m.Deps), m.Seq, &copies)
	e.send(protocol.Message{Type: protocol.MsgEValidateOK, To: m.From, Inst: m.Inst, Ballot: m.Ballot, OK: true,
		Deps: list, Insts: copies})
}

func (e *Engine) onValidateOK(m *protocol.Message) {
	inst := e.get(m.Inst, false)
	if inst != nil && inst.status == protocol.StatusCommitted {
		e.sendCommit(inst, m.From) // a late voter learns the outcome
		return
	}
	if inst == nil || inst.lead == nil || inst.lead.phase != phValidate {
		return
	}
	ls := inst.lead
	if !m.OK {
		e.refused(inst, m.Ballot)
		return
	}
	from := e.ri(m.From)
	if m.Ballot != ls.ballot || ls.replied[from] {
		return
	}
	ls.replied[from] = true
	ls.oks++
	ls.wait = append(ls.wait, m.Deps...)
	for i := range m.Insts {
		x := &m.Insts[i]
		if x.ID != inst.id {
			e.onCommit(x.ID, x.Cmds, x.Deps, x.Seq)
		}
	}
	if inst.lead == ls && 1+ls.oks >= e.f+1 {
		e.startWait(inst)
	}
}

func (e *Engine) startWait(inst *instance) {
	ls := inst.lead
	ls.phase = phWait
	ls.since = e.now
	slices.SortFunc(ls.wait, func(a, b protocol.InstanceID) int {
		if a.Replica != b.Replica {
			return int(a.Replica) - int(b.Replica)
		}
		switch {
		case a.Num < b.Num:
			return -1
		case a.Num > b.Num:
			return 1
		}
		return 0
	})
	ls.wait = slices.Compact(ls.wait)
	e.checkWait(inst)
}

// checkWait resolves validation once every invalidating instance is committed: if one
// of them committed without depending on inst, inst cannot have committed on the fast
// path and Phase 1 restarts; if all depend on it, the candidate is safe to Accept.
// Invalidators that stay uncommitted for RecoveryTicks are recovered from here.
func (e *Engine) checkWait(inst *instance) {
	ls := inst.lead
	leaderRow := e.ri(inst.id.Replica)
	k := 0
	for _, x := range ls.wait {
		xi := e.get(x, false)
		if xi != nil && xi.status == protocol.StatusCommitted {
			if conflictsAny(ls.cand.cmds, xi.cmds) && xi.deps[leaderRow] < inst.id.Num {
				e.restartPhase1(inst, ls)
				return
			}
			continue
		}
		ls.wait[k] = x
		k++
	}
	ls.wait = ls.wait[:k]
	if k == 0 {
		e.resetPhase(ls, phAccept)
		e.startAccept(inst, ls, ls.cand.cmds, ls.cand.deps, ls.cand.seq)
		return
	}
	if e.now-ls.since >= int64(e.cfg.RecoveryTicks) {
		ls.since = e.now
		for _, x := range ls.wait {
			if xi := e.get(x, true); xi != nil && xi.status != protocol.StatusCommitted && xi.lead == nil {
				e.watchInst(xi)
				e.startRecovery(xi)
			}
		}
	}
}
