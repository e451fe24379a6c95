package executor

import (
	"fmt"

	"github.com/parliament-lab/parliament/protocol"
)

// Restore marks every instance covered by frontier as executed (prefix semantics: an entry
// (R, n) covers R.1..R.n), as if the state-machine snapshot taken at that frontier had been
// applied. The runtime calls it on a fresh executor when it restores the store from a
// snapshot: at restart (the snapshot named by the log's RecordSnapshot) or when it installs
// a snapshot a peer sent. Instances added later that the frontier covers are ignored as
// duplicates, and dependencies on covered instances count as satisfied.
//
// Restore only moves prefixes forward; it panics when instances are pending (a snapshot
// installed under pending instances would need them re-examined: build a new Executor,
// Restore it, and Add the pending instances that lie above the frontier again).
func (e *Executor) Restore(frontier []protocol.InstanceID) {
	if e.inApply {
		panic("executor: Restore called from Apply")
	}
	if e.pending > 0 {
		panic(fmt.Sprintf("executor: Restore with %d instances pending; restore a fresh executor", e.pending))
	}
	for _, d := range frontier {
		if d.Num == 0 {
			continue
		}
		r := e.rowOrNew(d.Replica)
		if d.Num <= r.prefix {
			continue
		}
		r.prefix = d.Num
		// Runs above the old prefix that the new one reaches are absorbed; a run that
		// starts right after it extends it.
		k := 0
		for _, s := range r.above {
			switch {
			case s.hi <= r.prefix:
				r.aboveCount -= s.hi - s.lo + 1
			case s.lo <= r.prefix+1:
				r.aboveCount -= s.hi - s.lo + 1
				r.prefix = s.hi
			default:
				r.above[k] = s
				k++
			}
		}
		r.above = r.above[:k]
		r.maxCommitted = max(r.maxCommitted, r.prefix)
		r.needed = max(r.needed, r.prefix)
	}
}
