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

// slotLog holds slots base .. base+n-1 in a ring buffer (power-of-two capacity), so that
// appending at the end and dropping committed slots at the front never copies the log.
// Slots below base were committed and dropped (RetainCmds) or folded into a snapshot.
type slotLog struct {
	base uint64
	ring []slot
	head int // ring index of slot base
	n    int
}

// last returns the highest slot held (base-1 when empty).
func (l *slotLog) last() uint64 { return l.base + uint64(l.n) - 1 }

func (l *slotLog) at(i int) *slot { return &l.ring[(l.head+i)&(len(l.ring)-1)] }

// get returns slot s, or nil when s is not held. The pointer is valid until the next ensure.
func (l *slotLog) get(s uint64) *slot {
	if s < l.base || s-l.base >= uint64(l.n) {
		return nil
	}
	return l.at(int(s - l.base))
}

// ensure extends the log with empty slots up to s and returns slot s (s >= base).
func (l *slotLog) ensure(s uint64) *slot {
	need := int(s-l.base) + 1
	if need > len(l.ring) {
		size := max(64, len(l.ring))
		for size < need {
			size *= 2
		}
		ring := make([]slot, size)
		for i := range l.n {
			ring[i] = *l.at(i)
		}
		l.ring, l.head = ring, 0
	}
	for l.n < need {
		*l.at(l.n) = slot{}
		l.n++
	}
	return l.at(need - 1)
}

// dropBefore forgets every slot below s.
func (l *slotLog) dropBefore(s uint64) {
	if s <= l.base {
		return
	}
	k := min(s-l.base, uint64(l.n))
	for i := range int(k) {
		*l.at(i) = slot{} // let the dropped commands be collected
	}
	if len(l.ring) > 0 {
		l.head = (l.head + int(k)) & (len(l.ring) - 1)
	}
	l.n -= int(k)
	l.base = s
}

// dropAfter forgets every slot above s.
func (l *slotLog) dropAfter(s uint64) {
	for l.n > 0 && l.last() > s {
		*l.at(l.n - 1) = slot{}
		l.n--
	}
}
