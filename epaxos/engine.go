package epaxos

import (
	"bytes"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sort"

	"github.com/parliament-lab/parliament/protocol"
)

// instance is the state of one instance at this replica.
type instance struct {
	id      protocol.InstanceID
	status  protocol.Status
	ballot  protocol.Ballot // highest ballot promised
	vballot protocol.Ballot // ballot of the last vote for (cmds, deps, seq); see doc.go for ballot 0
	seq     uint64
	deps    []uint64 // per replica index; prefix semantics; nil until known
	cmds    []protocol.Command
	ks      []*keyState        // per command of ksCmds: its key's index entry (nil for no-ops); see keysOf
	ksCmds  []protocol.Command // the commands ks was resolved for

	depsList []protocol.InstanceID // cached wire form of deps; rebuilt (never mutated) on change
	emitted  bool                  // handed to the executor in this incarnation
	watched  bool                  // in Engine.watch
	mine     bool                  // proposed by this incarnation (or restored) as command leader; counted in inflight
	lead     *lead                 // non-nil while this replica coordinates the instance
	touched  int64                 // tick of the last sign of progress
	jitter   int64                 // extra recovery delay for this instance
	seen     uint32                // highest ballot round seen in a refusal
	// executedElsewhere: a peer's snapshot frontier covers this instance, so it was
	// committed (recovery: see acceptCandidate). Volatile: a restart asks again.
	executedElsewhere bool
	orig              []protocol.Command // leader: the commands proposed, re-proposed if recovery commits a no-op
}

// Engine is one EPaxos replica. See the package documentation.
type Engine struct {
	cfg  Config
	log  *slog.Logger
	self protocol.ReplicaID
	me   int // index of self in cfg.Replicas
	n    int
	f    int
	fq   int // fast quorum used for committing (mutation aware)
	fqR  int // true fast quorum (used by recovery)

	ids    []protocol.ReplicaID
	idxMap map[protocol.ReplicaID]int
	idxArr []int32 // idxArr[id] = index+1 for small IDs

	rows [][]*instance // rows[r][num-1-base[r]]
	keys map[string]*keyState

	// Truncation (compact.go). Per replica index, prefix semantics:
	base      []uint64   // instances <= base are forgotten (rows start after them); base <= cf
	cf        []uint64   // compacted frontier: executed here (Compact, snapshot, restart)
	blind     []uint64   // forgotten without a per-key summary (restart, snapshot): see compact.go
	gf        []uint64   // global frontier: min of cf over every replica (peers' reports)
	peerCF    [][]uint64 // peers' reported compacted frontiers
	anyBlind  bool
	anyGF     bool
	cfList    []protocol.InstanceID // cached wire form of cf
	cfSent    int64                 // tick of the last frontier broadcast
	snapSent  []int64               // per replica index: tick of the last MsgSnapshot sent there
	bcast     []protocol.Instance   // commits to announce to every peer at the next Ready
	restoring bool
	counts    counters
	nextNum   uint64
	now       int64
	rng       *rand.Rand

	pending  []protocol.Command
	inflight int
	leading  []*instance // instances with a lead state (compacted lazily)
	watch    []*instance // uncommitted instances known here (compacted lazily)
	restored []*instance // committed instances to re-emit after a restart

	order []int // peers (indices) closest first, self excluded

	persist   []protocol.Record
	msgs      []protocol.Message
	committed []protocol.Instance

	stats protocol.Stats
	scr   []uint64 // scratch deps
	scr2  []uint64
	free  []*lead // finished coordinator states, reused
	slab  slab    // chunked per-instance memory (slab.go)
}

// keyState indexes, per key, the highest instance of every row that touched the key
// (any access, and writes), and the highest seq seen: O(commands) dependency computation.
// goneAny/goneWrite are the same for the instances this replica executed and then forgot
// (compact.go): validation still needs to know that they exist.
type keyState struct {
	lastAny   []uint64
	lastWrite []uint64
	goneAny   []uint64
	goneWrite []uint64
	seqAny    uint64
	seqWrite  uint64
}

var (
	_ protocol.Engine        = (*Engine)(nil)
	_ protocol.StatsReporter = (*Engine)(nil)
	_ protocol.Suspecter     = (*Engine)(nil)
	_ protocol.Compactor     = (*Engine)(nil)
)

// New builds an engine, restoring its state from cfg.Records.
func New(cfg Config) (*Engine, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.fillDefaults()
	e := &Engine{
		cfg:     cfg,
		log:     cfg.Log(),
		self:    cfg.ID,
		n:       len(cfg.Replicas),
		ids:     slices.Clone(cfg.Replicas),
		idxMap:  make(map[protocol.ReplicaID]int, len(cfg.Replicas)),
		keys:    make(map[string]*keyState),
		nextNum: 1,
		rng:     rand.New(rand.NewPCG(uint64(cfg.Seed), uint64(cfg.ID))),
	}
	e.f = MaxFailures(e.n)
	e.fqR = FastQuorum(e.n)
	e.fq = e.fqR
	if cfg.UnsafeFastQuorumMinusOne {
		e.fq--
	}
	maxID := protocol.ReplicaID(0)
	for i, id := range e.ids {
		e.idxMap[id] = i
		if id == e.self {
			e.me = i
		}
		maxID = max(maxID, id)
	}
	if maxID < 1<<12 {
		e.idxArr = make([]int32, maxID+1)
		for i, id := range e.ids {
			e.idxArr[id] = int32(i + 1)
		}
	}
	e.rows = make([][]*instance, e.n)
	fr := make([]uint64, 4*e.n)
	e.base, e.cf, e.blind, e.gf = fr[:e.n:e.n], fr[e.n:2*e.n:2*e.n], fr[2*e.n:3*e.n:3*e.n], fr[3*e.n:]
	e.peerCF = make([][]uint64, e.n)
	for i := range e.peerCF {
		e.peerCF[i] = make([]uint64, e.n)
	}
	e.snapSent = make([]int64, e.n)
	for i := range e.snapSent {
		e.snapSent[i] = -1 << 40
	}
	e.cfSent = -1 << 40
	e.scr = make([]uint64, e.n)
	e.scr2 = make([]uint64, e.n)
	e.order = e.peerOrder()
	e.restore(cfg.Records)
	return e, nil
}

// peerOrder ranks peers closest first: LatencyRank, then by ID distance.
func (e *Engine) peerOrder() []int {
	rank := make(map[protocol.ReplicaID]int)
	for i, r := range e.cfg.LatencyRank {
		if _, ok := rank[r]; !ok {
			rank[r] = i
		}
	}
	var out []int
	for i := range e.ids {
		if i != e.me {
			out = append(out, i)
		}
	}
	dist := func(i int) int64 {
		d := int64(e.ids[i]) - int64(e.self)
		if d < 0 {
			d = -d
		}
		return d
	}
	sort.SliceStable(out, func(a, b int) bool {
		ra, oka := rank[e.ids[out[a]]]
		rb, okb := rank[e.ids[out[b]]]
		if oka != okb {
			return oka
		}
		if oka && ra != rb {
			return ra < rb
		}
		if da, db := dist(out[a]), dist(out[b]); da != db {
			return da < db
		}
		return out[a] < out[b]
	})
	return out
}

// ri returns the index of replica id, or -1.
func (e *Engine) ri(id protocol.ReplicaID) int {
	if e.idxArr != nil {
		if int(id) < len(e.idxArr) {
			return int(e.idxArr[id]) - 1
		}
		return -1
	}
	if i, ok := e.idxMap[id]; ok {
		return i
	}
	return -1
}

// get returns the instance id, creating an empty one if create is set. It returns nil
// for instances of unknown replicas, number 0, and instances covered by the compacted
// frontier that are not in memory (forgotten: see gone).
func (e *Engine) get(id protocol.InstanceID, create bool) *instance {
	r := e.ri(id.Replica)
	if r < 0 || id.Num == 0 || id.Num <= e.base[r] {
		return nil
	}
	off := id.Num - 1 - e.base[r]
	row := e.rows[r]
	if off < uint64(len(row)) {
		if inst := row[off]; inst != nil || !create {
			return inst
		}
	} else if !create {
		return nil
	}
	if id.Num <= e.cf[r] && !e.restoring {
		return nil // executed here and not individually known: never recreate it
	}
	if off >= uint64(len(row)) {
		if off-uint64(len(row)) >= 1<<20 {
			return nil // absurd gap: refuse rather than allocate (input from the network)
		}
		row = slices.Grow(row, int(off+1)-len(row))[:off+1]
		e.rows[r] = row
	}
	inst := e.newInstance(id)
	row[off] = inst
	return inst
}

// rowEnd returns the highest instance number of row r held in memory (or forgotten).
func (e *Engine) rowEnd(r int) uint64 { return e.base[r] + uint64(len(e.rows[r])) }

// Stats returns the counters of this replica.
func (e *Engine) Stats() protocol.Stats { return e.stats }

// Propose queues client commands; they go into one instance at the next Ready.
func (e *Engine) Propose(cmds []protocol.Command) {
	e.pending = append(e.pending, cmds...)
	e.stats.Proposed += uint64(len(cmds))
}

// Ready returns what the runtime must do now.
func (e *Engine) Ready() protocol.Ready {
	e.flushProposals()
	e.flushCommits()
	if len(e.restored) > 0 {
		for _, inst := range e.restored {
			e.emit(inst)
		}
		e.restored = nil
	}
	return protocol.Ready{Persist: e.persist, Messages: e.msgs, Committed: e.committed}
}

// Advance drops the work of rd, which the runtime has done.
func (e *Engine) Advance(rd protocol.Ready) {
	e.persist = shift(e.persist, len(rd.Persist))
	e.msgs = shift(e.msgs, len(rd.Messages))
	e.committed = shift(e.committed, len(rd.Committed))
}

func shift[T any](s []T, n int) []T {
	if n >= len(s) {
		clear(s)
		return s[:0]
	}
	k := copy(s, s[n:])
	clear(s[k:])
	return s[:k]
}

// Step handles one message from a peer.
func (e *Engine) Step(m protocol.Message) {
	if m.To != e.self || m.From == e.self || e.ri(m.From) < 0 {
		return
	}
	switch m.Type {
	case protocol.MsgPreAccept:
		e.onPreAccept(&m)
	case protocol.MsgPreAcceptOK:
		e.onPreAcceptOK(&m)
	case protocol.MsgEAccept:
		e.onAccept(&m)
	case protocol.MsgEAcceptOK:
		e.onAcceptOK(&m)
	case protocol.MsgECommit:
		e.onCommit(m.Inst, m.Cmds, m.Deps, m.Seq)
	case protocol.MsgECommitBatch:
		for i := range m.Insts {
			in := &m.Insts[i]
			e.onCommit(in.ID, in.Cmds, in.Deps, in.Seq)
		}
		if len(m.Deps) > 0 {
			e.noteFrontier(e.ri(m.From), m.Deps)
		}
	case protocol.MsgSnapshot:
		e.onSnapshot(&m)
	case protocol.MsgEPrepare:
		e.onPrepare(&m)
	case protocol.MsgEPrepareOK:
		e.onPrepareOK(&m)
	case protocol.MsgEValidate:
		e.onValidate(&m)
	case protocol.MsgEValidateOK:
		e.onValidateOK(&m)
	}
}

// Tick advances the logical clock: retransmissions, thrifty widening, recovery timers.
func (e *Engine) Tick() {
	e.now++
	k := 0
	for _, inst := range e.leading {
		if inst.lead == nil {
			continue
		}
		e.leading[k] = inst
		k++
	}
	clear(e.leading[k:])
	e.leading = e.leading[:k]
	for i := 0; i < len(e.leading); i++ {
		e.tickLead(e.leading[i])
	}
	e.tickWatch()
	e.tickFrontier()
}

// tickWatch starts recovery of instances that stayed uncommitted too long.
func (e *Engine) tickWatch() {
	k := 0
	var due []*instance
	for _, inst := range e.watch {
		if inst.status == protocol.StatusCommitted {
			inst.watched = false
			continue
		}
		e.watch[k] = inst
		k++
		if inst.lead == nil && e.now-inst.touched >= int64(e.cfg.RecoveryTicks)+inst.jitter {
			due = append(due, inst)
		}
	}
	clear(e.watch[k:])
	e.watch = e.watch[:k]
	for _, inst := range due {
		e.startRecovery(inst)
	}
}

// watchInst makes inst subject to the recovery timer.
func (e *Engine) watchInst(inst *instance) {
	if inst.watched || inst.status == protocol.StatusCommitted {
		return
	}
	inst.watched = true
	inst.touched = e.now
	inst.jitter = e.rng.Int64N(int64(e.cfg.RecoveryTicks)/2 + 1)
	e.watch = append(e.watch, inst)
}

// Suspect starts recovery of the given instances unless they are committed or already
// being coordinated here.
func (e *Engine) Suspect(ids []protocol.InstanceID) {
	for _, id := range ids {
		inst := e.get(id, true)
		if inst == nil || inst.status == protocol.StatusCommitted || inst.lead != nil {
			continue
		}
		if inst.ballot.Round > 0 && inst.ballot.Replica != e.self && e.now-inst.touched < int64(e.cfg.RecoveryTicks)/2 {
			// Another replica's recovery is under way (we promised its ballot lately):
			// starting one more here, with a higher ballot, would only preempt it.
			// Replicas whose executors were all blocked on one instance, suspecting it
			// every period, kept preempting each other's recoveries for ever (sim seed
			// 108009, N=5). The recovery timer takes over if that recovery goes quiet.
			continue
		}
		e.watchInst(inst)
		e.startRecovery(inst)
	}
}

// ---- attribute helpers -------------------------------------------------------------

// conflictAttrs folds into deps (per replica index) and returns the seq implied by the
// conflicts with cmds known here. Row skip (the command leader's row) is left alone: the
// leader knows its own row completely, and a follower may already know later instances
// of that row. It resolves inst's index entries for cmds on the way (keysOf).
func (e *Engine) conflictAttrs(inst *instance, cmds []protocol.Command, deps []uint64, skip int) uint64 {
	var seq uint64
	e.keysOf(inst, cmds)
	for i := range cmds {
		c := &cmds[i]
		ks := inst.ks[i]
		if ks == nil {
			continue
		}
		src, s := ks.lastAny, ks.seqAny
		if c.IsRead() {
			src, s = ks.lastWrite, ks.seqWrite
		}
		for r, v := range src {
			if r != skip && v > deps[r] {
				deps[r] = v
			}
		}
		seq = max(seq, s+1)
	}
	if e.anyBlind && !isNoop(cmds) {
		// Instances this replica forgot without a per-key summary (restart, snapshot)
		// may conflict with anything: depend on all of them (compact.go).
		for r, v := range e.blind {
			if r != skip && v > deps[r] {
				deps[r] = v
			}
		}
	}
	return seq
}

// keysOf resolves the index entries of cmds, the commands inst is getting, once per
// instance: an instance's commands are either its proposal or a no-op, so a same-length
// command list with the same first command is the same list, and later phases, index
// and forget need no map lookups.
func (e *Engine) keysOf(inst *instance, cmds []protocol.Command) {
	if old := inst.ksCmds; inst.ks != nil && len(old) == len(cmds) && (len(cmds) == 0 || &old[0] == &cmds[0] ||
		(old[0].Op == cmds[0].Op && bytes.Equal(old[0].Key, cmds[0].Key))) {
		return
	}
	inst.ksCmds = cmds
	inst.ks = e.newKeyRefs(len(cmds))
	for i := range cmds {
		c := &cmds[i]
		if c.Op == protocol.OpNoop {
			continue
		}
		ks := e.keys[string(c.Key)]
		if ks == nil {
			ks = e.newKeyState()
			e.keys[string(c.Key)] = ks
		}
		inst.ks[i] = ks
	}
}

// index records inst's commands and seq in the per-key index.
func (e *Engine) index(inst *instance) {
	e.keysOf(inst, inst.cmds)
	r := e.ri(inst.id.Replica)
	for i := range inst.cmds {
		c := &inst.cmds[i]
		ks := inst.ks[i]
		if ks == nil {
			continue
		}
		if inst.id.Num > ks.lastAny[r] {
			ks.lastAny[r] = inst.id.Num
		}
		ks.seqAny = max(ks.seqAny, inst.seq)
		if !c.IsRead() {
			if inst.id.Num > ks.lastWrite[r] {
				ks.lastWrite[r] = inst.id.Num
			}
			ks.seqWrite = max(ks.seqWrite, inst.seq)
		}
	}
}

func (e *Engine) newKeyState() *keyState {
	n := e.n
	buf := make([]uint64, 4*n)
	return &keyState{lastAny: buf[:n:n], lastWrite: buf[n : 2*n : 2*n], goneAny: buf[2*n : 3*n : 3*n], goneWrite: buf[3*n:]}
}

// depsFrom decodes a wire dependency list into dst (per replica index, prefix semantics).
func (e *Engine) depsFrom(dst []uint64, list []protocol.InstanceID) []uint64 {
	if dst == nil {
		dst = make([]uint64, e.n)
	} else {
		clear(dst)
	}
	for _, d := range list {
		if r := e.ri(d.Replica); r >= 0 && d.Num > dst[r] {
			dst[r] = d.Num
		}
	}
	return dst
}

// setAttrs replaces inst's attributes.
func (e *Engine) setAttrs(inst *instance, cmds []protocol.Command, deps []uint64, seq uint64) {
	e.keysOf(inst, cmds)
	inst.cmds = cmds
	if inst.deps == nil {
		inst.deps = e.newDeps()
	}
	if !slices.Equal(inst.deps, deps) {
		copy(inst.deps, deps)
		inst.depsList = nil
	}
	inst.seq = seq
	e.index(inst)
}

func (e *Engine) list(inst *instance) []protocol.InstanceID {
	if inst.depsList == nil && inst.deps != nil {
		cnt := 0
		for _, v := range inst.deps {
			if v > 0 {
				cnt++
			}
		}
		l := e.newIDs(cnt)
		for r, v := range inst.deps {
			if v > 0 {
				l = append(l, protocol.InstanceID{Replica: e.ids[r], Num: v})
			}
		}
		inst.depsList = l
	}
	return inst.depsList
}

func conflictsAny(a, b []protocol.Command) bool {
	for i := range a {
		for j := range b {
			if a[i].Conflicts(&b[j]) {
				return true
			}
		}
	}
	return false
}

// ---- output helpers ----------------------------------------------------------------

func (e *Engine) snapshot(inst *instance) protocol.Instance {
	return protocol.Instance{
		ID: inst.id, Status: inst.status, Ballot: inst.ballot, VBallot: inst.vballot,
		Seq: inst.seq, Deps: e.list(inst), Cmds: inst.cmds,
	}
}

func (e *Engine) save(inst *instance) {
	e.persist = append(e.persist, protocol.Record{Type: protocol.RecordInstance, Inst: e.snapshot(inst)})
}

func (e *Engine) send(m protocol.Message) {
	m.From = e.self
	e.msgs = append(e.msgs, m)
}

func (e *Engine) emit(inst *instance) {
	if inst.emitted {
		return
	}
	inst.emitted = true
	e.committed = append(e.committed, protocol.Instance{
		ID: inst.id, Status: protocol.StatusCommitted, Seq: inst.seq, Deps: e.list(inst), Cmds: inst.cmds,
	})
}

// ---- restart -------------------------------------------------------------------------

func (e *Engine) restore(recs []protocol.Record) {
	// The last truncation's RecordSnapshot says what executed here; instances it covers
	// stay in memory (committed, not re-emitted) only if records for them follow, to
	// answer peers. Below the lowest such record everything is forgotten, and blind:
	// the per-key summaries of forgotten instances did not survive (compact.go).
	minNum := make([]uint64, e.n)
	for i := range recs {
		rec := &recs[i]
		switch rec.Type {
		case protocol.RecordSnapshot:
			for _, d := range rec.Inst.Deps {
				if r := e.ri(d.Replica); r >= 0 {
					e.cf[r] = max(e.cf[r], d.Num)
				}
			}
		case protocol.RecordInstance:
			if r := e.ri(rec.Inst.ID.Replica); r >= 0 && rec.Inst.ID.Num > 0 && (minNum[r] == 0 || rec.Inst.ID.Num < minNum[r]) {
				minNum[r] = rec.Inst.ID.Num
			}
		}
	}
	for r := range e.rows {
		b := e.cf[r]
		if minNum[r] > 0 && minNum[r]-1 < b {
			b = minNum[r] - 1
		}
		e.base[r], e.blind[r] = b, b
		e.anyBlind = e.anyBlind || b > 0
	}
	e.restoring = true
	defer func() { e.restoring = false }()
	for i := range recs {
		rec := &recs[i]
		if rec.Type != protocol.RecordInstance {
			continue
		}
		inst := e.get(rec.Inst.ID, true)
		if inst == nil {
			continue
		}
		inst.status = rec.Inst.Status
		inst.ballot = rec.Inst.Ballot
		inst.vballot = rec.Inst.VBallot
		inst.seq = rec.Inst.Seq
		inst.cmds = rec.Inst.Cmds
		if rec.Inst.Deps != nil || inst.status >= protocol.StatusPreAccepted {
			inst.deps = e.depsFrom(inst.deps, rec.Inst.Deps)
		}
		inst.depsList = nil
	}
	for r := range e.rows {
		for i, inst := range e.rows[r] {
			if inst == nil {
				continue
			}
			if inst.id.Num <= e.cf[r] {
				if inst.status < protocol.StatusCommitted {
					e.rows[r][i] = nil // cannot happen: executed means committed
					continue
				}
				// Executed before the crash and covered by the snapshot: kept for peers,
				// never re-emitted.
				inst.status = protocol.StatusCommitted
				inst.emitted = true
				e.index(inst)
				continue
			}
			if inst.status >= protocol.StatusPreAccepted {
				e.index(inst)
			}
			if r == e.me {
				e.nextNum = max(e.nextNum, inst.id.Num+1)
			}
			switch {
			case inst.status >= protocol.StatusCommitted:
				inst.status = protocol.StatusCommitted
				e.restored = append(e.restored, inst)
			case inst.status >= protocol.StatusPreAccepted || !inst.ballot.IsZero():
				e.watchInst(inst)
				if r == e.me && inst.status >= protocol.StatusPreAccepted {
					// Our coordinator state died with the crash: recover our own
					// instances at the first tick instead of waiting for a timeout.
					inst.mine = true
					inst.orig = inst.cmds
					e.inflight++
					inst.touched = -int64(e.cfg.RecoveryTicks) - inst.jitter
				}
			}
		}
	}
	// Numbers up to the frontier were used even if no record of them is left.
	e.nextNum = max(e.nextNum, e.cf[e.me]+1)
}

// ---- proposals -----------------------------------------------------------------------

func (e *Engine) flushProposals() {
	for len(e.pending) > 0 && e.inflight < e.cfg.MaxInFlight {
		k := min(len(e.pending), e.cfg.MaxBatch)
		cmds := e.copyCmds(e.pending[:k])
		e.pending = shift(e.pending, k)
		e.startInstance(cmds)
	}
}
