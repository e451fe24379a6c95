// Package executor executes committed instances in dependency order. It is the execution
// algorithm of EPaxos (Moraru et al., SOSP'13, section 4.3.2 and the tech report's
// "Execution algorithm"), shared by both engines: Multi-Paxos hands in slot s with the
// single dependency (0, s-1), which turns the graph into a chain.
//
// An instance executes once every instance in its dependency closure is committed. The
// strongly connected components of the committed graph execute in reverse topological
// order (dependencies first), found by an iterative Tarjan; inside a component instances
// execute in order of (Seq, Replica, Num). Every replica therefore applies two conflicting
// commands in the same order: EPaxos guarantees that one of them depends on the other, and
// the graph (deps and seq) is agreed.
//
// The executor is deterministic and passive: no goroutines, no clock, no blocking. When a
// dependency is not committed, what waits on it stays pending and Blocked names the missing
// instance so that the engine can recover it. See docs/executor.md for the algorithm.
package executor

import (
	"fmt"
	"slices"

	"github.com/parliament-lab/parliament/protocol"
)

// Config configures an Executor.
type Config struct {
	// Apply is called once per executed instance, in execution order. inst and its Deps
	// belong to the executor and are valid only during the call; inst.Cmds is the slice
	// handed to Add (not copied). Apply must not call back into the Executor.
	// nil means executed instances are only counted.
	Apply func(inst *protocol.Instance)
}

// Stats are counters for benchmarks and metrics.
type Stats struct {
	Added      uint64 // distinct instances added
	Duplicates uint64 // Add calls ignored because the instance was already known
	Executed   uint64 // instances executed
	Components uint64 // strongly connected components executed
	MaxComp    int    // largest component executed (instances)
	// Visits counts vertices the traversal entered: the work done. It stays proportional to
	// the graph size when instances arrive out of order (no re-traversal per Execute).
	Visits uint64
	// Edges counts edges the traversal followed (a blocked component entered as one
	// super-vertex contributes its recorded outgoing edges). With Visits it measures the
	// work: both stay proportional to the graph size, also for a component that keeps
	// growing while its newest members are missing.
	Edges uint64
	// WaitAdds sums, over executed instances, the number of Add calls (of new instances)
	// made after the instance was added and before it executed: a clockless measure of the
	// commit-to-execute delay. MaxWaitAdds is the largest single value.
	WaitAdds    uint64
	MaxWaitAdds uint64
}

// Executor executes committed instances in dependency order. It is not safe for concurrent
// use.
type Executor struct {
	apply func(inst *protocol.Instance)

	small [64]*row // rows by ReplicaID for small IDs (the common case)
	big   map[protocol.ReplicaID]*row
	rows  []*row // every row, sorted by ID (for Blocked)

	pending int
	adds    uint64 // distinct Add calls so far

	// sets maps a missing (not committed) instance to the blocked components known to
	// wait on it; stale lists the sets whose root was committed since the last Execute.
	sets  map[protocol.InstanceID]*blockSet
	stale []*blockSet

	work  []*vertex // vertices to (re-)examine in the next Execute
	epoch uint64    // one per Execute: Tarjan marks are valid only within it
	index int       // next Tarjan index within the epoch

	stack    []*vertex             // Tarjan stack
	frames   []frame               // explicit DFS call stack
	blockers []protocol.InstanceID // missing instances met by the vertices on the stack
	comp     []*node               // scratch: the instances of the component being executed
	freed    []*node               // executed during this Execute; recycled at its end
	free     []*node               // recycled nodes

	out  []edgeRef // scratch: out edges of the component being recorded
	miss []missRef // scratch: its out edges to missing instances
	todo []*comp   // scratch: components being gathered for execution
	mark int       // generation of collectOut's marks (vertex.low = -mark)

	inApply bool
	stats   Stats
}

// node is one committed, not yet executed instance.
type node struct {
	inst    protocol.Instance
	deps    []protocol.InstanceID // owned copy of inst.Deps (inst.Deps points here)
	row     *row
	live    bool // false once executed (the node may then be recycled)
	addedAt uint64
	// v[0] is the instance itself; v[1] is the virtual "prefix" vertex P(row, num), which
	// stands for "every instance of this row numbered 1..num". A dependency (R, n) is an
	// edge to P(R, n'), where n' is the highest unexecuted number <= n, and P(R, k) has
	// edges to instance k and to P(R, k') for the next unexecuted k' < k. This keeps prefix
	// dependencies at O(1) edges each instead of one edge per instance of the prefix, and
	// preserves reachability (hence the components) among real instances.
	v [2]vertex
}

// vertex is a vertex of the traversal: an instance (n set, isPrefix false), its prefix
// vertex (isPrefix), or the super-vertex of a blocked component (n nil, comp its owner):
// a blocked component is condensed once and later traversals walk its recorded outgoing
// edges instead of its members (see tarjan.go).
type vertex struct {
	n     *node
	epoch uint64
	index int
	// low is Tarjan's low-link while the vertex is on the stack. Off the stack it is
	// scratch: collectOut marks a target it has listed with -Executor.mark (real low-links
	// are never negative, and visit resets low).
	low      int
	bstart   int32 // this epoch: len(Executor.blockers) when visited
	isPrefix bool
	onStack  bool
	blocked  bool                // this epoch: the vertex reaches a missing instance
	blocker  protocol.InstanceID // with blocked: a missing instance it reaches
	// comp: for an instance or prefix vertex, the blocked component it was condensed into
	// (follow comp.find for the current one); for a super-vertex, its component.
	comp *comp
}

type frame struct {
	v    *vertex
	edge int
}

// New returns an empty Executor.
func New(cfg Config) *Executor {
	return &Executor{
		apply: cfg.Apply,
		sets:  make(map[protocol.InstanceID]*blockSet),
	}
}

func (e *Executor) row(id protocol.ReplicaID) *row {
	if int(id) < len(e.small) {
		return e.small[id]
	}
	return e.big[id]
}

func (e *Executor) rowOrNew(id protocol.ReplicaID) *row {
	if r := e.row(id); r != nil {
		return r
	}
	r := newRow(id)
	if int(id) < len(e.small) {
		e.small[id] = r
	} else {
		if e.big == nil {
			e.big = make(map[protocol.ReplicaID]*row)
		}
		e.big[id] = r
	}
	i, _ := slices.BinarySearchFunc(e.rows, id, func(r *row, id protocol.ReplicaID) int {
		return int64cmp(int64(r.id), int64(id))
	})
	e.rows = slices.Insert(e.rows, i, r)
	return r
}

func int64cmp(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// Add records a committed instance. Instances may arrive in any order; an instance already
// added or executed is ignored. Adding the same instance again with different Seq, Deps or
// Cmds means agreement failed: Add panics naming the instance.
//
// The executor copies inst and inst.Deps but keeps inst.Cmds (and the byte slices inside)
// until the instance is executed: the caller must not modify them.
func (e *Executor) Add(inst protocol.Instance) {
	if e.inApply {
		panic("executor: Add called from Apply")
	}
	r := e.rowOrNew(inst.ID.Replica)
	if inst.ID.Num == 0 {
		panic(fmt.Sprintf("executor: instance %v: instance numbers start at 1", inst.ID))
	}
	if r.executed(inst.ID.Num) {
		e.stats.Duplicates++
		return
	}
	if old := r.pending[inst.ID.Num]; old != nil {
		if !sameContent(&old.inst, &inst) {
			panic(fmt.Sprintf("executor: instance %v added twice with different content (seq %d deps %v, then seq %d deps %v): agreement failed",
				inst.ID, old.inst.Seq, old.inst.Deps, inst.Seq, inst.Deps))
		}
		e.stats.Duplicates++
		return
	}

	n := e.newNode()
	n.deps = append(n.deps[:0], inst.Deps...)
	n.inst = inst
	n.inst.Deps = n.deps
	n.row = r
	n.live = true
	e.adds++
	n.addedAt = e.adds
	r.pending[inst.ID.Num] = n
	r.maxCommitted = max(r.maxCommitted, inst.ID.Num)
	for _, d := range n.deps {
		if d.Num > 0 {
			dr := e.rowOrNew(d.Replica)
			dr.needed = max(dr.needed, d.Num)
		}
	}
	e.pending++
	e.stats.Added++

	// Whatever waited on this instance while it was missing must be looked at again when
	// it is resolved (executed, or found blocked on something else): see resolveSet.
	if s := e.sets[inst.ID]; s != nil {
		s.stale = true
		e.stale = append(e.stale, s)
	}
	e.work = append(e.work, &n.v[0])
}

func (e *Executor) newNode() *node {
	var n *node
	if k := len(e.free); k > 0 {
		n = e.free[k-1]
		e.free = e.free[:k-1]
		deps := n.deps
		*n = node{deps: deps}
	} else {
		n = new(node)
	}
	n.v[0] = vertex{n: n}
	n.v[1] = vertex{n: n, isPrefix: true}
	return n
}

// sameContent compares what agreement decides: Seq, the dependency set and the commands.
func sameContent(a, b *protocol.Instance) bool {
	if a.Seq != b.Seq || len(a.Deps) != len(b.Deps) || len(a.Cmds) != len(b.Cmds) {
		return false
	}
	for _, d := range b.Deps { // as a set: an engine may list deps in another order
		if !slices.Contains(a.Deps, d) {
			return false
		}
	}
	for i := range a.Cmds {
		x, y := &a.Cmds[i], &b.Cmds[i]
		if x.ClientID != y.ClientID || x.Seq != y.Seq || x.Op != y.Op ||
			string(x.Key) != string(y.Key) || string(x.Value) != string(y.Value) || string(x.Old) != string(y.Old) {
			return false
		}
	}
	return true
}

// Execute executes every instance that has become executable and returns how many it
// executed. It never blocks: instances that wait on a missing instance stay pending.
func (e *Executor) Execute() int {
	if e.inApply {
		panic("executor: Execute called from Apply")
	}
	if len(e.work) == 0 {
		return 0
	}
	before := e.stats.Executed
	e.epoch++
	e.index = 0
	e.reroot()
	// work grows while it is processed (instances woken by an execution).
	for i := 0; i < len(e.work); i++ {
		v := e.work[i]
		e.work[i] = nil
		if v.n == nil { // a blocked component to re-examine
			c := v.comp.find()
			if c.dead {
				continue
			}
			v = &c.x.sv
		} else {
			if !v.n.live {
				continue
			}
			v = unit(v)
		}
		if v.epoch == e.epoch || v.memoBlocked() {
			continue // already examined now, or still validly blocked
		}
		e.strongconnect(v)
	}
	e.work = e.work[:0]
	for _, n := range e.freed {
		n.inst = protocol.Instance{}
		e.free = append(e.free, n)
	}
	clear(e.freed)
	e.freed = e.freed[:0]
	return int(e.stats.Executed - before)
}

// Blocked returns, sorted, the instances that are not committed although committed
// instances depend on them (prefix semantics: a dependency (R, n) needs R.1..R.n). The
// engine should recover them (EPaxos explicit prepare, Multi-Paxos catch-up).
func (e *Executor) Blocked() []protocol.InstanceID {
	var out []protocol.InstanceID
	for _, r := range e.rows {
		out = r.appendMissing(out)
	}
	return out
}

// Executed reports whether the instance has been executed.
func (e *Executor) Executed(id protocol.InstanceID) bool {
	r := e.row(id.Replica)
	return r != nil && r.executed(id.Num)
}

// ExecutedPrefix returns the highest n such that every instance r.1..r.n is executed.
func (e *Executor) ExecutedPrefix(r protocol.ReplicaID) uint64 {
	if rw := e.row(r); rw != nil {
		return rw.prefix
	}
	return 0
}

// Pending returns the number of instances added and not yet executed.
func (e *Executor) Pending() int { return e.pending }

// Stats returns the counters.
func (e *Executor) Stats() Stats { return e.stats }
