package transport

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/parliament-lab/parliament/protocol"
)

// recorder is an inner Transport that records what the WAN hands it, with the (manual)
// time at which it did.
type recorder struct {
	clock  *ManualClock
	mu     sync.Mutex
	got    []protocol.Message
	at     []time.Time
	signal chan struct{}
	closed bool
}

func newRecorder(c *ManualClock) *recorder {
	return &recorder{clock: c, signal: make(chan struct{}, 1)}
}

func (r *recorder) Send(m protocol.Message) {
	r.mu.Lock()
	r.got = append(r.got, m)
	r.at = append(r.at, r.clock.Now())
	r.mu.Unlock()
	select {
	case r.signal <- struct{}{}:
	default:
	}
}
func (r *recorder) Recv() <-chan []protocol.Message { return nil }
func (r *recorder) Close() error {
	r.mu.Lock()
	r.closed = true
	r.mu.Unlock()
	return nil
}

func (r *recorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.got)
}

// waitCount waits until the recorder holds n messages.
func (r *recorder) waitCount(t *testing.T, n int) {
	t.Helper()
	timer := time.NewTimer(waitTimeout)
	defer timer.Stop()
	for r.count() < n {
		select {
		case <-r.signal:
		case <-timer.C:
			t.Fatalf("recorder has %d messages, want %d", r.count(), n)
		}
	}
}

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// fiveSites places replica i at the i-th site of the default matrix.
func fiveSites() map[protocol.ReplicaID]string {
	return map[protocol.ReplicaID]string{1: "CA", 2: "VA", 3: "OR", 4: "IE", 5: "JP"}
}

func newTestWAN(t *testing.T, jitter float64, seed int64) (*WAN, *recorder, *ManualClock) {
	t.Helper()
	clock := NewManualClock(t0)
	rec := newRecorder(clock)
	w, err := NewWANChecked(rec, WANConfig{
		Matrix: DefaultMatrix(), Sites: fiveSites(), Self: 1,
		JitterFrac: jitter, Seed: seed, Clock: clock,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close() })
	return w, rec, clock
}

func blockUntil(t *testing.T, c *ManualClock, n int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	if err := c.BlockUntil(ctx, n); err != nil {
		t.Fatalf("waiting for %d pending timers (have %d): %v", n, c.Pending(), err)
	}
}

func TestWANDelaysByHalfRTT(t *testing.T) {
	w, rec, clock := newTestWAN(t, 0, 0)
	w.Send(protocol.Message{Type: protocol.MsgAccept, From: 1, To: 2, Seq: 1}) // CA -> VA: 59.9/2 ms
	blockUntil(t, clock, 1)                                                    // the link waits for its timer
	if fired := clock.Advance(29949 * time.Microsecond); fired != 0 || rec.count() != 0 {
		t.Fatalf("delivered before RTT/2: fired %d timers, recorder has %d", fired, rec.count())
	}
	clock.Advance(time.Microsecond)
	rec.waitCount(t, 1)
	if got, want := rec.at[0].Sub(t0), 29950*time.Microsecond; got != want {
		t.Fatalf("delivered after %v, want %v", got, want)
	}
}

func TestWANLinksAreIndependent(t *testing.T) {
	w, rec, clock := newTestWAN(t, 0, 0)
	w.Send(protocol.Message{From: 1, To: 4, Seq: 1}) // CA -> IE: 70.6 ms
	w.Send(protocol.Message{From: 1, To: 2, Seq: 2}) // CA -> VA: 29.95 ms
	w.Send(protocol.Message{From: 1, To: 3, Seq: 3}) // CA -> OR: 10.55 ms
	blockUntil(t, clock, 3)
	for i := 1; i <= 3; i++ {
		next, _ := clock.Next()
		clock.Set(next)
		rec.waitCount(t, i)
	}
	want := []struct {
		seq uint64
		at  time.Duration
	}{{3, 10550 * time.Microsecond}, {2, 29950 * time.Microsecond}, {1, 70600 * time.Microsecond}}
	for i, w := range want {
		if rec.got[i].Seq != w.seq || rec.at[i].Sub(t0) != w.at {
			t.Fatalf("delivery %d: Seq %d at %v; want Seq %d at %v", i, rec.got[i].Seq, rec.at[i].Sub(t0), w.seq, w.at)
		}
	}
}

func TestWANSelfIsImmediate(t *testing.T) {
	w, rec, _ := newTestWAN(t, 0, 0)
	w.Send(protocol.Message{From: 1, To: 1, Seq: 1})
	if rec.count() != 1 {
		t.Fatal("message to self was delayed")
	}
	w.Send(protocol.Message{From: 1, To: 9, Seq: 2}) // no site: dropped
	if w.Dropped() != 1 || rec.count() != 1 {
		t.Fatalf("message to a replica without a site: dropped %d, delivered %d", w.Dropped(), rec.count())
	}
}

// With heavy jitter, messages on one link still leave in the order they were sent, and
// none leaves before (1-jitter) of its delay or after (1+jitter) (unless held back by an
// earlier one).
func TestWANJitterKeepsLinkFIFO(t *testing.T) {
	const jitter = 0.9
	w, rec, clock := newTestWAN(t, jitter, 42)
	const n = 300
	sent := make([]time.Time, n)
	for i := range n {
		sent[i] = clock.Now()
		w.Send(protocol.Message{From: 1, To: 4, Seq: uint64(i)}) // CA -> IE, 70.6 ms
		clock.Advance(100 * time.Microsecond)
	}
	// Fire the link's timers one deadline at a time until everything arrived. Between a
	// firing and the link's next timer there is a moment with no timer pending: wait for
	// the clock's timer set (or the recorder) to change instead of spinning.
	timeout := time.NewTimer(waitTimeout)
	defer timeout.Stop()
	for rec.count() < n {
		clock.mu.Lock()
		changed := clock.changed
		clock.mu.Unlock()
		next, ok := clock.Next()
		if !ok {
			select {
			case <-changed:
			case <-rec.signal:
			case <-timeout.C:
				t.Fatalf("stuck with %d of %d delivered", rec.count(), n)
			}
			continue
		}
		clock.Set(next)
	}
	base := 70600 * time.Microsecond
	minD := time.Duration(float64(base) * (1 - jitter))
	for i, m := range rec.got {
		if m.Seq != uint64(i) {
			t.Fatalf("delivery %d is Seq %d: jitter reordered the link", i, m.Seq)
		}
		if d := rec.at[i].Sub(sent[i]); d < minD {
			t.Fatalf("Seq %d delivered after %v < %v", i, d, minD)
		}
	}
}

// The jitter draws come from the seed: same seed, same schedule; another seed, another.
func TestWANJitterSeeded(t *testing.T) {
	schedule := func(seed int64) []time.Time {
		w, _, _ := newTestWAN(t, 0.5, seed)
		for i := range 20 {
			w.Send(protocol.Message{From: 1, To: protocol.ReplicaID(2 + i%4), Seq: uint64(i)})
		}
		var out []time.Time
		for id := protocol.ReplicaID(2); id <= 5; id++ {
			l := w.links[id]
			l.mu.Lock()
			for _, it := range l.q {
				out = append(out, it.at)
			}
			l.mu.Unlock()
		}
		return out
	}
	a, b, c := schedule(7), schedule(7), schedule(8)
	same := func(x, y []time.Time) bool {
		if len(x) != len(y) {
			return false
		}
		for i := range x {
			if !x[i].Equal(y[i]) {
				return false
			}
		}
		return true
	}
	if len(a) != 20 || !same(a, b) {
		t.Fatal("same seed gave different schedules")
	}
	if same(a, c) {
		t.Fatal("different seeds gave the same schedule")
	}
}

func TestWANCopiesMessage(t *testing.T) {
	w, rec, clock := newTestWAN(t, 0, 0)
	m := protocol.Message{From: 1, To: 2, Data: []byte("abc")}
	w.Send(m)
	m.Data[0] = 'X' // the caller reuses its memory while the message is in flight
	blockUntil(t, clock, 1)
	clock.Advance(time.Second)
	rec.waitCount(t, 1)
	if string(rec.got[0].Data) != "abc" {
		t.Fatalf("in-flight message changed to %q", rec.got[0].Data)
	}
}

func TestWANCloseClosesInner(t *testing.T) {
	w, rec, clock := newTestWAN(t, 0, 0)
	w.Send(protocol.Message{From: 1, To: 2})
	blockUntil(t, clock, 1)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	w.Close()
	if !rec.closed || rec.count() != 0 {
		t.Fatalf("after Close: inner closed %v, delivered %d", rec.closed, rec.count())
	}
}

func TestWANConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  WANConfig
		want string
	}{
		{"no matrix", WANConfig{Sites: fiveSites(), Self: 1}, "Matrix is nil"},
		{"self without site", WANConfig{Matrix: DefaultMatrix(), Sites: fiveSites(), Self: 9}, "Self 9 has no site"},
		{"unknown site", WANConfig{Matrix: ThreeSiteMatrix(), Sites: fiveSites(), Self: 1}, `replica 3: site "OR" is not in the matrix`},
		{"jitter", WANConfig{Matrix: DefaultMatrix(), Sites: fiveSites(), Self: 1, JitterFrac: 2}, "JitterFrac 2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v; want %q", err, tc.want)
			}
			inner := NewMemNetwork().Transport(1)
			defer inner.Close()
			if _, err := NewWANChecked(inner, tc.cfg); err == nil {
				t.Fatal("NewWANChecked accepted it")
			}
		})
	}
}

// The WAN over the in-memory network, end to end with a manual clock.
func TestWANOverMem(t *testing.T) {
	clock := NewManualClock(t0)
	net := NewMemNetwork()
	sites := map[protocol.ReplicaID]string{1: "CA", 2: "IE"}
	a := NewWAN(net.Transport(1), WANConfig{Matrix: ThreeSiteMatrix(), Sites: sites, Self: 1, Clock: clock})
	b := NewWAN(net.Transport(2), WANConfig{Matrix: ThreeSiteMatrix(), Sites: sites, Self: 2, Clock: clock})
	defer a.Close()
	defer b.Close()
	a.Send(protocol.Message{Type: protocol.MsgAccept, From: 1, To: 2, Seq: 1})
	blockUntil(t, clock, 1)
	select {
	case <-b.Recv():
		t.Fatal("delivered before its delay")
	default:
	}
	clock.Advance(70600 * time.Microsecond) // CA-IE RTT 141.2 ms
	got := recvN(t, b, 1)
	if got[0].Seq != 1 {
		t.Fatalf("got %v", got[0])
	}
}
