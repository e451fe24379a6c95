package epaxos

import (
	"github.com/parliament-lab/parliament/protocol"
)

// Chunked allocation of per-instance memory. An instance costs a struct, its deps, their
// wire form, and (at its leader) a copy of its commands; allocating each separately made
// the garbage collector the largest CPU consumer of the engine-alone benchmark. Here
// they are carved from chunks: one allocation serves many instances, and a chunk is
// freed once every instance carved from it is forgotten (Compact forgets in instance
// order, so chunks die in order). Every slice handed out has its capacity cut to its
// length, so a holder that appends gets a copy instead of overwriting a neighbour;
// slices handed out are never written again (depsList, cmds) or only by the instance
// that owns them (deps).

const (
	slabInstances = 256  // instance structs per chunk
	slabDeps      = 4096 // uint64 / InstanceID entries per chunk
	slabCmds      = 4096 // commands per chunk
)

type slab struct {
	insts []instance
	deps  []uint64
	ids   []protocol.InstanceID
	cmds  []protocol.Command
	refs  []*keyState
}

func (e *Engine) newInstance(id protocol.InstanceID) *instance {
	if len(e.slab.insts) == 0 {
		e.slab.insts = make([]instance, slabInstances)
	}
	inst := &e.slab.insts[0]
	e.slab.insts = e.slab.insts[1:]
	inst.id, inst.touched = id, e.now
	return inst
}

// newDeps returns a zeroed per-replica deps vector.
func (e *Engine) newDeps() []uint64 {
	n := e.n
	if len(e.slab.deps) < n {
		e.slab.deps = make([]uint64, max(slabDeps, n))
	}
	d := e.slab.deps[:n:n]
	e.slab.deps = e.slab.deps[n:]
	return d
}

// newIDs returns an empty InstanceID slice with room for exactly k entries.
func (e *Engine) newIDs(k int) []protocol.InstanceID {
	if k == 0 {
		return []protocol.InstanceID{}
	}
	if len(e.slab.ids) < k {
		e.slab.ids = make([]protocol.InstanceID, max(slabDeps, k))
	}
	l := e.slab.ids[:0:k]
	e.slab.ids = e.slab.ids[k:]
	return l
}

// copyCmds returns a copy of cmds (the slice only: the byte slices inside are shared,
// read-only, as protocol.Command allows).
func (e *Engine) copyCmds(cmds []protocol.Command) []protocol.Command {
	k := len(cmds)
	if k > slabCmds/4 {
		out := make([]protocol.Command, k)
		copy(out, cmds)
		return out
	}
	if len(e.slab.cmds) < k {
		e.slab.cmds = make([]protocol.Command, slabCmds)
	}
	out := e.slab.cmds[:k:k]
	e.slab.cmds = e.slab.cmds[k:]
	copy(out, cmds)
	return out
}

// newKeyRefs returns k nil key-state references.
func (e *Engine) newKeyRefs(k int) []*keyState {
	if k > slabCmds/4 {
		return make([]*keyState, k)
	}
	if len(e.slab.refs) < k {
		e.slab.refs = make([]*keyState, slabCmds)
	}
	out := e.slab.refs[:k:k]
	e.slab.refs = e.slab.refs[k:]
	return out
}
