package sim

import (
	"fmt"
	"strings"

	"github.com/parliament-lab/parliament/check"
	"github.com/parliament-lab/parliament/protocol"
)

// minDelay is the smallest one-way delay of any message (a same-site hop still crosses a
// NIC and a kernel): it keeps zero-delay loops from freezing virtual time.
const minDelay = 20_000 // 20µs

// jitterFrac is the base jitter, always on: up to 10% of the one-way delay.
const jitterFrac = 0.1

func (s *sim) index(id protocol.ReplicaID) int {
	i := int(id) - 1
	if i < 0 || i >= len(s.nodes) {
		return -1
	}
	return i
}

// linkDelay draws the delay of one message from replica site a to b: the matrix's one-way
// latency plus jitter and, during the faults phase, the seed's reordering and delay spikes.
// It reports whether the per-link FIFO order may be broken.
func (s *sim) linkDelay(a, b int) (d int64, reordered bool) {
	rng := s.netRng
	d = s.oneWay[a][b]
	d += int64(float64(d) * jitterFrac * rng.Float64())
	d += minDelay
	if !s.healed {
		if s.sw.delay > 0 && rng.Float64() < s.sw.delay {
			d += s.sw.spikeMin + rng.Int64N(s.sw.spikeMax-s.sw.spikeMin+1)
		}
		if s.sw.reorder > 0 && rng.Float64() < s.sw.reorder {
			d += rng.Int64N(s.sw.reorderMax + 1)
			reordered = true
		}
	}
	return d, reordered
}

// deliveryTime returns when a message sent now from a to b arrives. Without reordering a
// link is FIFO (as a TCP connection): a message never overtakes an earlier one.
func (s *sim) deliveryTime(a, b int) int64 {
	d, reordered := s.linkDelay(a, b)
	at := s.now + d
	if reordered {
		return at
	}
	at = max(at, s.fifo[a][b])
	s.fifo[a][b] = at
	return at
}

func (s *sim) lost() bool {
	return !s.healed && s.sw.loss > 0 && s.netRng.Float64() < s.sw.loss
}

// send puts a peer message on the simulated network.
func (s *sim) send(m protocol.Message) {
	a, b := s.index(m.From), s.index(m.To)
	if a < 0 || b < 0 {
		s.violate(check.Panic, fmt.Sprintf("engine sent a message with From %d To %d outside the cluster: %v", m.From, m.To, m))
		return
	}
	s.res.Messages++
	if !s.healed && s.blocked[a][b] > 0 {
		s.res.Dropped++
		if s.trace != nil {
			s.tracef("drop %s (partition)", fmtMsg(&m))
		}
		return
	}
	if s.lost() {
		s.res.Dropped++
		if s.trace != nil {
			s.tracef("drop %s (loss)", fmtMsg(&m))
		}
		return
	}
	at := s.deliveryTime(a, b)
	s.schedule(event{at: at, kind: evDeliver, node: b, msg: m})
	if !s.healed && s.sw.dup > 0 && s.netRng.Float64() < s.sw.dup {
		at2 := s.deliveryTime(a, b)
		if s.trace != nil {
			s.tracef("send %s (duplicated: arrives at %s and %s)", fmtMsg(&m), check.FormatTime(at), check.FormatTime(at2))
		}
		s.schedule(event{at: at2, kind: evDeliver, node: b, msg: m})
		return
	}
	if s.trace != nil {
		s.tracef("send %s (arrives at %s)", fmtMsg(&m), check.FormatTime(at))
	}
}

func (s *sim) deliver(e *event) {
	nd := s.nodes[e.node]
	if !nd.up {
		s.res.Dropped++
		if s.trace != nil {
			s.tracef("drop %s (replica down)", fmtMsg(&e.msg))
		}
		return
	}
	if s.trace != nil {
		s.tracef("deliver %s", fmtMsg(&e.msg))
	}
	if e.msg.Type == protocol.MsgSnapshot && nd.comp != nil {
		s.deliverSnapshot(nd, &e.msg)
	} else {
		nd.eng.Step(e.msg)
	}
	s.afterInput(nd)
}

// fmtMsg renders a message with the fields its type uses.
func fmtMsg(m *protocol.Message) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%v %d->%d b=%v", m.Type, m.From, m.To, m.Ballot)
	if !m.VBallot.IsZero() {
		fmt.Fprintf(&b, " vb=%v", m.VBallot)
	}
	if m.Inst != (protocol.InstanceID{}) {
		fmt.Fprintf(&b, " inst=%v", m.Inst)
	}
	if m.OK {
		b.WriteString(" ok")
	}
	if m.Status != protocol.StatusNone {
		fmt.Fprintf(&b, " status=%v", m.Status)
	}
	if m.Seq != 0 {
		fmt.Fprintf(&b, " seq=%d", m.Seq)
	}
	if m.Index != 0 {
		fmt.Fprintf(&b, " idx=%d", m.Index)
	}
	if len(m.Deps) > 0 {
		fmt.Fprintf(&b, " deps=%v", m.Deps)
	}
	if len(m.Cmds) > 0 {
		b.WriteString(" cmds=[")
		for i := range m.Cmds {
			if i > 0 {
				b.WriteByte(' ')
			}
			b.WriteString(check.FormatCommand(&m.Cmds[i]))
		}
		b.WriteByte(']')
	}
	if len(m.Insts) > 0 {
		b.WriteString(" insts=[")
		for i := range m.Insts {
			if i > 0 {
				b.WriteByte(' ')
			}
			in := &m.Insts[i]
			fmt.Fprintf(&b, "%v/%v/vb=%v/seq=%d/%dcmds", in.ID, in.Status, in.VBallot, in.Seq, len(in.Cmds))
		}
		b.WriteByte(']')
	}
	if len(m.Data) > 0 {
		fmt.Fprintf(&b, " data=%dB", len(m.Data))
	}
	return b.String()
}
