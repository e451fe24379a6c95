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
	inst := e.admitRequest(m, protocol.MsgEPrepareOK)
	if inst == nil {
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
	if inst == nil || inst.lead == nil || !inst.lead.recovery {
		return
	}
	ls := inst.lead
	if !m.OK {
		e.refused(inst, m.Ballot)
		return
	}
	from := e.ri(m.From)
	if ls.phase != phPrepare {
		if m.Ballot == ls.ballot && (ls.phase == phValidate || ls.phase == phWait) {
			e.latePrepareOK(inst, ls, from, m)
		}
		return
	}
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
		ls.pv[p.from] = pvOther
		switch {
		case p.status == protocol.StatusAccepted:
			noFast = true // only reachable with UnsafeRecoveryIgnoreAccepted
		case p.status == protocol.StatusPreAccepted && p.vballot.Round > 0:
			noFast = true // a recovery restarted Phase 1: it proved no fast commit
		case p.status == protocol.StatusPreAccepted && p.vballot == leaderBallot:
			votes++
			cand = p
			ls.pv[p.from] = pvSame
		}
	}
	// Of the FastQuorum-1 non-leader members of any fast quorum, at least need are among
	// the qn non-leader replicas that answered.
	need := (e.fqR - 1) - ((e.n - 1) - qn)
	switch {
	case !noFast && cand != nil && inst.executedElsewhere && !e.cfg.UnsafeRecoveryIgnoreAccepted:
		ls.cand = prepReply{cmds: cand.cmds, deps: slices.Clone(cand.deps), seq: cand.seq}
		e.acceptCandidate(inst, ls)
	case !noFast && cand != nil && votes >= need:
		e.resetPhase(ls, phValidate)
		ls.cand = prepReply{cmds: cand.cmds, deps: slices.Clone(cand.deps), seq: cand.seq}
		list, verdict := e.validateLocal(inst, ls.cand.cmds, ls.cand.deps, ls.cand.seq, nil)
		if verdict == validInvalidated {
			e.restartPhase1(inst, ls)
			return
		}
		ls.wait = append(ls.wait[:0], list...)
		if verdict == validAnswer {
			ls.valid = 1
		}
		e.sendPhase(inst, ls, -1)
		if ls.valid >= e.f+1 {
			e.startWait(inst)
		}
	case ls.cmds != nil:
		e.restartPhase1(inst, ls)
	default:
		e.resetPhase(ls, phAccept)
		e.startAccept(inst, ls, []protocol.Command{protocol.Noop()}, make([]uint64, e.n), 0)
	}
}

// learnExecuted takes a peer's snapshot frontier that this replica cannot install (it is
// not ahead in every row): the instances it covers executed at that peer, so they are
// committed, which a recovery of one of them can use (acceptCandidate). This is how a
// recovery ends when the replicas that know an instance's outcome have executed and
// forgotten it: they answer its EPrepare and EValidate with a snapshot, not a vote.
func (e *Engine) learnExecuted(frontier []protocol.InstanceID) {
	for _, inst := range e.leading {
		ls := inst.lead
		if ls == nil || !ls.recovery || inst.status == protocol.StatusCommitted || inst.executedElsewhere {
			continue
		}
		for _, d := range frontier {
			if d.Replica == inst.id.Replica && inst.id.Num <= d.Num {
				inst.executedElsewhere = true
				if (ls.phase == phValidate || ls.phase == phWait) && !e.cfg.UnsafeRecoveryIgnoreAccepted {
					// Validating the fast-path candidate: it is the committed value.
					e.acceptCandidate(inst, ls)
				}
				break
			}
		}
	}
}

// acceptCandidate is step 3's shortcut when the instance is known to be committed
// (executedElsewhere): with no committed or accepted value among F+1 EPrepareOK replies
// (which intersect the majority of any slow-path or recovery commit), it was committed on
// the fast path, with its leader's proposal, which is what a ballot-0 vote identical to
// the proposal (cand) carries. The candidate is accepted without validation, whose only
// purpose is to tell a fast commit from none; validation may never end here (the
// validators that executed the instance forgot it and answer with snapshots, others may
// abstain). Without such a vote in the quorum the usual steps run: they are safe without
// the knowledge.
func (e *Engine) acceptCandidate(inst *instance, ls *lead) {
	cand := ls.cand
	e.resetPhase(ls, phAccept)
	e.startAccept(inst, ls, cand.cmds, cand.deps, cand.seq)
}

// What a recovery knows about one replica's ballot-0 vote for the candidate value.
const (
	pvUnknown uint8 = iota // no answer yet: it may have voted for it
	pvSame                 // answered: voted for the candidate at ballot 0
	pvOther                // answered with something else, or cannot have voted for it
)

// latePrepareOK takes an EPrepareOK that arrives after the recovery decided to validate:
// the quorum was the first F+1 replies, later ones still carry evidence.
func (e *Engine) latePrepareOK(inst *instance, ls *lead, from int, m *protocol.Message) {
	if from == e.ri(inst.id.Replica) {
		// The command leader answered our ballot without a commit: no fast commit.
		e.restartPhase1(inst, ls)
		return
	}
	if ls.pv[from] != pvUnknown {
		return
	}
	same := m.Status >= protocol.StatusPreAccepted && m.Seq == ls.cand.seq &&
		slices.Equal(e.depsFrom(e.scr, m.Deps), ls.cand.deps)
	switch {
	case same && m.Status == protocol.StatusPreAccepted && m.VBallot == (protocol.Ballot{Replica: inst.id.Replica}):
		ls.pv[from] = pvSame
	case same:
		// The candidate itself, voted at a recovery ballot (another recoverer accepted it):
		// this replica may also have voted for it at ballot 0, so it still counts as a
		// possible fast-quorum member. Marking it pvOther let a late reply prove "no fast
		// commit" wrongly and recommit a fast-committed instance with other attributes
		// (sim seed 2601, epaxos N=5, TestRegressionEPaxosLatePrepareOKAccepted).
	default:
		ls.pv[from] = pvOther
	}
	if e.cannotBeFast(inst, ls) {
		e.restartPhase1(inst, ls)
	}
}

// cannotBeFast reports whether the evidence gathered proves that the candidate was not
// committed on the fast path: that needs FastQuorum-1 identical ballot-0 votes besides
// the leader's, and fewer replicas than that voted for it or may still have. This is
// what breaks a wait between two recoveries (see doc.go, "Recovery"): of two conflicting
// candidates that do not cover each other at most one can have a fast quorum (their
// identical voters are disjoint and 2*FastQuorum > N), and the leader of an instance
// that waits here without covering the candidate cannot have voted for the candidate
// (it knew nothing of the candidate when it proposed, and any later vote of its own
// covers its instance, which the candidate does not).
func (e *Engine) cannotBeFast(inst *instance, ls *lead) bool {
	leaderRow := e.ri(inst.id.Replica)
	for _, x := range ls.wait {
		xi := e.get(x, false)
		if xi == nil || xi.status < protocol.StatusPreAccepted || xi.status == protocol.StatusCommitted || xi.deps == nil ||
			!conflictsAny(ls.cand.cmds, xi.cmds) {
			continue // (a no-op here says nothing about what its leader proposed)
		}
		if xr := e.ri(x.Replica); xr != leaderRow && xi.deps[leaderRow] < inst.id.Num && ls.pv[xr] == pvUnknown {
			ls.pv[xr] = pvOther
		}
	}
	possible := 0
	for p, v := range ls.pv {
		if p != leaderRow && v != pvOther {
			possible++
		}
	}
	return possible < e.fqR-1
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
	seq := max(ls.baseSeq, e.conflictAttrs(inst, ls.cmds, deps, e.ri(inst.id.Replica)))
	inst.status = protocol.StatusPreAccepted
	inst.vballot = ls.ballot
	e.setAttrs(inst, ls.cmds, deps, seq)
	e.save(inst)
	copy(ls.union, inst.deps)
	ls.maxSeq = seq
	e.sendPhase(inst, ls, e.f)
	e.decidePreAccept(inst)
}

// Verdicts of one validator (EValidateOK.Index).
const (
	// validAnswer: Deps lists the invalidating instances known here.
	validAnswer uint64 = 0
	// validInvalidated: an instance conflicting with the candidate and not covered by its
	// deps executed here and was forgotten. Having executed here while the candidate's
	// instance is not committed here, it does not depend on it, so the candidate cannot
	// have been committed on the fast path (the dependency invariant): Phase 1 restarts.
	validInvalidated uint64 = 1
	// validAbstain: this replica forgot instances above the candidate's deps without a
	// per-key summary (restart or snapshot) and cannot tell whether they conflict; the
	// recoverer needs F+1 validators that can.
	validAbstain uint64 = 2
)

// validateLocal is one replica's part of validation: record the instance if unknown (so
// that every later conflicting command here depends on it) and list the conflicting
// instances known here that are not covered by deps, i.e. could have been ordered
// without it. Committed ones are also appended to copies. Forgotten instances above deps
// are judged from the per-key summaries (validInvalidated) or, where there are none,
// make this replica abstain.
func (e *Engine) validateLocal(inst *instance, cmds []protocol.Command, deps []uint64, seq uint64, copies *[]protocol.Instance) (out []protocol.InstanceID, verdict uint64) {
	if inst.status == protocol.StatusNone {
		inst.status = protocol.StatusPreAccepted
		inst.vballot = protocol.Ballot{}
		e.setAttrs(inst, cmds, deps, seq)
	}
	e.save(inst)
	e.watchInst(inst)
	leaderRow := e.ri(inst.id.Replica)
	for r, row := range e.rows {
		if r == leaderRow {
			// Later instances of the leader's row always depend on earlier conflicting
			// ones: the leader knows its own row.
			continue
		}
		if e.base[r] > deps[r] {
			if e.goneConflict(cmds, r, deps[r]) {
				e.counts.invalidatedOld++
				return nil, validInvalidated
			}
			if e.blind[r] > deps[r] {
				if verdict != validAbstain {
					e.counts.abstained++
				}
				verdict = validAbstain
			}
		}
		for num := max(deps[r], e.base[r]) + 1; num <= e.rowEnd(r); num++ {
			x := row[num-1-e.base[r]]
			if x == nil || x.status < protocol.StatusPreAccepted || !conflictsAny(cmds, x.cmds) {
				continue
			}
			out = append(out, x.id)
			if copies != nil && x.status == protocol.StatusCommitted {
				*copies = append(*copies, e.snapshot(x))
			}
		}
	}
	return out, verdict
}

// goneConflict reports whether an instance of row r numbered above lo that conflicts
// with cmds executed here and was forgotten.
func (e *Engine) goneConflict(cmds []protocol.Command, r int, lo uint64) bool {
	for i := range cmds {
		c := &cmds[i]
		if c.Op == protocol.OpNoop {
			continue
		}
		ks := e.keys[string(c.Key)]
		if ks == nil {
			continue
		}
		g := ks.goneAny[r]
		if c.IsRead() {
			g = ks.goneWrite[r]
		}
		if g > lo {
			return true
		}
	}
	return false
}

func (e *Engine) onValidate(m *protocol.Message) {
	inst := e.admitRequest(m, protocol.MsgEValidateOK)
	if inst == nil {
		return
	}
	e.promise(inst, m.Ballot)
	inst.touched = e.now
	var copies []protocol.Instance
	list, verdict := e.validateLocal(inst, m.Cmds, e.depsFrom(nil, m.Deps), m.Seq, &copies)
	e.send(protocol.Message{Type: protocol.MsgEValidateOK, To: m.From, Inst: m.Inst, Ballot: m.Ballot, OK: true,
		Deps: list, Insts: copies, Index: verdict})
}

func (e *Engine) onValidateOK(m *protocol.Message) {
	inst, ls, from, ok := e.admitReply(m, phValidate)
	if !ok {
		return
	}
	if m.Index == validInvalidated || from == e.ri(inst.id.Replica) {
		// Invalidated, or the command leader answered without a commit: it promised our
		// ballot, so it has not committed on the fast path and no longer can (as in
		// decideRecovery).
		e.restartPhase1(inst, ls)
		return
	}
	if m.Index == validAbstain {
		return
	}
	ls.valid++
	ls.wait = append(ls.wait, m.Deps...)
	for i := range m.Insts {
		x := &m.Insts[i]
		if x.ID != inst.id {
			e.onCommit(x.ID, x.Cmds, x.Deps, x.Seq)
		}
	}
	if inst.lead == ls && ls.valid >= e.f+1 {
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
	blindWait := false
	for _, x := range ls.wait {
		xi := e.get(x, false)
		if xi == nil && e.gone(x) {
			if x.Num > e.blind[e.ri(x.Replica)] {
				// Executed here while inst is not committed here: it does not depend
				// on inst (see validInvalidated).
				e.restartPhase1(inst, ls)
				return
			}
			// Known here only through a snapshot: its deps are unknown.
			blindWait = true
			ls.wait[k] = x
			k++
			continue
		}
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
	if k > 0 && e.cannotBeFast(inst, ls) {
		e.restartPhase1(inst, ls)
		return
	}
	if k == 0 {
		e.resetPhase(ls, phAccept)
		e.startAccept(inst, ls, ls.cand.cmds, ls.cand.deps, ls.cand.seq)
		return
	}
	if e.now-ls.since >= int64(e.cfg.RecoveryTicks) {
		ls.since = e.now
		if blindWait {
			// Start over with a new ballot later: another quorum may know more (the
			// invalidator's replica may answer with the commit of inst).
			e.finishLead(inst)
			inst.touched = e.now
			e.watchInst(inst)
			return
		}
		for _, x := range ls.wait {
			if xi := e.get(x, true); xi != nil && xi.status != protocol.StatusCommitted && xi.lead == nil {
				e.watchInst(xi)
				e.startRecovery(xi)
			}
		}
	}
}
