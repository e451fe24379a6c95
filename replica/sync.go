package replica

import (
	"fmt"

	"github.com/parliament-lab/parliament/protocol"
	"github.com/parliament-lab/parliament/wal"
)

// Pipelined fsync ("asynchronous storage writes", as etcd-io/raft's AsyncStorageWrites).
//
// protocol.Ready asks that its records be durable before anything of the Ready is seen:
// its messages, the commands it commits (which the executor applies and answers), its
// redirects. The simple way is to Append and fsync, then act, then Advance; the event loop
// is then idle for the whole fsync (~1 ms), about a quarter of its time under load.
//
// With a log that can commit asynchronously (asyncLog: the WAL behind a
// wal.GroupCommitter) the loop instead hands each Ready's records to the log at once —
// encoded before commitAsync returns, so the engine may reuse them — copies the Ready's
// outputs, holds them, and advances the engine. While an fsync is in flight the loop goes
// on stepping messages, taking client requests and producing Readys; their records
// collect in the group committer's next batch, and their outputs queue behind the ones
// already held. The committer's worker fsyncs batch after batch: when one fsync ends it
// tells every Ready of its batch and, if records arrived meanwhile, starts the next fsync
// at once, so one fsync covers every Ready produced during the previous one.
//
// The rule that keeps durability intact: the outputs of Ready k are released only when
// the batch holding Ready k's records has been written and fsynced — an fsync that
// started after Ready k's records were appended — and only after the outputs of every
// earlier Ready (held is a FIFO, and the committer finishes batches in order). A Ready
// without records of its own waits in the FIFO too: what it says may follow from records
// still in flight (a commit learnt from a vote not yet durable here), and nothing may
// overtake an earlier output. Only when nothing is held does such a Ready act at once.
//
// What is held, and how it is copied. The engine may reuse a Ready's memory after
// Advance (protocol.Engine.Advance): the engines do reuse the arrays of Persist, Messages,
// Committed and Redirect, and the contract lets them reuse any of it (an instance's own
// dependency vector, a batch's Insts). A held Ready therefore gets its own copy of every Message,
// Instance (also inside Insts), Command of Redirect and Deps array, carved from slabs that
// are reused once the Ready is released (Send encodes or clones at once; the executor and
// the waiting map copy Deps). The arrays of Cmds and the bytes of commands and of Data are
// shared, not copied: the runtime has always kept committed instances' Cmds past Advance
// (the executor holds them until execution), the engines never write a Cmds array they
// handed out (epaxos/slab.go), command bytes are read-only (protocol.Command; the kv
// store keeps them), and Data is either empty or the runtime's own read-only snapshot.
// Copying them would cost a Command struct (96 bytes, with write barriers) per command
// per message.
//
// Snapshots and truncation (durable.go). The store only holds what the executor applied,
// and the executor only gets committed instances from released Readys: a snapshot never
// holds the effect of a command whose records are not yet durable, and neither does the
// frontier given to Compact. Truncation runs in the committer's worker (GroupCommitter.Do),
// after every batch queued before it is written and fsynced, so it never races an fsync,
// and what it writes — the engine's live records — describes the engine now (durable or
// not), durably. Installing a peer's snapshot replaces the store and the executor: the
// loop first drains (waits for every held Ready and releases it), so the old executor
// sees everything as it would have without the pipeline. Stop drains too (and gives up
// after Options.StopTimeout when the fsync never ends: replica.go); a failed commit stops
// the replica (fail) without releasing anything that depended on it.

// asyncLog is a Log that makes records durable off the event loop. groupLog (the WAL in
// DataDir) implements it; tests implement it with an fsync they control.
type asyncLog interface {
	Log
	// commitAsync appends recs — copied before it returns — and returns a channel that
	// receives nil once they are durable, or the error that prevented it. Channels are
	// answered in the order of the calls, and a nil answer means that every record
	// committed before is durable too.
	commitAsync(recs []protocol.Record) <-chan error
	// syncCount returns how many fsyncs have made records durable so far.
	syncCount() uint64
}

// groupLog is the write-ahead log in DataDir behind a wal.GroupCommitter, whose worker
// goroutine writes and fsyncs batches while the event loop goes on. After newGroupLog the
// wal.Log is used only through the committer (Do), which also keeps Truncate and Stats
// from racing an fsync.
type groupLog struct {
	g       *wal.GroupCommitter
	appends []<-chan error // Append calls not yet Synced (the synchronous Log interface)
}

func newGroupLog(l *wal.Log) *groupLog { return &groupLog{g: wal.NewGroupCommitter(l)} }

func (l *groupLog) commitAsync(recs []protocol.Record) <-chan error { return l.g.CommitAsync(recs) }

func (l *groupLog) syncCount() uint64 { return l.g.Stats().Syncs }

// Append implements Log (the runtime itself uses commitAsync).
func (l *groupLog) Append(recs []protocol.Record) error {
	l.appends = append(l.appends, l.g.CommitAsync(recs))
	return nil
}

// Sync implements Log: it waits until every Append is durable.
func (l *groupLog) Sync() error {
	var err error
	for _, c := range l.appends {
		if e := <-c; e != nil && err == nil {
			err = e
		}
	}
	clear(l.appends)
	l.appends = l.appends[:0]
	return err
}

// Truncate implements truncater, in the committer's worker after the batches queued before.
func (l *groupLog) Truncate(live []protocol.Record) error {
	return l.g.Do(func(w *wal.Log) error { return w.Truncate(live) })
}

// stats returns the log's counters once the batches queued before are written.
func (l *groupLog) stats() (wal.Stats, error) {
	var st wal.Stats
	err := l.g.Do(func(w *wal.Log) error {
		st = w.Stats()
		return nil
	})
	return st, err
}

// Close implements Log: it commits what is queued, stops the worker and closes the WAL.
func (l *groupLog) Close() error { return l.g.Close() }

// maxHeldReadys bounds the Readys waiting for their fsync: when the disk stalls, the loop
// waits for it instead of holding ever more outputs (and taking ever more requests).
const maxHeldReadys = 1024

// maxSpareHeld bounds the released Readys kept for reuse of their slabs.
const maxSpareHeld = 16

// pipeline is the event loop's state of the pipelined fsync: the FIFO of held Readys. It
// belongs to the loop goroutine (run); nil when the log is synchronous.
type pipeline struct {
	log   asyncLog
	held  []*heldReady // oldest first
	spare []*heldReady
}

// heldReady is the copy of a Ready's outputs waiting for its records to be durable.
type heldReady struct {
	done      <-chan error // the commit of its records; nil: none of its own, or answered
	leader    protocol.ReplicaID
	msgs      []protocol.Message
	committed []protocol.Instance
	redirect  []protocol.Command
	// Slabs the copies' Insts and Deps point into.
	insts []protocol.Instance
	deps  []protocol.InstanceID
}

// newPipeline returns the pipeline for the replica's log, or nil when the log commits
// only synchronously (no DataDir: MemLog, DiscardLog, --durable=false), which keeps the
// plain path: Append, Sync, act.
func (r *Replica) newPipeline() *pipeline {
	l, ok := r.wal.(asyncLog)
	if !ok {
		return nil
	}
	return &pipeline{log: l}
}

// headC is the commit channel of the oldest held Ready (nil: nothing held, and a nil
// channel never fires in a select).
func (p *pipeline) headC() <-chan error {
	if p == nil || len(p.held) == 0 {
		return nil
	}
	return p.held[0].done
}

// handle does a Ready's step 1 (its records go to the log) and holds its outputs until
// they are durable, or acts at once when nothing needs to wait. The caller advances the
// engine after.
func (p *pipeline) handle(r *Replica, rd *protocol.Ready) error {
	var done <-chan error
	if len(rd.Persist) > 0 {
		done = p.log.commitAsync(rd.Persist)
		r.stats.records.Add(uint64(len(rd.Persist)))
		select {
		case err := <-done:
			// Answered already: a record that cannot be encoded (stop before anything
			// after it is appended), or an fsync that was that quick.
			if err != nil {
				return fmt.Errorf("log append: %w", err)
			}
			done = nil
		default:
		}
	}
	if done == nil && len(p.held) == 0 {
		r.emit(rd.Messages, rd.Committed, rd.Redirect, rd.Leader)
		return nil
	}
	for len(p.held) >= maxHeldReadys {
		if err := p.releaseHead(r, true); err != nil {
			return err
		}
	}
	p.hold(r, rd, done)
	return nil
}

// synced is called when the oldest held Ready's commit was answered with err: it
// releases that Ready and every later one already durable.
func (p *pipeline) synced(r *Replica, err error) error {
	if err != nil {
		return fmt.Errorf("log sync: %w", err)
	}
	p.held[0].done = nil
	for len(p.held) > 0 {
		if p.held[0].done != nil {
			select {
			case err := <-p.held[0].done:
				if err != nil {
					return fmt.Errorf("log sync: %w", err)
				}
				p.held[0].done = nil
			default:
				r.stats.syncs.Store(p.log.syncCount())
				return nil
			}
		}
		if err := p.releaseHead(r, false); err != nil {
			return err
		}
	}
	r.stats.syncs.Store(p.log.syncCount())
	return nil
}

// drain waits until every held Ready is durable and releases them all: before a snapshot
// is installed and before the replica stops.
func (p *pipeline) drain(r *Replica) error {
	if p == nil {
		return nil
	}
	for len(p.held) > 0 {
		if err := p.releaseHead(r, true); err != nil {
			return err
		}
	}
	r.stats.syncs.Store(p.log.syncCount())
	return nil
}

// releaseHead releases the oldest held Ready, first waiting for its commit when wait is
// set (otherwise it must have been answered).
func (p *pipeline) releaseHead(r *Replica, wait bool) error {
	h := p.held[0]
	if h.done != nil {
		if !wait {
			panic("replica: releasing a held Ready whose records are not durable")
		}
		began := r.diskBegin()
		err := <-h.done
		r.diskEnd(began)
		if err != nil {
			return fmt.Errorf("log sync: %w", err)
		}
		h.done = nil
	}
	copy(p.held, p.held[1:])
	p.held[len(p.held)-1] = nil
	p.held = p.held[:len(p.held)-1]
	r.emit(h.msgs, h.committed, h.redirect, h.leader)
	p.recycle(h)
	return nil
}

// hold queues a copy of rd's outputs (see the file comment for what is copied).
func (p *pipeline) hold(r *Replica, rd *protocol.Ready, done <-chan error) {
	var h *heldReady
	if n := len(p.spare); n > 0 {
		h = p.spare[n-1]
		p.spare[n-1] = nil
		p.spare = p.spare[:n-1]
	} else {
		h = &heldReady{}
	}
	h.done, h.leader = done, rd.Leader
	// Size the slabs first, so that every copy of this Ready lands in one array.
	nd, ni := 0, 0
	for i := range rd.Messages {
		m := &rd.Messages[i]
		nd += len(m.Deps)
		ni += len(m.Insts)
		for j := range m.Insts {
			nd += len(m.Insts[j].Deps)
		}
	}
	for i := range rd.Committed {
		nd += len(rd.Committed[i].Deps)
	}
	h.deps = reserve(h.deps, nd)
	h.insts = reserve(h.insts, ni)
	h.msgs = reserve(h.msgs, len(rd.Messages))
	for i := range rd.Messages {
		m := &rd.Messages[i]
		// Filled now, from the snapshot of this moment (read-only, shared): by the time
		// the message leaves, a newer snapshot may have replaced it.
		if m.Type == protocol.MsgSnapshot && !r.fillSnapshot(m) {
			continue
		}
		c := *m
		c.Deps = h.copyDeps(m.Deps)
		if len(m.Insts) > 0 {
			start := len(h.insts)
			for j := range m.Insts {
				in := m.Insts[j]
				in.Deps = h.copyDeps(in.Deps)
				h.insts = append(h.insts, in)
			}
			c.Insts = h.insts[start:len(h.insts):len(h.insts)]
		} else if m.Insts != nil {
			c.Insts = m.Insts[:0:0]
		}
		h.msgs = append(h.msgs, c)
	}
	h.committed = append(h.committed[:0], rd.Committed...)
	for i := range h.committed {
		h.committed[i].Deps = h.copyDeps(h.committed[i].Deps)
	}
	h.redirect = append(h.redirect[:0], rd.Redirect...)
	p.held = append(p.held, h)
}

// copyDeps copies d into the Ready's deps slab (nil stays nil, empty stays empty).
func (h *heldReady) copyDeps(d []protocol.InstanceID) []protocol.InstanceID {
	if len(d) == 0 {
		if d == nil {
			return nil
		}
		return d[:0:0]
	}
	start := len(h.deps)
	h.deps = append(h.deps, d...)
	return h.deps[start:len(h.deps):len(h.deps)]
}

// recycle keeps a released Ready's slabs for the next one, dropping what they point to.
func (p *pipeline) recycle(h *heldReady) {
	clear(h.msgs)
	clear(h.committed)
	clear(h.redirect)
	clear(h.insts)
	h.msgs, h.committed, h.redirect = h.msgs[:0], h.committed[:0], h.redirect[:0]
	h.insts, h.deps = h.insts[:0], h.deps[:0]
	h.done = nil
	if len(p.spare) < maxSpareHeld {
		p.spare = append(p.spare, h)
	}
}

// reserve returns s emptied, with room for n elements.
func reserve[T any](s []T, n int) []T {
	if cap(s) < n {
		return make([]T, 0, n+n/4)
	}
	return s[:0]
}
