package bench

import (
	"container/heap"
	"sync"
	"time"
)

// delayLine runs functions at given times, in time order, on its own goroutine. The
// in-process harness uses it for what the WAN emulator does not cover: the client-to-
// replica leg (a client at site S talks to the replica at S over the site-local RTT of the
// matrix diagonal, or to another site's replica after a crash) and the reply leg back.
// push never blocks, so replicas may call it from their event loop.
type delayLine struct {
	mu     sync.Mutex
	q      delayHeap
	n      uint64 // insertion counter: equal times keep FIFO order
	wake   chan struct{}
	stopC  chan struct{}
	doneC  chan struct{}
	closed bool
}

type delayItem struct {
	at  time.Time
	n   uint64
	run func()
}

type delayHeap []delayItem

func (h delayHeap) Len() int { return len(h) }
func (h delayHeap) Less(i, j int) bool {
	if !h[i].at.Equal(h[j].at) {
		return h[i].at.Before(h[j].at)
	}
	return h[i].n < h[j].n
}
func (h delayHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *delayHeap) Push(x any)   { *h = append(*h, x.(delayItem)) }
func (h *delayHeap) Pop() any {
	old := *h
	it := old[len(old)-1]
	old[len(old)-1] = delayItem{}
	*h = old[:len(old)-1]
	return it
}

func newDelayLine() *delayLine {
	d := &delayLine{wake: make(chan struct{}, 1), stopC: make(chan struct{}), doneC: make(chan struct{})}
	go d.loop()
	return d
}

// push schedules run at at. After close it is dropped.
func (d *delayLine) push(at time.Time, run func()) {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return
	}
	d.n++
	heap.Push(&d.q, delayItem{at: at, n: d.n, run: run})
	first := d.q[0].n == d.n
	d.mu.Unlock()
	if first {
		select {
		case d.wake <- struct{}{}:
		default:
		}
	}
}

func (d *delayLine) loop() {
	defer close(d.doneC)
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	var due []func()
	for {
		now := time.Now()
		d.mu.Lock()
		due = due[:0]
		for len(d.q) > 0 && !d.q[0].at.After(now) {
			due = append(due, heap.Pop(&d.q).(delayItem).run)
		}
		wait := time.Hour
		if len(d.q) > 0 {
			wait = d.q[0].at.Sub(now)
		}
		d.mu.Unlock()
		for _, f := range due {
			f()
		}
		if len(due) > 0 {
			continue // time passed while running them
		}
		timer.Reset(wait)
		select {
		case <-d.stopC:
			return
		case <-d.wake:
		case <-timer.C:
		}
	}
}

// close stops the goroutine and drops what is pending; safe twice.
func (d *delayLine) close() {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return
	}
	d.closed = true
	d.q = nil
	d.mu.Unlock()
	close(d.stopC)
	<-d.doneC
}
