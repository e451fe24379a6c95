package executor

import (
	"sort"

	"github.com/parliament-lab/parliament/protocol"
)

// row is what the executor knows about one row of instances (one EPaxos command leader, or
// the single Multi-Paxos log, row 0).
//
// Executed instances are remembered compactly: every number up to prefix is executed, and
// above it the executed numbers are kept as sorted, disjoint, non-adjacent runs. Instances
// of a row usually execute nearly in order, so the runs stay few and the prefix advances;
// nothing else about an executed instance is kept.
type row struct {
	id     protocol.ReplicaID
	prefix uint64 // every instance numbered 1..prefix is executed
	// above holds the executed runs above prefix+1: sorted by lo, disjoint, never adjacent
	// to each other (they would be merged) and never starting at prefix+1 (the prefix would
	// absorb it). So for a run, lo-1 is a number that is not executed and is above prefix.
	above      []span
	aboveCount uint64 // total length of the runs in above

	pending map[uint64]*node // committed, not yet executed

	maxCommitted uint64 // highest number ever added (pending or executed)
	needed       uint64 // highest number any added instance depends on (prefix semantics)
}

type span struct{ lo, hi uint64 }

func newRow(id protocol.ReplicaID) *row {
	return &row{id: id, pending: make(map[uint64]*node)}
}

// executed reports whether instance num of this row is executed.
func (r *row) executed(num uint64) bool {
	if num <= r.prefix {
		return true
	}
	i := r.spanAbove(num)
	return i < len(r.above) && r.above[i].lo <= num
}

// spanAbove returns the index of the first run whose hi is >= num.
func (r *row) spanAbove(num uint64) int {
	a := r.above
	if len(a) == 0 || a[len(a)-1].hi < num {
		return len(a)
	}
	return sort.Search(len(a), func(i int) bool { return a[i].hi >= num })
}

// highestLive returns the highest number <= num that is not executed, or 0 when every
// instance 1..num is executed. It takes one binary search: the runs are never adjacent.
func (r *row) highestLive(num uint64) uint64 {
	if num <= r.prefix {
		return 0
	}
	i := r.spanAbove(num)
	if i < len(r.above) && r.above[i].lo <= num {
		num = r.above[i].lo - 1 // not executed and > prefix, by the invariant on above
	}
	return num
}

// markExecuted records that instance num (not yet executed, > prefix) has executed.
func (r *row) markExecuted(num uint64) {
	if num == r.prefix+1 {
		r.prefix = num
		if len(r.above) > 0 && r.above[0].lo == num+1 {
			r.prefix = r.above[0].hi
			r.aboveCount -= r.above[0].hi - r.above[0].lo + 1
			copy(r.above, r.above[1:])
			r.above = r.above[:len(r.above)-1]
		}
		return
	}
	r.aboveCount++
	i := r.spanAbove(num) // first run with hi >= num; num is not in it, so run.lo > num
	joinPrev := i > 0 && r.above[i-1].hi+1 == num
	joinNext := i < len(r.above) && r.above[i].lo == num+1
	switch {
	case joinPrev && joinNext:
		r.above[i-1].hi = r.above[i].hi
		r.above = append(r.above[:i], r.above[i+1:]...)
	case joinPrev:
		r.above[i-1].hi = num
	case joinNext:
		r.above[i].lo = num
	default:
		r.above = append(r.above, span{})
		copy(r.above[i+1:], r.above[i:])
		r.above[i] = span{num, num}
	}
}

// hasGaps reports whether some number in prefix+1..maxCommitted was never added, in O(1):
// every added number above the prefix is either pending or in a run.
func (r *row) hasGaps() bool {
	return uint64(len(r.pending))+r.aboveCount != r.maxCommitted-r.prefix
}

// appendMissing appends, in ascending order, the numbers 1..r.needed that are neither
// executed nor committed.
func (r *row) appendMissing(dst []protocol.InstanceID) []protocol.InstanceID {
	if r.needed <= r.prefix || (r.maxCommitted >= r.needed && !r.hasGaps()) {
		return dst
	}
	si := 0
	for k := r.prefix + 1; k <= r.needed; k++ {
		for si < len(r.above) && r.above[si].hi < k {
			si++
		}
		if si < len(r.above) && r.above[si].lo <= k {
			k = r.above[si].hi
			continue
		}
		if _, ok := r.pending[k]; !ok {
			dst = append(dst, protocol.InstanceID{Replica: r.id, Num: k})
		}
	}
	return dst
}
