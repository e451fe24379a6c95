package bench

import (
	"testing"
	"time"

	"github.com/parliament-lab/parliament/protocol"
	"github.com/parliament-lab/parliament/workloads"
)

// TestOpenLoopCapBacklogDrops walks one client's schedule by hand: arrivals take free
// slots up to the cap, then queue up to the backlog bound, then are dropped; a completion
// hands its slot to the oldest queued arrival, which keeps its scheduled time.
func TestOpenLoopCapBacklogDrops(t *testing.T) {
	origin := time.Unix(1000, 0)
	o := newOpenLoop(1000, 7, 42, origin, 2, 3)
	// The same (seed, client) gives the same arrivals as workloads.Arrivals.
	ref := workloads.NewArrivals(1000, 7, 42)
	var want []time.Time
	for range 10 {
		want = append(want, origin.Add(ref.Next()))
	}
	if !o.next.Equal(want[0]) {
		t.Fatalf("first arrival %v, want %v", o.next.Sub(origin), want[0].Sub(origin))
	}
	var issued []time.Time
	issue := func(at time.Time) { issued = append(issued, at) }
	if d := o.arrive(want[0].Add(-time.Nanosecond), issue); d != 0 || len(issued) != 0 {
		t.Fatalf("before the first arrival: issued %d, dropped %d", len(issued), d)
	}
	// Seven arrivals: 2 sent, 3 queued, 2 dropped.
	dropped := o.arrive(want[6], issue)
	if dropped != 2 || len(issued) != 2 || !issued[0].Equal(want[0]) || !issued[1].Equal(want[1]) {
		t.Fatalf("issued %v, dropped %d", issued, dropped)
	}
	if o.inflight != 2 || len(o.backlog) != 3 || !o.next.Equal(want[7]) {
		t.Fatalf("inflight %d, backlog %d, next %v", o.inflight, len(o.backlog), o.next.Sub(origin))
	}
	for i := 2; i <= 4; i++ {
		at, ok := o.done()
		if !ok || !at.Equal(want[i]) || o.inflight != 2 {
			t.Fatalf("done %d: %v %v (want %v), inflight %d", i, at.Sub(origin), ok, want[i].Sub(origin), o.inflight)
		}
	}
	if _, ok := o.done(); ok || o.inflight != 1 {
		t.Fatalf("empty backlog gave an arrival; inflight %d", o.inflight)
	}
	// A free slot takes the next arrival at once.
	issued = issued[:0]
	if d := o.arrive(want[7], issue); d != 0 || len(issued) != 1 || !issued[0].Equal(want[7]) {
		t.Fatalf("issued %v, dropped %d", issued, d)
	}
}

// TestMeasureWindow: latency counts from the intended start; commands that started in the
// warm-up or completed after the end are counted in the timeline but not measured.
func TestMeasureWindow(t *testing.T) {
	t0 := time.Unix(1000, 0)
	w := measureWindow{start: t0, mFrom: t0.Add(time.Second), end: t0.Add(3 * time.Second)}
	commit, exec := NewLatency(), NewLatency()
	rep := protocol.Reply{ExecDelayMicros: 2000}
	for _, c := range []struct {
		start, now time.Duration
		measured   bool
	}{
		{500 * time.Millisecond, 1500 * time.Millisecond, false},  // started in the warm-up
		{1500 * time.Millisecond, 3500 * time.Millisecond, false}, // completed after the end
		{2 * time.Second, 2010 * time.Millisecond, true},
	} {
		if got := w.measure(t0.Add(c.start), t0.Add(c.now), &rep, commit, exec); got != c.measured {
			t.Errorf("start %v now %v: measured %v", c.start, c.now, got)
		}
	}
	if p := exec.Percentiles(); p.P50 < 9.9 || p.P50 > 10.1 {
		t.Errorf("exec p50 %vms, want 10", p.P50)
	}
	if p := commit.Percentiles(); p.P50 < 7.9 || p.P50 > 8.1 {
		t.Errorf("commit p50 %vms, want 8 (exec minus the 2ms execution delay)", p.P50)
	}
	bins := make([]int64, 4)
	w.countBin(bins, t0.Add(25*time.Millisecond))
	w.countBin(bins, t0.Add(-15*time.Millisecond)) // before the run
	w.countBin(bins, t0.Add(time.Second))          // beyond the bins
	if bins[2] != 1 || bins[0]+bins[1]+bins[3] != 0 {
		t.Errorf("bins %v", bins)
	}
}
