// Package multipaxos is classic Multi-Paxos (Lamport, "Paxos Made Simple", 2001, §3) as a
// deterministic state machine implementing protocol.Engine: one leader, elected by phase 1
// over every slot above its commit point, then phase 2 per slot, pipelined (Window) and
// batched (MaxBatch). The engine performs no I/O, reads no clock and starts no goroutine;
// election jitter comes from Config.Seed. It implements protocol.Compactor: the runtime
// compacts it at its state-machine snapshots, and peers behind the compacted frontier catch
// up by snapshot transfer (snapshot.go). Propose keeps the caller's slice when
// Config.ProposeTakesOwnership is set (the default). See docs/multipaxos.md.
package multipaxos

import (
	"fmt"
	"log/slog"
	"math/bits"
	"math/rand/v2"

	"github.com/parliament-lab/parliament/protocol"
)

// Role is what a replica currently does.
type Role uint8

const (
	RoleFollower  Role = iota // accepts the leader's proposals, forwards client commands
	RoleCandidate             // running phase 1 with its own ballot
	RoleLeader                // phase 1 done: proposes client commands in phase 2
)

func (r Role) String() string {
	switch r {
	case RoleFollower:
		return "follower"
	case RoleCandidate:
		return "candidate"
	case RoleLeader:
		return "leader"
	}
	return fmt.Sprintf("role(%d)", uint8(r))
}

// maxAheadSlots bounds how far above its commit point a replica materializes slots for a
// message, so that a corrupt or hostile slot number cannot make it allocate without limit.
// A replica further behind than this learns by catch-up instead.
const maxAheadSlots = 1 << 16

// maxCatchUpSlots and maxCatchUpCmds bound one MsgCatchUpReply.
const (
	maxCatchUpSlots = 256
	maxCatchUpCmds  = 1 << 16
)

// stepFunc handles the messages specific to one role (etcd-io/raft style).
type stepFunc func(e *Engine, m protocol.Message)

// Engine is one Multi-Paxos replica. It is not safe for concurrent use.
type Engine struct {
	cfg      Config
	id       protocol.ReplicaID
	replicas []protocol.ReplicaID
	self     int // index of id in replicas
	quorum   int
	logger   *slog.Logger
	rng      *rand.Rand

	role Role
	step stepFunc

	promised protocol.Ballot // highest ballot promised; persisted (RecordBallot) before any reply
	ballot   protocol.Ballot // own ballot while candidate or leader
	maxSeen  protocol.Ballot // highest ballot heard of (Nacks included): the next ballot exceeds it
	leader   protocol.ReplicaID

	log         slotLog
	commitIndex uint64 // every slot <= commitIndex is chosen and was emitted in Ready.Committed
	recCommit   uint64 // highest RecordCommitIndex queued for persistence
	retained    int    // commands in committed slots still held in log (RetainCmds)

	// Compaction (snapshot.go). snapIndex is the compacted frontier: every slot up to it is
	// folded into the runtime's state-machine snapshot. Only slots up to snapIndex are ever
	// dropped from memory, so that LiveRecords can always rebuild the rest.
	snapIndex uint64
	// chosenBallot is the highest VBallot of any slot committed here (installed snapshots
	// included). Every value chosen here was chosen in a ballot at or below it, so an
	// Accept for a dropped committed slot is acknowledged only in a ballot at least this
	// high (see chosenBound).
	chosenBallot protocol.Ballot
	snapNext     []uint64 // per replica index: earliest tick for the next MsgSnapshot to it

	now              uint64 // ticks since start
	electionElapsed  int
	electionTimeout  int // randomized in [ElectionTicks, 2*ElectionTicks), doubled per failed campaign
	failedCampaigns  int // consecutive campaigns that timed out without a majority (back-off)
	heartbeatElapsed int
	retransmitTicks  uint64

	// Candidate: phase 1 state.
	promises       uint64             // replicas (by index) that promised e.ballot
	prepareIndex   uint64             // first slot asked about (commitIndex+1 at campaign time)
	peerCommit     uint64             // highest commit point reported in a promise
	peerCommitFrom protocol.ReplicaID // the promiser that reported it
	votes          []vote             // votes[i] is the best value seen for slot prepareIndex+i
	prepareSent    uint64             // tick of the last Prepare broadcast

	// Leader.
	toldCommit []uint64 // per replica index: highest commit point sent to it
	heard      uint64   // replicas heard from in the current check-quorum period
	checkTicks int

	// Follower.
	leaderCommit    uint64 // highest commit point heard from the current leader
	catchUpSent     uint64 // tick of the last MsgCatchUp
	catchUpInflight bool

	pending []protocol.Command // proposals not yet in a slot, forwarded or redirected

	// Ready buffers, reused after Advance.
	persist   []protocol.Record
	msgs      []protocol.Message
	committed []protocol.Instance
	redirect  []protocol.Command
	depArena  []protocol.InstanceID

	stats protocol.Stats
}

// vote is the best value a candidate has seen for one slot in phase 1.
type vote struct {
	cmds    []protocol.Command
	vballot protocol.Ballot
	status  protocol.Status
}

var (
	_ protocol.Engine        = (*Engine)(nil)
	_ protocol.StatsReporter = (*Engine)(nil)
	_ protocol.Compactor     = (*Engine)(nil)
)

// New builds an engine, restoring the promised ballot, accepted slots and commit point from
// cfg.Records (a restart). Slots committed before the crash and above the last
// RecordSnapshot are emitted again in the first Ready, since the state machine restarts
// from that snapshot (or from scratch); slots the snapshot covers are not.
func New(cfg Config) (*Engine, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	e := &Engine{
		cfg:             cfg,
		id:              cfg.ID,
		replicas:        append([]protocol.ReplicaID(nil), cfg.Replicas...),
		quorum:          len(cfg.Replicas)/2 + 1,
		logger:          cfg.Log(),
		rng:             rand.New(rand.NewPCG(uint64(cfg.Seed), uint64(cfg.ID))),
		log:             slotLog{base: 1},
		retransmitTicks: uint64(2 * cfg.HeartbeatTicks),
	}
	for i, r := range e.replicas {
		if r == e.id {
			e.self = i
		}
	}
	e.toldCommit = make([]uint64, len(e.replicas))
	e.snapNext = make([]uint64, len(e.replicas))
	e.restore(cfg.Records)
	e.becomeFollower(0)
	if cfg.PreferredLeader == e.id && e.promised.IsZero() && e.commitIndex == 0 {
		// A fresh cluster's preferred leader campaigns at the first tick, well before any
		// other replica's timeout (at least ElectionTicks) runs out.
		e.electionTimeout = 1
	}
	return e, nil
}

// restore rebuilds durable state from the records of a previous incarnation.
func (e *Engine) restore(recs []protocol.Record) {
	var commit, snap uint64
	for i := range recs {
		r := &recs[i]
		switch r.Type {
		case protocol.RecordBallot:
			if e.promised.Less(r.Ballot) {
				e.promised = r.Ballot
			}
		case protocol.RecordInstance:
			s := r.Inst.ID.Num
			if r.Inst.ID.Replica != 0 || s == 0 || s < e.log.base {
				continue
			}
			if s-e.log.base > 1<<24 || (r.Inst.Status != protocol.StatusAccepted && r.Inst.Status != protocol.StatusCommitted) {
				e.logger.Warn("multipaxos: skipping implausible record", "replica", e.id, "inst", r.Inst.ID, "status", r.Inst.Status)
				continue
			}
			sl := e.log.ensure(s)
			sl.cmds, sl.vballot, sl.status = r.Inst.Cmds, r.Inst.VBallot, r.Inst.Status
		case protocol.RecordCommitIndex:
			commit = max(commit, r.Index)
		case protocol.RecordSnapshot:
			// Written by LiveRecords or by installing a MsgSnapshot: the runtime owns
			// the matching state-machine snapshot, and the slots it covers are executed.
			if e.chosenBallot.Less(r.Ballot) {
				e.chosenBallot = r.Ballot
			}
			if r.Index > snap {
				snap = r.Index
				e.log.dropBefore(snap + 1)
			}
		}
	}
	e.maxSeen = e.promised
	e.commitIndex = snap
	e.snapIndex = snap
	e.log.dropBefore(snap + 1)
	if e.log.base <= snap {
		e.log.base = snap + 1
	}
	// Every slot up to the persisted commit point was chosen with the value last recorded
	// for it: after committing a slot a replica never records another value for it.
	for s := snap + 1; s <= commit; s++ {
		sl := e.log.get(s)
		if sl == nil || sl.status == protocol.StatusNone {
			e.logger.Warn("multipaxos: commit index beyond the recorded slots", "replica", e.id, "inst", s, "commit", commit)
			break
		}
		sl.status = protocol.StatusCommitted
	}
	e.advanceCommit()
	e.recCommit = e.commitIndex
	e.persist = e.persist[:0] // nothing new to persist: it all came from disk
}

// Leader returns the replica this one believes leads (itself included), 0 when unknown.
func (e *Engine) Leader() protocol.ReplicaID { return e.leader }

// Role returns the current role.
func (e *Engine) Role() Role { return e.role }

// Ballot returns the highest ballot this replica has promised.
func (e *Engine) Ballot() protocol.Ballot { return e.promised }

// CommitIndex returns the commit point: every slot up to it is chosen and was emitted.
func (e *Engine) CommitIndex() uint64 { return e.commitIndex }

// Stats implements protocol.StatsReporter.
func (e *Engine) Stats() protocol.Stats { return e.stats }

// Propose implements protocol.Engine. Commands proposed before the next Ready go into one
// slot (up to MaxBatch) at the leader, one MsgForward at a follower that knows the leader,
// or Ready.Redirect when no leader is known. With ProposeTakesOwnership the engine may keep
// cmds itself (never modifying it); the byte slices inside the commands are always kept.
func (e *Engine) Propose(cmds []protocol.Command) {
	if len(cmds) == 0 {
		return
	}
	e.stats.Proposed += uint64(len(cmds))
	e.enqueue(cmds)
}

// enqueue adds cmds to the proposals not yet in a slot. The first batch after a flush is
// kept as is when the caller handed it over (the common case: one Propose per Ready, so a
// slot holds the caller's slice and nothing is copied); its capacity is clipped, so that
// appending a later batch copies into a new array instead of writing into the caller's.
// pending is never modified in place: it is handed out whole or by sub-slices, then
// dropped (set to nil), so that a borrowed array is never cleared or overwritten.
func (e *Engine) enqueue(cmds []protocol.Command) {
	if len(e.pending) == 0 && e.cfg.ProposeTakesOwnership {
		e.pending = cmds[:len(cmds):len(cmds)]
		return
	}
	e.pending = append(e.pending, cmds...)
}

// Step implements protocol.Engine.
func (e *Engine) Step(m protocol.Message) {
	if m.From == e.id || (m.To != 0 && m.To != e.id) || e.index(m.From) < 0 {
		return
	}
	switch m.Type {
	case protocol.MsgPrepare:
		e.handlePrepare(&m)
		return
	case protocol.MsgNack:
		e.handleNack(&m)
		return
	case protocol.MsgCatchUp:
		e.handleCatchUp(&m)
		return
	case protocol.MsgSnapshot:
		e.handleSnapshot(&m)
		return
	case protocol.MsgAccept, protocol.MsgHeartbeat, protocol.MsgCommit:
		// Messages of a leader's ballot: a lower ballot is refused with the promised one so
		// that a stale leader steps down; a higher ballot makes this replica follow it.
		if m.Ballot.Replica != m.From {
			return
		}
		if m.Ballot.Less(e.promised) {
			e.send(protocol.Message{Type: protocol.MsgNack, To: m.From, Ballot: e.promised, Inst: m.Inst})
			return
		}
		if e.promised.Less(m.Ballot) {
			e.promise(m.Ballot)
		}
		if e.role != RoleFollower || e.leader != m.From {
			e.becomeFollower(m.From)
		}
	}
	e.step(e, m)
}

// Tick implements protocol.Engine.
func (e *Engine) Tick() {
	e.now++
	switch e.role {
	case RoleLeader:
		e.tickLeader()
	case RoleCandidate:
		e.tickCandidate()
	default:
		e.tickFollower()
	}
}

// Ready implements protocol.Engine.
func (e *Engine) Ready() protocol.Ready {
	e.flushProposals()
	if e.role == RoleLeader {
		e.sendCommitNotifications()
	}
	if e.commitIndex > e.recCommit {
		e.recCommit = e.commitIndex
		e.persist = append(e.persist, protocol.Record{Type: protocol.RecordCommitIndex, Index: e.commitIndex})
	}
	return protocol.Ready{
		Persist:   e.persist,
		Messages:  e.msgs,
		Committed: e.committed,
		Redirect:  e.redirect,
		Leader:    e.leader,
	}
}

// Advance implements protocol.Engine: the first len(rd.X) items of each buffer were handled.
func (e *Engine) Advance(rd protocol.Ready) {
	e.persist = consume(e.persist, len(rd.Persist))
	e.msgs = consume(e.msgs, len(rd.Messages))
	e.committed = consume(e.committed, len(rd.Committed))
	e.redirect = consume(e.redirect, len(rd.Redirect))
	e.compact()
}

func consume[T any](buf []T, n int) []T {
	if n >= len(buf) {
		clear(buf) // drop references so handed-out commands can be collected
		return buf[:0]
	}
	rest := copy(buf, buf[n:])
	clear(buf[rest:])
	return buf[:rest]
}

// compact drops the oldest slots covered by the compacted frontier while the committed
// commands in memory exceed RetainCmds. Slots above the frontier are never dropped: LiveRecords
// must be able to rebuild them (a replica that forgot an accepted value of a chosen slot could
// let a later leader choose another), and peers may need them.
func (e *Engine) compact() {
	if e.retained <= e.cfg.RetainCmds {
		return
	}
	s := e.log.base
	for s <= e.snapIndex && e.retained > e.cfg.RetainCmds {
		e.retained -= len(e.log.get(s).cmds)
		s++
	}
	e.log.dropBefore(s)
}

// dropThrough forgets every slot up to s, keeping the count of retained commands right.
func (e *Engine) dropThrough(s uint64) {
	for x := e.log.base; x <= min(s, e.commitIndex, e.log.last()); x++ {
		e.retained -= len(e.log.get(x).cmds)
	}
	e.log.dropBefore(s + 1)
}

// index returns the position of r in replicas, or -1.
func (e *Engine) index(r protocol.ReplicaID) int {
	for i, x := range e.replicas {
		if x == r {
			return i
		}
	}
	return -1
}

func (e *Engine) send(m protocol.Message) {
	m.From = e.id
	e.msgs = append(e.msgs, m)
}

// promise raises the promised ballot and persists it; replies that depend on it leave in the
// same Ready, hence after the record is durable.
func (e *Engine) promise(b protocol.Ballot) {
	e.promised = b
	if e.maxSeen.Less(b) {
		e.maxSeen = b
	}
	e.persist = append(e.persist, protocol.Record{Type: protocol.RecordBallot, Ballot: b})
}

func (e *Engine) persistSlot(s uint64, sl *slot) {
	e.persist = append(e.persist, protocol.Record{
		Type: protocol.RecordInstance,
		Inst: protocol.Instance{
			ID:      protocol.InstanceID{Num: s},
			Status:  sl.status,
			VBallot: sl.vballot,
			Seq:     s,
			Cmds:    sl.cmds,
		},
	})
}

// maxBackoffShift caps the back-off of failed campaigns at 2^3 = 8 times the timeout.
const maxBackoffShift = 3

// resetElectionTimer draws a fresh timeout in [E, 2E), doubled for every consecutive failed
// campaign (up to 8x). Without the back-off a candidate whose timeout is shorter than its
// round trip to a majority gives up on each ballot before the promises arrive, and since its
// Prepares reset everyone else's timers, nobody else takes over either: a livelock (found by
// the simulator with skewed ticks on the 5-site WAN, seed 41).
func (e *Engine) resetElectionTimer() {
	e.electionElapsed = 0
	e.electionTimeout = (e.cfg.ElectionTicks + e.rng.IntN(e.cfg.ElectionTicks)) << min(e.failedCampaigns, maxBackoffShift)
}

// becomeFollower steps down (if needed) and follows leader (0: unknown). A leader that steps
// down hands the proposals it has not put in a slot to Ready.Redirect: it accepted
// responsibility for them and must not drop them silently.
func (e *Engine) becomeFollower(leader protocol.ReplicaID) {
	if e.role == RoleLeader && len(e.pending) > 0 {
		e.redirect = append(e.redirect, e.pending...)
		e.pending = nil
	}
	if e.role != RoleFollower || e.leader != leader {
		e.logger.Debug("multipaxos: following", "replica", e.id, "leader", leader, "ballot", e.promised)
	}
	if leader != 0 {
		e.failedCampaigns = 0 // a leader is making progress: elections are over
	}
	e.role = RoleFollower
	e.step = stepFollower
	e.leader = leader
	e.leaderCommit = 0
	e.catchUpInflight = false
	e.votes = e.votes[:0]
	e.resetElectionTimer()
}

func popcount(x uint64) int { return bits.OnesCount64(x) }
