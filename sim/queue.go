package sim

import (
	"math/rand/v2"

	"github.com/parliament-lab/parliament/protocol"
)

// evKind says what an event does when its time comes.
type evKind uint8

const (
	evDeliver      evKind = iota // a peer message reaches a replica
	evRequest                    // a client command reaches a replica
	evReply                      // a reply reaches a client
	evTick                       // a replica's logical clock ticks
	evIssue                      // a client issues its next operation
	evTimeout                    // a client's retry timer fires
	evResend                     // a redirected client resends after a short backoff
	evCrash                      // a replica crashes (now, or torn: at its next input)
	evRestart                    // a crashed replica restarts from its persisted records
	evPartition                  // a partition starts
	evPartitionEnd               // a partition heals
	evHeal                       // every fault heals: the liveness phase begins
	evSnapshot                   // a replica snapshots its state machine and truncates (compaction.go)
)

// event is one entry of the simulation queue. Events are ordered by (at, seq): seq is a
// global counter, so ties in virtual time resolve in scheduling order and never depend on
// anything but the seed.
type event struct {
	at      int64 // virtual nanoseconds
	seq     uint64
	kind    evKind
	node    int // replica index (0-based)
	inc     int // replica incarnation the event belongs to (ticks)
	client  int
	attempt int
	part    int   // partition index
	dur     int64 // crash: how long the replica stays down
	msg     protocol.Message
	cmd     protocol.Command
	reply   protocol.Reply
}

// eventQueue is a binary min-heap of (at, seq) keys pointing into a slab of events.
// The heap entries hold no pointers, so sifting them costs no GC write barriers, and a
// slot of the slab is reused once its event has been popped.
type eventQueue struct {
	heap []qkey
	slab []event
	free []int32
}

type qkey struct {
	at  int64
	seq uint64
	idx int32
}

func (q *eventQueue) less(i, j int) bool {
	a, b := &q.heap[i], &q.heap[j]
	if a.at != b.at {
		return a.at < b.at
	}
	return a.seq < b.seq
}

func (q *eventQueue) push(e event) {
	var idx int32
	if n := len(q.free); n > 0 {
		idx = q.free[n-1]
		q.free = q.free[:n-1]
		q.slab[idx] = e
	} else {
		idx = int32(len(q.slab))
		q.slab = append(q.slab, e)
	}
	q.heap = append(q.heap, qkey{at: e.at, seq: e.seq, idx: idx})
	i := len(q.heap) - 1
	for i > 0 {
		p := (i - 1) / 2
		if !q.less(i, p) {
			break
		}
		q.heap[i], q.heap[p] = q.heap[p], q.heap[i]
		i = p
	}
}

func (q *eventQueue) pop() event {
	top := q.heap[0]
	last := len(q.heap) - 1
	q.heap[0] = q.heap[last]
	q.heap = q.heap[:last]
	i := 0
	for {
		l, r, m := 2*i+1, 2*i+2, i
		if l < last && q.less(l, m) {
			m = l
		}
		if r < last && q.less(r, m) {
			m = r
		}
		if m == i {
			break
		}
		q.heap[i], q.heap[m] = q.heap[m], q.heap[i]
		i = m
	}
	e := q.slab[top.idx]
	q.slab[top.idx] = event{} // drop references
	q.free = append(q.free, top.idx)
	return e
}

func (q *eventQueue) len() int { return len(q.heap) }

// Streams of randomness derived from the master seed. Each part of the simulation draws
// from its own stream, so that (for example) adding a fault draw does not change the
// client workload of a seed (TigerBeetle's VOPR does the same).
const (
	streamNetwork uint64 = 1 + iota
	streamClients
	streamFaults
	streamEngines
	streamCompaction
)

// splitmix64 scrambles a seed (Steele et al., "Fast splittable pseudorandom number
// generators", OOPSLA'14) so that nearby seeds give unrelated streams.
func splitmix64(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}

func newStream(seed, stream uint64) *rand.Rand {
	a := splitmix64(seed ^ splitmix64(stream))
	return rand.New(rand.NewPCG(a, splitmix64(a^stream)))
}
