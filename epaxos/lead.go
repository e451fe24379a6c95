package epaxos

import (
	"github.com/parliament-lab/parliament/protocol"
)

// phase is what a coordinator (command leader or recoverer) of an instance is doing.
type phase uint8

const (
	phPreAccept phase = iota + 1 // collecting PreAcceptOK (ballot 0: fast path possible)
	phAccept                     // collecting EAcceptOK
	phPrepare                    // recovery: collecting EPrepareOK
	phValidate                   // recovery: collecting EValidateOK for a possible fast-path value
	phWait                       // recovery: waiting for invalidating instances to commit
)

// lead is the coordinator state of one instance at this replica.
type lead struct {
	phase    phase
	ballot   protocol.Ballot
	recovery bool
	gaveUp   bool // the fast-path wait expired: go slow as soon as a majority answered
	widened  bool
	asked    []bool // per replica index: the current phase was sent there
	replied  []bool
	oks      int // positive replies from peers in this phase
	valid    int // validation: validators that answered (own included), abstentions excluded
	same     int // pre-accept at ballot 0: votes identical to the proposal, leader included
	start    int64
	sent     int64

	base     []uint64 // pre-accept: the proposed deps
	baseSeq  uint64
	baseList []protocol.InstanceID
	union    []uint64 // pre-accept: union of the votes; recovery: union of what Q reported
	maxSeq   uint64

	preps []prepReply // recovery: the EPrepareOK replies (own state first)
	// recovery: per replica index, what its EPrepareOK (late ones included) or other
	// evidence says about its ballot-0 vote for the candidate: pvUnknown, pvSame, pvOther.
	pv    []uint8
	cand  prepReply // recovery: the possible fast-path value being validated
	wait  []protocol.InstanceID
	since int64 // phWait: when the invalidators were last nudged
	cmds  []protocol.Command
}

type prepReply struct {
	from    int
	status  protocol.Status
	vballot protocol.Ballot
	cmds    []protocol.Command
	deps    []uint64
	seq     uint64
}

func (e *Engine) newLead(inst *instance, ph phase, b protocol.Ballot) *lead {
	var ls *lead
	if k := len(e.free); k > 0 {
		ls = e.free[k-1]
		e.free[k-1] = nil
		e.free = e.free[:k-1]
		asked, replied, base, union, wait, pv := ls.asked, ls.replied, ls.base, ls.union, ls.wait[:0], ls.pv
		clear(asked)
		clear(replied)
		clear(base)
		clear(union)
		clear(pv)
		*ls = lead{asked: asked, replied: replied, base: base, union: union, wait: wait, pv: pv}
	} else {
		ls = &lead{asked: make([]bool, 2*e.n), base: make([]uint64, 2*e.n)}
		ls.replied = ls.asked[e.n:]
		ls.asked = ls.asked[:e.n:e.n]
		ls.union = ls.base[e.n:]
		ls.base = ls.base[:e.n:e.n]
		ls.pv = make([]uint8, e.n)
	}
	ls.phase, ls.ballot, ls.start, ls.sent = ph, b, e.now, e.now
	inst.lead = ls
	e.leading = append(e.leading, inst)
	return ls
}

// resetPhase starts a new phase of the same ballot.
func (e *Engine) resetPhase(ls *lead, ph phase) {
	ls.phase = ph
	clear(ls.asked)
	clear(ls.replied)
	ls.oks = 0
	ls.valid = 0
	ls.same = 0
	ls.start = e.now
	ls.sent = e.now
	ls.widened = false
	ls.gaveUp = false
}

// finishLead ends the coordination of inst here and recycles its state.
func (e *Engine) finishLead(inst *instance) {
	if ls := inst.lead; ls != nil {
		inst.lead = nil
		ls.preps, ls.cmds, ls.baseList, ls.cand = nil, nil, nil, prepReply{}
		e.free = append(e.free, ls)
	}
}

// promise raises the promised ballot of inst to b; a coordination of inst here at a
// lower ballot stops (it can no longer succeed).
func (e *Engine) promise(inst *instance, b protocol.Ballot) bool {
	if !inst.ballot.Less(b) {
		return false
	}
	inst.ballot = b
	if inst.lead != nil && inst.lead.ballot.Less(b) {
		e.finishLead(inst)
		inst.touched = e.now
	}
	return true
}

// refused handles a refusal carrying the higher ballot b: stop coordinating and let the
// recovery timer decide whether to try again with a higher ballot.
func (e *Engine) refused(inst *instance, b protocol.Ballot) {
	if inst.lead == nil || !inst.lead.ballot.Less(b) {
		return
	}
	inst.seen = max(inst.seen, b.Round)
	e.finishLead(inst)
	inst.touched = e.now
	e.watchInst(inst)
	// A new delay for the next attempt, over a wider range than the first one, so that
	// recoverers that preempted each other do not meet again at the same moment.
	inst.jitter = e.rng.Int64N(int64(e.cfg.RecoveryTicks) + 1)
}

// phaseMsg is the request of the current phase, without destination.
func (e *Engine) phaseMsg(inst *instance, ls *lead) protocol.Message {
	m := protocol.Message{Ballot: ls.ballot, Inst: inst.id}
	switch ls.phase {
	case phPreAccept:
		m.Type = protocol.MsgPreAccept
		m.Cmds, m.Deps, m.Seq = inst.cmds, ls.baseList, ls.baseSeq
	case phAccept:
		m.Type = protocol.MsgEAccept
		m.Cmds, m.Deps, m.Seq = inst.cmds, e.list(inst), inst.seq
	case phPrepare:
		m.Type = protocol.MsgEPrepare
	case phValidate:
		m.Type = protocol.MsgEValidate
		m.Cmds, m.Seq = ls.cand.cmds, ls.cand.seq
		m.Deps = e.listOf(ls.cand.deps)
	default:
		m.Type = protocol.MsgInvalid
	}
	return m
}

// sendPhase sends the current phase's request to need more peers (closest first) in
// thrifty mode, or to every peer not asked yet otherwise (need < 0: everyone).
func (e *Engine) sendPhase(inst *instance, ls *lead, need int) {
	if !e.cfg.Thrifty || ls.widened {
		need = -1
	}
	m := e.phaseMsg(inst, ls)
	for _, p := range e.order {
		if need == 0 {
			break
		}
		if ls.asked[p] {
			continue
		}
		ls.asked[p] = true
		m.To = e.ids[p]
		e.send(m)
		if need > 0 {
			need--
		}
	}
	ls.sent = e.now
}

// retransmit resends the current phase's request to peers asked but silent.
func (e *Engine) retransmit(inst *instance, ls *lead) {
	m := e.phaseMsg(inst, ls)
	for _, p := range e.order {
		if ls.asked[p] && !ls.replied[p] {
			m.To = e.ids[p]
			e.send(m)
		}
	}
	ls.sent = e.now
}

func (e *Engine) tickLead(inst *instance) {
	ls := inst.lead
	if ls == nil {
		return
	}
	switch ls.phase {
	case phPreAccept, phAccept:
		if e.now-ls.start >= int64(e.cfg.ThriftyWidenTicks) {
			if e.cfg.Thrifty && !ls.widened {
				ls.widened = true
				ls.start = e.now
				e.sendPhase(inst, ls, -1)
				return
			}
			if ls.phase == phPreAccept && !ls.gaveUp {
				ls.gaveUp = true
				e.decidePreAccept(inst)
				if inst.lead != ls {
					return
				}
			}
		}
	case phWait:
		e.checkWait(inst)
		return
	case phValidate:
		if e.cannotBeFast(inst, ls) {
			e.restartPhase1(inst, ls)
			return
		}
		if e.now-ls.start >= int64(e.cfg.RecoveryTicks) && ls.valid+e.silent(ls) < e.f+1 {
			// Too many validators abstained (they forgot what they would have to check):
			// give up this ballot; the recovery timer tries again with a new quorum.
			e.finishLead(inst)
			inst.touched = e.now
			e.watchInst(inst)
			return
		}
	}
	if inst.lead == ls && e.now-ls.sent >= int64(e.cfg.RetransmitTicks) {
		e.retransmit(inst, ls)
	}
}

// silent counts the replicas asked in the current phase that have not answered.
func (e *Engine) silent(ls *lead) int {
	n := 0
	for p := range ls.asked {
		if ls.asked[p] && !ls.replied[p] {
			n++
		}
	}
	return n
}

func (e *Engine) listOf(deps []uint64) []protocol.InstanceID {
	var l []protocol.InstanceID
	for r, v := range deps {
		if v > 0 {
			l = append(l, protocol.InstanceID{Replica: e.ids[r], Num: v})
		}
	}
	return l
}

// admitReply is the common head of the coordinator's reply handlers (PreAcceptOK,
// EAcceptOK, EValidateOK). A reply about an instance already committed here teaches the
// voter the outcome; a refusal hands the instance to refused; a reply for another phase
// or ballot, or a repeat from the same replica, is ignored. Otherwise the reply is counted
// and ok is true, with the instance, its lead state and the voter's row.
func (e *Engine) admitReply(m *protocol.Message, want phase) (inst *instance, ls *lead, from int, ok bool) {
	inst = e.get(m.Inst, false)
	if inst != nil && inst.status == protocol.StatusCommitted {
		e.sendCommit(inst, m.From) // a late voter learns the outcome
		return nil, nil, 0, false
	}
	if inst == nil || inst.lead == nil || inst.lead.phase != want {
		return nil, nil, 0, false
	}
	ls = inst.lead
	if !m.OK {
		e.refused(inst, m.Ballot)
		return nil, nil, 0, false
	}
	from = e.ri(m.From)
	if m.Ballot != ls.ballot || ls.replied[from] {
		return nil, nil, 0, false
	}
	ls.replied[from] = true
	ls.oks++
	return inst, ls, from, true
}

// admitRequest is the common head of the acceptor's request handlers (PreAccept, EAccept,
// EPrepare, EValidate). A request about an instance forgotten here gets a snapshot offer
// (the sender is behind); one about an instance committed here gets the commit; one in a
// ballot below our promise gets a refusal of type reply carrying that promise. Otherwise it
// returns the instance (created if new) for the handler to vote on.
func (e *Engine) admitRequest(m *protocol.Message, reply protocol.MsgType) *instance {
	inst := e.get(m.Inst, true)
	if inst == nil {
		if e.gone(m.Inst) {
			e.sendSnapshot(m.From) // forgotten here: the peer is behind
		}
		return nil
	}
	if inst.status == protocol.StatusCommitted {
		e.sendCommit(inst, m.From)
		return nil
	}
	if m.Ballot.Less(inst.ballot) {
		e.send(protocol.Message{Type: reply, To: m.From, Inst: m.Inst, Ballot: inst.ballot})
		return nil
	}
	return inst
}
