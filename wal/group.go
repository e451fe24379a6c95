package wal

import (
	"sync"

	"github.com/parliament-lab/parliament/protocol"
)

// GroupCommitter makes records durable for concurrent callers, sharing fsyncs: while one
// batch is being written and fsynced, the records of every caller that arrives meanwhile
// collect into the next batch, which then costs one write and one fsync for all of them.
// Under load the number of records per fsync grows by itself, without a timer.
//
// It owns the Log it wraps: after NewGroupCommitter, use the Log only through Do.
type GroupCommitter struct {
	log *Log

	mu      sync.Mutex
	cond    *sync.Cond // signals the worker: work queued or closing
	frames  []byte     // encoded frames of the next batch
	nrecs   int        // records in frames
	waiters []chan error
	tasks   []task
	closed  bool
	syncs   uint64
	records uint64

	done chan struct{} // closed when the worker has exited
}

// task is a Do call; it runs after the frames (and waiters) queued before it.
type task struct {
	fn      func(*Log) error
	done    chan error
	frames  int // len(frames) when queued
	nrecs   int
	waiters int
}

// GroupStats are the group committer's counters.
type GroupStats struct {
	Syncs   uint64 // batches made durable (one write and one fsync each)
	Records uint64 // records in them; Records/Syncs is the records per fsync
}

// NewGroupCommitter starts the worker goroutine that commits batches to l. Close stops it.
func NewGroupCommitter(l *Log) *GroupCommitter {
	g := &GroupCommitter{log: l, done: make(chan struct{})}
	g.cond = sync.NewCond(&g.mu)
	go g.run()
	return g
}

// CommitAsync queues recs and returns a channel that receives nil once they are durable,
// or the error that prevented it. recs are encoded before CommitAsync returns, so the
// caller may reuse them at once.
func (g *GroupCommitter) CommitAsync(recs []protocol.Record) <-chan error {
	done := make(chan error, 1)
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		done <- ErrClosed
		return done
	}
	start := len(g.frames)
	for i := range recs {
		var err error
		if g.frames, err = appendFrame(g.frames, &recs[i]); err != nil {
			g.frames = g.frames[:start] // all or nothing for this caller
			done <- err
			return done
		}
	}
	g.nrecs += len(recs)
	g.waiters = append(g.waiters, done)
	g.cond.Signal()
	return done
}

// Commit makes recs durable, sharing the fsync with concurrent callers, and returns when
// they are (nil) or cannot be.
func (g *GroupCommitter) Commit(recs []protocol.Record) error {
	return <-g.CommitAsync(recs)
}

// Do runs fn on the Log from the worker, after the batches queued before it: the way to
// Truncate, or to read Stats, while the group committer owns the log.
func (g *GroupCommitter) Do(fn func(*Log) error) error {
	done := make(chan error, 1)
	g.mu.Lock()
	if g.closed {
		g.mu.Unlock()
		return ErrClosed
	}
	g.tasks = append(g.tasks, task{fn: fn, done: done, frames: len(g.frames), nrecs: g.nrecs, waiters: len(g.waiters)})
	g.cond.Signal()
	g.mu.Unlock()
	return <-done
}

// Stats returns the counters.
func (g *GroupCommitter) Stats() GroupStats {
	g.mu.Lock()
	defer g.mu.Unlock()
	return GroupStats{Syncs: g.syncs, Records: g.records}
}

func (g *GroupCommitter) run() {
	defer close(g.done)
	var spare []byte
	for {
		g.mu.Lock()
		for !g.closed && len(g.waiters) == 0 && len(g.tasks) == 0 {
			g.cond.Wait()
		}
		if len(g.waiters) == 0 && len(g.tasks) == 0 { // closed and drained
			g.mu.Unlock()
			return
		}
		frames, nrecs, waiters, tasks := g.frames, g.nrecs, g.waiters, g.tasks
		g.frames, g.nrecs, g.waiters, g.tasks = spare[:0], 0, nil, nil
		g.mu.Unlock()

		// Keep the order of the callers: each task runs after exactly the records
		// queued before it (a Truncate must not drop records committed after it).
		var f, r, w int
		for _, t := range tasks {
			g.commit(frames[f:t.frames], t.nrecs-r, waiters[w:t.waiters])
			f, r, w = t.frames, t.nrecs, t.waiters
			t.done <- t.fn(g.log)
		}
		g.commit(frames[f:], nrecs-r, waiters[w:])
		spare = frames
	}
}

// commit writes and fsyncs one batch and tells its waiters.
func (g *GroupCommitter) commit(frames []byte, nrecs int, waiters []chan error) {
	if len(waiters) == 0 {
		return
	}
	err := g.log.appendFrames(frames, nrecs)
	if err == nil {
		err = g.log.Sync()
	}
	if err == nil {
		g.mu.Lock()
		g.syncs++
		g.records += uint64(nrecs)
		g.mu.Unlock()
	}
	for _, w := range waiters {
		w <- err
	}
}

// Close commits what is queued, stops the worker and closes the Log. Safe to call twice.
func (g *GroupCommitter) Close() error {
	g.mu.Lock()
	already := g.closed
	g.closed = true
	g.cond.Signal()
	g.mu.Unlock()
	<-g.done
	if already {
		return nil
	}
	return g.log.Close()
}
