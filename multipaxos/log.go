package multipaxos

import "github.com/parliament-lab/parliament/protocol"

// slot is one position of the replicated log at this replica.
type slot struct {
	cmds    []protocol.Command
	vballot protocol.Ballot // ballot in which cmds were accepted (or the leader's ballot)
	status  protocol.Status // StatusNone, StatusAccepted or StatusCommitted (chosen)
	// Leader only: replicas (by index) that accepted cmds in the leader's ballot, and the
	// tick of the last Accept sent for the slot (retransmission).
	acks     uint64
	sentTick uint64
}

// slotLog holds slots base, base+1, ... in memory. Slots below base were committed and
// dropped (RetainCmds) or folded into a snapshot.
type slotLog struct {
	base    uint64
	entries []slot
}

// last returns the highest slot held (base-1 when empty).
func (l *slotLog) last() uint64 { return l.base + uint64(len(l.entries)) - 1 }

// get returns slot s, or nil when s is not held. The pointer is valid until the next ensure.
func (l *slotLog) get(s uint64) *slot {
	if s < l.base || s-l.base >= uint64(len(l.entries)) {
		return nil
	}
	return &l.entries[s-l.base]
}

// ensure extends the log with empty slots up to s and returns slot s (s >= base).
func (l *slotLog) ensure(s uint64) *slot {
	for l.last() < s {
		l.entries = append(l.entries, slot{})
	}
	return &l.entries[s-l.base]
}

// dropBefore forgets every slot below s.
func (l *slotLog) dropBefore(s uint64) {
	if s <= l.base {
		return
	}
	k := s - l.base
	if k >= uint64(len(l.entries)) {
		clear(l.entries)
		l.entries = l.entries[:0]
		l.base = s
		return
	}
	// Clear so the dropped commands can be collected before the array is reallocated.
	clear(l.entries[:k])
	l.entries = l.entries[k:]
	l.base = s
}

// dropAfter forgets every slot above s.
func (l *slotLog) dropAfter(s uint64) {
	if s >= l.last() {
		return
	}
	if s < l.base {
		clear(l.entries)
		l.entries = l.entries[:0]
		return
	}
	n := s - l.base + 1
	clear(l.entries[n:])
	l.entries = l.entries[:n]
}
