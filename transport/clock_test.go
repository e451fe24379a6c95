package transport

import (
	"testing"
	"time"
)

func TestManualClock(t *testing.T) {
	c := NewManualClock(t0)
	a := c.NewTimer(10 * time.Millisecond)
	b := c.NewTimer(5 * time.Millisecond)
	s := c.NewTimer(7 * time.Millisecond)
	if !s.Stop() || s.Stop() {
		t.Fatal("Stop should succeed once")
	}
	if c.Pending() != 2 {
		t.Fatalf("pending %d", c.Pending())
	}
	if n, _ := c.Next(); !n.Equal(t0.Add(5 * time.Millisecond)) {
		t.Fatalf("next %v", n)
	}
	if fired := c.Advance(4 * time.Millisecond); fired != 0 {
		t.Fatalf("fired %d early", fired)
	}
	if fired := c.Advance(time.Millisecond); fired != 1 {
		t.Fatalf("fired %d at 5ms", fired)
	}
	if at := <-b.C(); !at.Equal(t0.Add(5 * time.Millisecond)) {
		t.Fatalf("b fired at %v", at)
	}
	select {
	case <-a.C():
		t.Fatal("a fired early")
	default:
	}
	c.Set(t0) // never backwards
	if !c.Now().Equal(t0.Add(5 * time.Millisecond)) {
		t.Fatalf("clock went backwards to %v", c.Now())
	}
	c.Advance(time.Hour)
	<-a.C()
	if z := c.NewTimer(0); len(z.C()) != 1 {
		t.Fatal("zero timer did not fire at once")
	}
}
