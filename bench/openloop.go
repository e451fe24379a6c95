package bench

import (
	"time"

	"github.com/parliament-lab/parliament/protocol"
	"github.com/parliament-lab/parliament/workloads"
)

// openLoopBacklog is how many arrivals a client queues beyond its in-flight cap before it
// drops them (docs/workloads.md); Run's loadOptions.maxBacklog is the same number.
const openLoopBacklog = 1 << 16

// openLoop is the open-loop schedule of one client (docs/workloads.md, "When commands are
// sent"): commands arrive as a Poisson process; at most `outstanding` are in flight; an
// arrival that finds them all busy waits in a backlog of at most maxBacklog, and beyond
// that it is dropped. A command keeps its scheduled arrival as the intended start of its
// latency however long it waited for a slot: the coordinated-omission correction.
//
// The in-process load (siteLoad) and the load on an external cluster (RunExternal) both
// schedule with it, so that a sweep measures the same thing in both. Not goroutine-safe:
// its owner serializes the calls.
type openLoop struct {
	arrivals    *workloads.Arrivals
	origin      time.Time // start of the run; arrivals are offsets from it
	next        time.Time // the next arrival
	outstanding int
	maxBacklog  int
	inflight    int
	backlog     []time.Time // scheduled arrivals waiting for a slot, oldest first
}

// newOpenLoop schedules client's arrivals at rate commands/s from origin; the arrivals
// depend only on (seed, client), so a run can be repeated.
func newOpenLoop(rate float64, seed int64, client uint64, origin time.Time, outstanding, maxBacklog int) *openLoop {
	o := &openLoop{arrivals: workloads.NewArrivals(rate, seed, client), origin: origin, outstanding: outstanding, maxBacklog: maxBacklog}
	o.next = origin.Add(o.arrivals.Next())
	return o
}

// arrive handles every arrival due by now, in order: it calls issue with the arrival's
// scheduled time when a slot is free (the slot is then taken), queues it otherwise, and
// returns how many it dropped because the backlog was full (errors: the offered load is far
// beyond capacity).
func (o *openLoop) arrive(now time.Time, issue func(start time.Time)) (dropped int64) {
	for !o.next.After(now) {
		at := o.next
		o.next = o.origin.Add(o.arrivals.Next())
		switch {
		case o.inflight < o.outstanding:
			o.inflight++
			issue(at)
		case len(o.backlog) < o.maxBacklog:
			o.backlog = append(o.backlog, at)
		default:
			dropped++
		}
	}
	return dropped
}

// done frees the slot of a command that completed. When an arrival waits in the backlog,
// the slot goes to it at once: done returns its scheduled time, and the caller issues it.
func (o *openLoop) done() (start time.Time, ok bool) {
	o.inflight--
	if len(o.backlog) == 0 {
		return time.Time{}, false
	}
	start = o.backlog[0]
	o.backlog = o.backlog[1:]
	o.inflight++
	return start, true
}

// measureWindow is the time frame of one run's load: it starts at start, is measured from
// mFrom (after the warm-up) and ends at end.
type measureWindow struct {
	start, mFrom, end time.Time
}

// countBin counts a completion at now in bins, the run's timeline of binWidth buckets
// (warm-up included).
func (w *measureWindow) countBin(bins []int64, now time.Time) {
	if b := int(now.Sub(w.start) / binWidth); b >= 0 && b < len(bins) {
		bins[b]++
	}
}

// measure records a command that started at start (send time in closed loop, scheduled
// arrival in open loop) and completed at now with rep, if it started after the warm-up and
// completed before the end; it reports whether it did. Execution latency is what the
// client waited; commit latency is that minus the time the command waited at the replica
// between commit and execution (protocol.Reply.ExecDelayMicros).
func (w *measureWindow) measure(start, now time.Time, rep *protocol.Reply, commit, exec *Latency) bool {
	if start.Before(w.mFrom) || now.After(w.end) {
		return false
	}
	e := now.Sub(start)
	exec.Record(e)
	commit.Record(max(0, e-time.Duration(rep.ExecDelayMicros)*time.Microsecond))
	return true
}
