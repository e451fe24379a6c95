package executor

import (
	"cmp"
	"slices"

	"github.com/parliament-lab/parliament/protocol"
)

// blockSet groups the vertices found blocked, directly or through other blocked vertices,
// on one missing instance, its root. A vertex in a set reaches the root, so it cannot
// execute before the root does; while the root stays uncommitted the vertex is not looked
// at again, and the traversal of anything that reaches it stops there.
//
// When the root is committed the set turns stale (its members' verdict may change) and is
// resolved as soon as the root instance itself is resolved by a traversal:
//   - the root executed: every member is queued for re-examination;
//   - the root is blocked on another missing instance M: every member now also waits on M,
//     so the set is merged into M's set without looking at the members (union by size, so
//     a vertex moves O(log n) times). This is what keeps a long chain that arrives
//     backwards linear instead of quadratic.
//
// Members whose set pointer no longer names the set (re-examined, executed, recycled) are
// stale entries and skipped.
type blockSet struct {
	root    protocol.InstanceID
	stale   bool
	members []*vertex
}

func (e *Executor) setFor(root protocol.InstanceID) *blockSet {
	s := e.sets[root]
	if s == nil {
		s = &blockSet{root: root}
		e.sets[root] = s
	}
	return s
}

// numEdges returns the number of outgoing edges of v.
func numEdges(v *vertex) int {
	if v.isPrefix {
		return 2
	}
	return len(v.n.deps)
}

// edge returns the i-th successor of v: a pending vertex, or (nil, missing instance), or
// (nil, zero ID) when the edge is satisfied (everything it stands for is executed).
func (e *Executor) edge(v *vertex, i int) (*vertex, protocol.InstanceID) {
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
	v.set = nil // any old verdict is being recomputed
	e.stack = append(e.stack, v)
	e.frames = append(e.frames, frame{v: v})
	e.stats.Visits++
}

func block(v *vertex, root protocol.InstanceID) {
	if !v.blocked {
		v.blocked = true
		v.blocker = root
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
			switch {
			case w == nil:
				if missing.Num != 0 {
					block(v, missing)
				}
			case w.epoch == e.epoch:
				if w.onStack {
					v.low = min(v.low, w.index)
				} else {
					// Resolved earlier in this Execute and still pending: it is blocked.
					block(v, w.blocker)
				}
			case w.set != nil && !w.set.stale:
				block(v, w.set.root) // blocked on an instance that is still missing
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
			if v.blocked {
				block(p, v.blocker)
			}
		}
	}
}

// popComponent pops the component whose Tarjan root is v and executes it, or records it
// as blocked.
func (e *Executor) popComponent(v *vertex) {
	i := len(e.stack) - 1
	for e.stack[i] != v {
		i--
	}
	members := e.stack[i:]
	var root protocol.InstanceID
	blocked := false
	for _, m := range members {
		m.onStack = false
		if m.blocked && !blocked {
			blocked, root = true, m.blocker
		}
	}
	if blocked {
		s := e.setFor(root)
		for _, m := range members {
			m.blocked, m.blocker, m.set = true, root, s
			s.members = append(s.members, m)
		}
		for _, m := range members {
			if !m.isPrefix {
				if old := e.sets[m.n.inst.ID]; old != nil {
					// m was missing, is now committed, and turns out blocked on root:
					// whatever waited on m waits on root.
					e.merge(old, e.sets[root])
				}
			}
		}
	} else {
		e.comp = e.comp[:0]
		for _, m := range members {
			if !m.isPrefix {
				e.comp = append(e.comp, m.n)
			}
		}
		if len(e.comp) > 1 {
			// Inside a component the order is (Seq, Replica, Num): agreed attributes only,
			// so every replica picks the same order (EPaxos section 4.3.2).
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
}

func (e *Executor) executeNode(n *node) {
	n.live = false
	n.v[0].set, n.v[1].set = nil, nil
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
		// Whatever waited on this instance may run now.
		delete(e.sets, id)
		for _, m := range s.members {
			if m.set == s {
				m.set = nil
				e.work = append(e.work, m)
			}
		}
	}
	if e.apply != nil {
		e.inApply = true
		e.apply(&n.inst)
		e.inApply = false
	}
}

// merge moves the members of from (whose root was just found blocked) into into, whose
// root is missing, and forgets from. The larger member list is kept in place.
func (e *Executor) merge(from, into *blockSet) {
	delete(e.sets, from.root)
	if len(from.members) > len(into.members) {
		// Reuse from's (larger) list: move into's members over and let from take into's
		// place as the set of into.root.
		for _, m := range into.members {
			if m.set == into {
				m.set = from
				from.members = append(from.members, m)
			}
		}
		from.root, from.stale = into.root, false
		e.sets[into.root] = from
		clear(into.members)
		into.members = nil
		return
	}
	for _, m := range from.members {
		if m.set == from {
			m.set = into
			into.members = append(into.members, m)
		}
	}
	clear(from.members)
	from.members = nil
}
