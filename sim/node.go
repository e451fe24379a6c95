package sim

import (
	"fmt"

	"github.com/parliament-lab/parliament/check"
	"github.com/parliament-lab/parliament/executor"
	"github.com/parliament-lab/parliament/kv"
	"github.com/parliament-lab/parliament/protocol"
)

// suspectTicks is how long (in the replica's ticks) an uncommitted instance may block
// execution before the engine is asked to recover it (protocol.Suspecter), as replica/
// does (its default is twice the EPaxos RecoveryTicks; half of that here recovers sooner
// and so exercises recovery more often).
const suspectTicks = 50

// maxReadyRounds bounds the Ready/Advance rounds after one input: an engine whose Ready is
// never empty would otherwise stall virtual time.
const maxReadyRounds = 64

// node is one simulated replica: its engine, executor and store, and its durable records
// (the simulated WAL). Only durable survives a crash.
type node struct {
	idx    int
	id     protocol.ReplicaID
	up     bool
	inc    int // incarnation: 0 at boot, +1 per restart
	period int64
	ticks  uint64

	eng   protocol.Engine
	susp  protocol.Suspecter
	comp  protocol.Compactor // nil when the engine cannot truncate
	exec  *executor.Executor
	store *kv.Store

	durable []protocol.Record
	// snaps are the durable state-machine snapshots (the snapshot files): after a
	// truncation only the one the records start from; a torn checkpoint or an install
	// may leave a newer one next to it.
	snaps []*snapshot
	// live holds the committed instances handed to the executor that the latest
	// snapshot's frontier does not cover, executed or not: installing a peer's snapshot
	// hands them to the new executor again (compaction.go, deliverSnapshot).
	live map[protocol.InstanceID]protocol.Instance
	// drainNext is the tick at which the drain asks the engine again to recover what
	// this replica is missing (drainSuspect).
	drainNext uint64

	// waiting maps the commands clients sent to this replica (this incarnation: a crash
	// breaks the connections) to the client to answer once the command executes here.
	waiting      map[check.CmdID]int
	blockedSince map[protocol.InstanceID]uint64

	tornNext bool  // crash at the next input, dropping its Ready
	downFor  int64 // how long the pending crash keeps the replica down
}

// boot starts (or restarts) a replica: a fresh engine built only from the durable records,
// and an executor and a store that start empty or, when the records start from a
// snapshot, from that durable snapshot. The engines re-emit every slot or instance they
// know committed above it in their first Ready (both engines document this), so the state
// machine is rebuilt by executing the committed log again from there.
func (s *sim) boot(nd *node) {
	nd.up = true
	nd.ticks = 0
	nd.drainNext = 0
	nd.waiting = map[check.CmdID]int{}
	nd.blockedSince = map[protocol.InstanceID]uint64{}
	nd.live = map[protocol.InstanceID]protocol.Instance{}
	eng, err := s.newEngine(protocol.Config{
		ID:       nd.id,
		Replicas: s.ids,
		Seed:     int64(s.engRng.Uint64()),
		Records:  protocol.CloneRecords(nd.durable),
	})
	if err != nil {
		s.violate(check.Panic, fmt.Sprintf("replica %d: engine construction failed from %d records: %v", nd.id, len(nd.durable), err))
		nd.up = false
		return
	}
	nd.eng = eng
	nd.susp, _ = eng.(protocol.Suspecter)
	nd.comp = nil
	if s.plan.every > 0 {
		nd.comp, _ = eng.(protocol.Compactor)
	}
	nd.store = kv.New()
	nd.exec = executor.New(executor.Config{Apply: func(inst *protocol.Instance) { s.apply(nd, inst) }})
	if !s.restoreAtBoot(nd) {
		nd.up = false
		return
	}
	first := s.engRng.Int64N(nd.period) + 1
	s.schedule(event{at: s.now + first, kind: evTick, node: nd.idx, inc: nd.inc})
	s.scheduleSnapshot(nd, true)
	s.process(nd)
}

func (s *sim) restart(nd *node) {
	nd.inc++
	s.checker.Restarted(nd.id)
	s.tracef("r%d restarts (incarnation %d) from %d durable records", nd.id, nd.inc, len(nd.durable))
	s.boot(nd)
}

// crash kills a replica: engine, executor, store and client connections are gone; its
// durable records stay.
func (s *sim) crash(nd *node, why string) {
	nd.up = false
	nd.tornNext = false
	nd.eng, nd.susp, nd.comp, nd.exec, nd.store = nil, nil, nil, nil, nil
	nd.waiting, nd.live = nil, nil
	s.res.Crashes++
	back := min(s.now+max(nd.downFor, 1), max(s.healAt, s.now+1))
	if s.trace != nil {
		s.tracef("r%d %s: down until %s", nd.id, why, check.FormatTime(back))
	}
	s.schedule(event{at: back, kind: evRestart, node: nd.idx})
}

func (s *sim) tick(e *event) {
	nd := s.nodes[e.node]
	if !nd.up || e.inc != nd.inc {
		return
	}
	s.schedule(event{at: s.now + nd.period, kind: evTick, node: nd.idx, inc: nd.inc})
	nd.ticks++
	nd.eng.Tick()
	s.afterInput(nd)
	if nd.up && !s.stopped {
		s.suspect(nd)
	}
	if nd.idx == 0 && !s.stopped {
		s.progress()
	}
}

// afterInput does what the engine asks after one input, or, for a torn crash, dies
// before doing any of it.
func (s *sim) afterInput(nd *node) {
	if nd.tornNext {
		rd := nd.eng.Ready()
		s.tracef("r%d crashes with its Ready unprocessed (%d records, %d messages lost)", nd.id, len(rd.Persist), len(rd.Messages))
		s.crash(nd, "torn crash")
		return
	}
	s.process(nd)
}

// process handles Readys in the order protocol.Ready prescribes: persist, send, hand
// committed instances to the executor (which applies them and answers clients), answer
// redirects, Advance. Records are durable once their Ready was processed.
func (s *sim) process(nd *node) {
	for range maxReadyRounds {
		if !nd.up || s.stopped {
			return
		}
		rd := nd.eng.Ready()
		if rd.IsEmpty() {
			return
		}
		for i := range rd.Persist {
			nd.durable = append(nd.durable, rd.Persist[i].Clone())
		}
		for i := range rd.Messages {
			m := rd.Messages[i].Clone()
			if m.From == 0 {
				m.From = nd.id
			}
			if m.Type == protocol.MsgSnapshot && len(m.Data) == 0 && !s.fillSnapshot(nd, &m) {
				return
			}
			s.send(m)
		}
		for i := range rd.Committed {
			inst := rd.Committed[i].Clone()
			if s.trace != nil {
				s.tracef("r%d commit %v %s", nd.id, inst.ID, check.FormatInstance(&inst))
			}
			s.violation(s.checker.Committed(nd.id, &inst))
			nd.exec.Add(inst)
		}
		if len(rd.Committed) > 0 && !s.stopped {
			nd.exec.Execute()
			if nd.comp != nil {
				for i := range rd.Committed {
					if id := rd.Committed[i].ID; !check.Covers(nd.snapFrontier(), id) {
						if _, ok := nd.live[id]; !ok {
							nd.live[id] = rd.Committed[i].Clone()
						}
					}
				}
			}
		}
		for i := range rd.Redirect {
			c := &rd.Redirect[i]
			id := check.CmdID{ClientID: c.ClientID, Seq: c.Seq}
			if ci, ok := nd.waiting[id]; ok {
				delete(nd.waiting, id)
				s.tracef("r%d redirects %s to leader %d", nd.id, id, rd.Leader)
				s.replyToClient(nd, ci, protocol.Reply{ClientID: c.ClientID, Seq: c.Seq,
					Result: protocol.ResultRedirect, Leader: rd.Leader})
			}
		}
		if !nd.up { // a violation handler may not crash a node, but stay defensive
			return
		}
		nd.eng.Advance(rd)
	}
	s.violate(check.Liveness, fmt.Sprintf("replica %d: Ready still not empty after %d rounds", nd.id, maxReadyRounds))
}

// apply is the executor's callback: the instance's commands run on the store in order,
// and the clients waiting at this replica get their replies.
func (s *sim) apply(nd *node, inst *protocol.Instance) {
	if s.stopped {
		return
	}
	s.violation(s.checker.Executed(nd.id, inst))
	for i := range inst.Cmds {
		c := &inst.Cmds[i]
		rep := nd.store.Apply(c)
		if c.Op == protocol.OpNoop {
			continue
		}
		id := check.CmdID{ClientID: c.ClientID, Seq: c.Seq}
		ci, ok := nd.waiting[id]
		if s.trace != nil {
			s.tracef("r%d exec %v %s -> %v %q", nd.id, inst.ID, check.FormatCommand(c), rep.Result, rep.Value)
		}
		if ok {
			delete(nd.waiting, id)
			rep.ClientID, rep.Seq = c.ClientID, c.Seq
			rep.Value = protocol.CloneBytes(rep.Value)
			s.replyToClient(nd, ci, rep)
		}
	}
}

// suspect reports to the engine the uncommitted instances that committed ones have waited
// on for suspectTicks (EPaxos explicit prepare, SOSP'13 §4.7), again every suspectTicks
// while they stay blocked. Blocked() is sorted, so the order of Suspect is deterministic.
func (s *sim) suspect(nd *node) {
	if s.draining {
		s.drainSuspect(nd)
	}
	if nd.susp == nil || nd.exec.Pending() == 0 {
		clear(nd.blockedSince)
		return
	}
	blocked := nd.exec.Blocked()
	var sus []protocol.InstanceID
	keep := make(map[protocol.InstanceID]uint64, len(blocked))
	for _, id := range blocked {
		since, ok := nd.blockedSince[id]
		switch {
		case !ok:
			since = nd.ticks
		case nd.ticks-since >= suspectTicks:
			sus = append(sus, id)
			since = nd.ticks
		}
		keep[id] = since
	}
	nd.blockedSince = keep
	if len(sus) > 0 {
		s.tracef("r%d suspects %v", nd.id, sus)
		nd.susp.Suspect(sus)
		s.process(nd)
	}
}
