package executor

import (
	"cmp"
	"slices"

	"github.com/parliament-lab/parliament/protocol"
)

// Blocked components and why they wait.
//
// A strongly connected component that reaches a missing (uncommitted) instance cannot
// execute. When Tarjan pops such a component it records it as a comp (condensed: see the
// comp type), with every missing instance its members met (directly, or as the root of a
// blocked component they reach): its blockers. While any blocker stays missing the comp
// stays blocked, whatever else happens, so it is not looked at again and a traversal that
// reaches one of its vertices stops there. This is what keeps execution linear when
// instances arrive out of order: a new arrival is checked against the memo, not re-walked.
//
// A comp waits in the blockSet of one of its blockers, the set's root. When the root is
// committed the set turns stale:
//   - at the start of the next Execute, each comp in it moves to the set of another of its
//     blockers that is still missing (reroot); a cursor makes this linear per comp;
//   - the comps left (the root was their only blocker) are resolved with the root itself:
//     if the root executes they are queued for re-examination, each as one super-vertex;
//     if the root turns out blocked on M, they wait on M too, and the set is merged into
//     M's (union by size); if the root closes a cycle with them, the traversal from the
//     root enters them as super-vertices and they merge into one comp with it.
//
// Stale entries (a comp whose set moved on, or that was merged or executed) are skipped.
type blockSet struct {
	root  protocol.InstanceID
	stale bool
	// comps wait on root as blockers[cursor]; they may have other blockers left. final
	// holds comps with no blocker left to try (they reach root through a committed
	// instance that was blocked on it): reroot never scans them again, so a long chain
	// that arrives backwards stays linear.
	comps []*comp
	final []*comp
	// parent is set when this set was merged into another: a comp belongs to
	// find(comp.set), so a merge re-points nothing (union-find with path compression).
	parent *blockSet
}

// find returns the set s was merged into (or s), compressing the path.
func (s *blockSet) find() *blockSet {
	if s == nil || s.parent == nil {
		return s
	}
	root := s.parent
	for root.parent != nil {
		root = root.parent
	}
	for s.parent != root && s.parent != nil {
		s, s.parent = s.parent, root
	}
	return root
}

// extraBlockers is how many blockers of a component met by a traversal are copied into the
// component being built: enough alternatives to reroot, bounded so that copying stays O(1).
const extraBlockers = 8

// comp is a blocked strongly connected component, condensed: members are its instance
// and prefix vertices, and (for a component of several vertices) x holds its super-vertex
// sv, the components merged into it (children: their members are its members too) and its
// outgoing edges (out: each leaving some member, to a vertex outside the component or to a
// missing instance, deduplicated by target). A traversal that meets a member of a
// multi-vertex component walks it as the one vertex sv, whose edges are out; a
// single-vertex component is walked as its vertex (its edges are the component's).
//
// Components are exact: a component of the committed graph stays strongly connected as
// more instances commit (edges are never removed while their source is pending: an edge
// whose target executed stood for instances that all executed), so it can only merge
// into a larger component. When a traversal finds a cycle through super-vertices (a
// missing instance committed and closes a cycle with the components waiting on it),
// recordBlocked merges them: one of them adopts the others as children (union-find, no
// member is moved) and its out edges are recomputed from theirs. So a component that
// keeps growing while its newest members are missing costs its out edges per growth step,
// not its size.
type comp struct {
	set      *blockSet
	parent   *comp      // set when merged into a larger component
	x        *compMulti // nil for a single-vertex component
	members  []*vertex
	blockers []protocol.InstanceID // sorted, distinct; missing when recorded
	cursor   int                   // blockers before cursor are known to be committed
	dead     bool                  // executed

	one [1]*vertex             // backing array of members for a single vertex
	blk [1]protocol.InstanceID // backing array of blockers for a single blocker
}

// compMulti is what a component of several vertices has on top of a single one.
type compMulti struct {
	sv       vertex
	children []*comp
	out      []edgeRef
}

// edgeRef is an out edge of a component by what it stands for: every instance of row
// id.Replica numbered 1..id.Num (a dependency, or a prefix vertex's edge to the prefix
// below it), or with single just instance id (a prefix vertex's edge to its own
// instance). It is resolved again whenever it is followed: which vertex stands for it
// changes as instances commit and execute, what it stands for does not. It does not name
// the member it leaves, because a prefix vertex can die while its component waits: the
// prefix vertex P(R,k) is part of instance k's node, and instance k need not be in the
// component of P(R,k) (it may execute first); the edges into P(R,k) then resolve past it,
// and its own edge to the prefix below stays recorded here.
type edgeRef struct {
	id     protocol.InstanceID
	single bool
}

// refOf returns edge i of the instance or prefix vertex v.
func refOf(v *vertex, i int) edgeRef {
	id := v.n.inst.ID
	switch {
	case !v.isPrefix:
		return edgeRef{id: v.n.deps[i]}
	case i == 0:
		return edgeRef{id: id, single: true}
	}
	return edgeRef{id: protocol.InstanceID{Replica: id.Replica, Num: id.Num - 1}}
}

// follow resolves r like edge resolves the edge it was made from.
func (e *Executor) follow(r edgeRef) (*vertex, protocol.InstanceID) {
	rw := e.row(r.id.Replica)
	if rw == nil || r.id.Num == 0 {
		return nil, protocol.InstanceID{}
	}
	if r.single {
		if n := rw.pending[r.id.Num]; n != nil {
			return &n.v[0], protocol.InstanceID{}
		}
		return nil, protocol.InstanceID{} // executed
	}
	return e.resolve(rw, r.id.Num)
}

// missRef is an edge that led to the missing instance id when the component was recorded.
type missRef struct {
	id  protocol.InstanceID
	ref edgeRef
}

// newComp returns a component of the single vertex v, or (v nil) an empty component of
// several vertices.
func newComp(v *vertex) *comp {
	c := &comp{}
	if v != nil {
		c.members = append(c.one[:0], v)
	} else {
		c.x = &compMulti{}
		c.x.sv.comp = c
	}
	return c
}

// find returns the component c was merged into (or c), compressing the path.
func (c *comp) find() *comp {
	r := c
	for r.parent != nil {
		r = r.parent
	}
	for c != r {
		c, c.parent = c.parent, r
	}
	return r
}

// unitOf returns the vertex a traversal works with for c: its super-vertex, or its only
// vertex.
func (c *comp) unitOf() *vertex {
	if c.x != nil {
		return &c.x.sv
	}
	return c.members[0]
}

// unit returns the vertex a traversal works with for the instance or prefix vertex w: w,
// or the super-vertex of the multi-vertex component w was condensed into.
func unit(w *vertex) *vertex {
	if w.comp == nil {
		return w
	}
	return w.comp.find().unitOf()
}

// memoBlocked reports whether the unit v is known to be blocked on an instance still
// missing.
func (v *vertex) memoBlocked() bool {
	if v.comp == nil {
		return false
	}
	s := v.comp.find().set.find()
	return s != nil && !s.stale
}

func (e *Executor) setFor(root protocol.InstanceID) *blockSet {
	s := e.sets[root]
	if s == nil {
		s = &blockSet{root: root}
		e.sets[root] = s
	}
	return s
}

// missing reports whether id is neither committed nor executed.
func (e *Executor) missing(id protocol.InstanceID) bool {
	r := e.row(id.Replica)
	if r == nil {
		return true
	}
	if r.executed(id.Num) {
		return false
	}
	_, ok := r.pending[id.Num]
	return !ok
}

// reroot moves the comps of stale sets to the set of another blocker still missing.
func (e *Executor) reroot() {
	for _, s := range e.stale {
		if e.sets[s.root] != s {
			continue // already resolved
		}
		kept := s.comps[:0]
		for _, c := range s.comps {
			if c.set.find() != s {
				continue
			}
			for c.cursor < len(c.blockers) && !e.missing(c.blockers[c.cursor]) {
				c.cursor++
			}
			if c.cursor < len(c.blockers) {
				ns := e.setFor(c.blockers[c.cursor])
				c.set = ns
				ns.comps = append(ns.comps, c)
				continue
			}
			s.final = append(s.final, c)
		}
		clear(s.comps[len(kept):])
		s.comps = kept
	}
	clear(e.stale)
	e.stale = e.stale[:0]
}

// numEdges returns the number of outgoing edges of v.
func numEdges(v *vertex) int {
	switch {
	case v.n == nil:
		return len(v.comp.x.out)
	case v.isPrefix:
		return 2
	}
	return len(v.n.deps)
}

// edge returns the i-th successor of v: a pending instance or prefix vertex, or (nil,
// missing instance), or (nil, zero ID) when the edge is satisfied (everything it stands
// for is executed).
func (e *Executor) edge(v *vertex, i int) (*vertex, protocol.InstanceID) {
	if v.n == nil {
		return e.follow(v.comp.x.out[i])
	}
	if v.isPrefix {
		if i == 0 {
			if v.n.live {
				return &v.n.v[0], protocol.InstanceID{}
			}
			return nil, protocol.InstanceID{}
		}
		return e.resolve(v.n.row, v.n.inst.ID.Num-1)
	}
	d := v.n.deps[i]
	r := e.row(d.Replica) // created by Add
	return e.resolve(r, d.Num)
}

// resolve maps the prefix dependency (r, num) to the vertex standing for it.
func (e *Executor) resolve(r *row, num uint64) (*vertex, protocol.InstanceID) {
	k := r.highestLive(num)
	if k == 0 {
		return nil, protocol.InstanceID{}
	}
	n := r.pending[k]
	if n == nil {
		return nil, protocol.InstanceID{Replica: r.id, Num: k}
	}
	// P(r, k) is just instance k when nothing below k is left to wait for.
	if r.highestLive(k-1) == 0 {
		return &n.v[0], protocol.InstanceID{}
	}
	return &n.v[1], protocol.InstanceID{}
}

func (e *Executor) visit(v *vertex) {
	v.epoch = e.epoch
	v.index = e.index
	v.low = e.index
	e.index++
	v.onStack = true
	v.blocked = false
	v.bstart = int32(len(e.blockers))
	e.stack = append(e.stack, v)
	e.frames = append(e.frames, frame{v: v})
	e.stats.Visits++
}

// block records that v (on the stack) reaches the missing instance root.
func (e *Executor) block(v *vertex, root protocol.InstanceID) {
	if !v.blocked {
		v.blocked = true
		v.blocker = root
	}
	// (v is the vertex being scanned: blockers from v.bstart on belong to v's component)
	if k := len(e.blockers); k == int(v.bstart) || e.blockers[k-1] != root {
		e.blockers = append(e.blockers, root)
	}
}

// strongconnect is Tarjan's algorithm from root, with an explicit stack. A component is
// resolved when it is popped: Tarjan pops components in reverse topological order, so
// everything a component reaches outside itself is resolved by then (executed, or blocked).
func (e *Executor) strongconnect(root *vertex) {
	e.visit(root)
	for len(e.frames) > 0 {
		f := &e.frames[len(e.frames)-1]
		v := f.v
		descended := false
		for f.edge < numEdges(v) {
			w, missing := e.edge(v, f.edge)
			f.edge++
			e.stats.Edges++
			if w != nil {
				w = unit(w)
			}
			switch {
			case w == nil:
				if missing.Num != 0 {
					e.block(v, missing)
				}
			case w.epoch == e.epoch:
				if w.onStack {
					v.low = min(v.low, w.index)
				} else {
					// Resolved earlier in this Execute and still pending: it is blocked.
					e.block(v, w.blocker)
				}
			case w.memoBlocked():
				// Blocked on an instance that is still missing. Also note a few of the
				// other instances w's component waits on, so that when the root is
				// committed v's component can wait on one of those (reroot) instead of
				// being walked again.
				c := w.comp.find()
				e.block(v, c.set.find().root)
				for k := c.cursor; k < len(c.blockers) && k < c.cursor+extraBlockers; k++ {
					e.blockers = append(e.blockers, c.blockers[k])
				}
			default:
				e.visit(w)
				descended = true
			}
			if descended {
				break
			}
		}
		if descended {
			continue
		}
		if v.low == v.index {
			e.popComponent(v)
		}
		e.frames = e.frames[:len(e.frames)-1]
		if k := len(e.frames); k > 0 {
			p := e.frames[k-1].v
			p.low = min(p.low, v.low)
			if v.blocked && !p.blocked {
				// v's component was popped (blocked) or v is in p's component: either way p
				// reaches v.blocker; its blockers are already on the blockers stack unless
				// v's component was popped, in which case block records the root.
				e.block(p, v.blocker)
			}
		}
	}
}

// popComponent pops the component whose Tarjan root is v and executes it, or records it
// as blocked. Its members are units: instance and prefix vertices, and super-vertices of
// components recorded earlier that turn out to be part of it.
func (e *Executor) popComponent(v *vertex) {
	i := len(e.stack) - 1
	for e.stack[i] != v {
		i--
	}
	members := e.stack[i:]
	blocked := false
	for _, m := range members {
		if m.blocked {
			blocked = true
			break
		}
	}
	if blocked {
		e.recordBlocked(v, members)
	} else {
		e.comp = e.comp[:0]
		for _, m := range members {
			m.onStack = false
			switch {
			case m.n == nil:
				e.comp = e.gather(e.comp, m.comp)
			case m.comp != nil:
				e.comp = e.gather(e.comp, m.comp.find())
			case !m.isPrefix:
				e.comp = append(e.comp, m.n)
			}
		}
		if len(e.comp) > 1 {
			// Inside a component the order is (Seq, Replica, Num): agreed attributes only,
			// so every replica picks the same order (EPaxos section 4.3.2). It does not
			// depend on how the component was assembled (condensed parts or not).
			slices.SortFunc(e.comp, func(a, b *node) int {
				if c := cmp.Compare(a.inst.Seq, b.inst.Seq); c != 0 {
					return c
				}
				if c := cmp.Compare(a.inst.ID.Replica, b.inst.ID.Replica); c != 0 {
					return c
				}
				return cmp.Compare(a.inst.ID.Num, b.inst.ID.Num)
			})
		}
		if len(e.comp) > 0 {
			e.stats.Components++
			e.stats.MaxComp = max(e.stats.MaxComp, len(e.comp))
		}
		for _, n := range e.comp {
			e.executeNode(n)
		}
		clear(e.comp)
	}
	clear(members)
	e.stack = e.stack[:i]
	e.blockers = e.blockers[:v.bstart]
}

// gather appends the instances of component c and of the components merged into it, and
// marks them all executed-to-be (dead).
func (e *Executor) gather(dst []*node, c *comp) []*node {
	todo := append(e.todo[:0], c)
	for len(todo) > 0 {
		c := todo[len(todo)-1]
		todo[len(todo)-1] = nil
		todo = todo[:len(todo)-1]
		c.dead, c.set = true, nil
		for _, m := range c.members {
			if !m.isPrefix {
				dst = append(dst, m.n)
			}
		}
		if c.x != nil {
			todo = append(todo, c.x.children...)
		}
	}
	e.todo = todo
	return dst
}

// recordBlocked records the popped component members (Tarjan root v), which reaches a
// missing instance, as one blocked comp: the component of its only unit again, or the
// first multi-vertex component among its units adopting the others, or a new comp. Its
// out edges are computed while the members are still on the stack (an edge to a unit on
// the stack is internal: Tarjan guarantees that every unit on the stack that a member
// reaches is in the component).
func (e *Executor) recordBlocked(v *vertex, members []*vertex) {
	var c *comp
	if len(members) == 1 {
		m := members[0]
		switch {
		case m.comp != nil:
			c = m.comp.find() // m's own component, examined again
		default:
			c = newComp(m)
			m.comp = c
		}
		if c.x != nil {
			// Prune the out edges that became satisfied (as cheap as walking them was).
			e.collectOut(members)
			c.x.out = append(c.x.out[:0], e.out...)
			clear(e.out)
			e.out = e.out[:0]
		}
		m.onStack = false
	} else {
		for _, m := range members {
			if m.n == nil {
				c = m.comp
				break
			}
		}
		if c == nil {
			c = newComp(nil)
		}
		e.collectOut(members)
		c.x.out = append(c.x.out[:0], e.out...)
		clear(e.out)
		e.out = e.out[:0]
		for _, m := range members {
			m.onStack = false
			switch {
			case m.n != nil:
				if o := m.comp; o != nil {
					// m's single-vertex component is part of this one.
					o.parent, o.set, o.blockers = c, nil, nil
				}
				m.comp = c
				c.members = append(c.members, m)
			case m.comp != c:
				// Another multi-vertex component that turned out to be part of this one.
				p := m.comp
				p.parent, p.set, p.blockers, p.x.out = c, nil, nil, nil
				c.x.children = append(c.x.children, p)
			}
		}
	}

	bl := e.blockers[v.bstart:]
	slices.SortFunc(bl, cmpInstanceID)
	bl = slices.Compact(bl)
	if c.blockers == nil {
		c.blockers = c.blk[:0]
	}
	c.blockers = append(c.blockers[:0], bl...)
	c.cursor = 0
	// Blockers copied from other components may have been committed since.
	for c.cursor < len(c.blockers) && !e.missing(c.blockers[c.cursor]) {
		c.cursor++
	}
	if c.cursor == len(c.blockers) {
		panic("executor: blocked component without a missing blocker")
	}
	root := c.blockers[c.cursor]
	s := e.setFor(root)
	c.set = s
	s.comps = append(s.comps, c)
	u := c.unitOf()
	u.epoch, u.onStack, u.blocked, u.blocker = e.epoch, false, true, root
	for _, m := range members {
		if m.n != nil && !m.isPrefix {
			if old := e.sets[m.n.inst.ID]; old != nil {
				// m was missing, is now committed, and turns out blocked on root:
				// whatever waited only on m waits on root.
				e.merge(old, e.sets[root])
			}
		}
	}
}

// collectOut sets e.out to the edges leaving the component members (on the stack), one per
// distinct target: edges that reach the same thing for good are redundant.
//   - Edges to a missing instance: they all stand for the same prefix of its row (the
//     rest of what they named is executed).
//   - Edges into one blocked component D: while D is pending, each of them reaches all of
//     D, and once D executed they are all satisfied. An edge to an instance of D keeps
//     resolving into D (the instance executes with D). An edge to a prefix vertex P(R,k)
//     of D whose instance k is not in D also does: P reaches the rest of D only through
//     the prefix below it, so that prefix is in D, and when k executes the edge resolves
//     to it.
//
// Satisfied edges stay satisfied and are dropped. Marks live in vertex.low (see vertex).
func (e *Executor) collectOut(members []*vertex) {
	e.mark++
	add := func(r edgeRef) {
		w, missing := e.follow(r)
		if w == nil {
			if missing.Num != 0 {
				e.miss = append(e.miss, missRef{missing, r})
			}
			return // satisfied for good
		}
		w = unit(w)
		if w.onStack || w.low == -e.mark {
			return // internal, or a target already listed
		}
		w.low = -e.mark
		e.out = append(e.out, r)
	}
	for _, m := range members {
		if m.n == nil {
			for _, r := range m.comp.x.out {
				add(r)
			}
			continue
		}
		for k := range numEdges(m) {
			add(refOf(m, k))
		}
	}
	if len(e.miss) > 0 {
		slices.SortFunc(e.miss, func(a, b missRef) int { return cmpInstanceID(a.id, b.id) })
		for k, x := range e.miss {
			if k == 0 || x.id != e.miss[k-1].id {
				e.out = append(e.out, x.ref)
			}
		}
		clear(e.miss)
		e.miss = e.miss[:0]
	}
}

func cmpInstanceID(a, b protocol.InstanceID) int {
	if c := cmp.Compare(a.Replica, b.Replica); c != 0 {
		return c
	}
	return cmp.Compare(a.Num, b.Num)
}

func (e *Executor) executeNode(n *node) {
	n.live = false
	n.v[0].comp, n.v[1].comp = nil, nil
	id := n.inst.ID
	delete(n.row.pending, id.Num)
	n.row.markExecuted(id.Num)
	e.pending--
	e.stats.Executed++
	wait := e.adds - n.addedAt
	e.stats.WaitAdds += wait
	e.stats.MaxWaitAdds = max(e.stats.MaxWaitAdds, wait)
	e.freed = append(e.freed, n)
	if s := e.sets[id]; s != nil {
		// Whatever waited on this instance may run now: re-examine each component as a
		// unit (its super-vertex), without walking its members.
		delete(e.sets, id)
		for _, list := range [2][]*comp{s.comps, s.final} {
			for _, c := range list {
				if c.set.find() != s {
					continue
				}
				c.set = nil
				e.work = append(e.work, c.unitOf())
			}
		}
	}
	if e.apply != nil {
		e.inApply = true
		e.apply(&n.inst)
		e.inApply = false
	}
}

// merge records that everything waiting in from (whose root was just found blocked on
// into's root, which is missing) waits on into's root, and forgets from. Nothing is
// re-pointed: from's parent becomes into. The lists are concatenated appending the shorter
// to the longer, so an entry is copied O(log n) times overall.
func (e *Executor) merge(from, into *blockSet) {
	delete(e.sets, from.root)
	from.parent = into
	moved := append(from.final, from.comps...) // comps reroot could not move (normally none)
	if len(moved) > len(into.final) {
		moved, into.final = into.final, moved
	}
	into.final = append(into.final, moved...)
	from.comps, from.final = nil, nil
}
