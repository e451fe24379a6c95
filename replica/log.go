package replica

import (
	"sync"

	"github.com/parliament-lab/parliament/protocol"
)

// Log is where the runtime makes a Ready's records durable before its messages leave
// (protocol.Ready, step 1). With a Log passed in Options.Log the runtime calls Append once
// per Ready with every record of that Ready, then Sync once, and waits for it. The WAL in
// Options.DataDir is used asynchronously instead (sync.go: the loop goes on while a group
// committer fsyncs, and the Ready's outputs wait for it). MemLog and DiscardLog are the
// in-memory stand-ins.
//
// Records passed to Append share memory with the engine, which may reuse it after the
// Ready is advanced: an implementation that keeps records must copy them (an encoding WAL
// copies by encoding).
type Log interface {
	Append(recs []protocol.Record) error
	Sync() error
	Close() error
}

// MemLog keeps deep copies of every record in memory, for tests that restart an engine
// from what it persisted. Nothing survives the process. Safe for concurrent use.
type MemLog struct {
	mu     sync.Mutex
	recs   []protocol.Record
	syncs  uint64
	closed bool
}

// NewMemLog returns an empty MemLog.
func NewMemLog() *MemLog { return &MemLog{} }

// Append implements Log.
func (l *MemLog) Append(recs []protocol.Record) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	for i := range recs {
		r := recs[i]
		r.Inst = recs[i].Inst.Clone()
		l.recs = append(l.recs, r)
	}
	return nil
}

// Sync implements Log.
func (l *MemLog) Sync() error {
	l.mu.Lock()
	l.syncs++
	l.mu.Unlock()
	return nil
}

// Close implements Log. The records stay readable.
func (l *MemLog) Close() error {
	l.mu.Lock()
	l.closed = true
	l.mu.Unlock()
	return nil
}

// Records returns a copy of every record appended so far, in order (what a WAL would
// recover), for protocol.Config.Records.
func (l *MemLog) Records() []protocol.Record {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]protocol.Record(nil), l.recs...)
}

// Syncs returns how many times Sync was called.
func (l *MemLog) Syncs() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.syncs
}

// DiscardLog drops every record: the in-memory log of a long-running replica before the
// WAL exists, and of --durable=false runs, which must not grow without bound. Nothing
// survives a restart.
type DiscardLog struct{}

// Append implements Log.
func (DiscardLog) Append([]protocol.Record) error { return nil }

// Sync implements Log.
func (DiscardLog) Sync() error { return nil }

// Close implements Log.
func (DiscardLog) Close() error { return nil }
