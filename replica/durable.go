package replica

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/parliament-lab/parliament/executor"
	"github.com/parliament-lab/parliament/kv"
	"github.com/parliament-lab/parliament/protocol"
	"github.com/parliament-lab/parliament/wal"
	"github.com/parliament-lab/parliament/wire"
)

// DefaultSnapshotEvery is the default number of executed commands between state-machine
// snapshots (Options.SnapshotEvery).
const DefaultSnapshotEvery = 100000

// DefaultTruncateBytes is the default log growth between truncations
// (Options.TruncateBytes).
const DefaultTruncateBytes = 64 << 20

// snapshot is a state-machine snapshot and the executed frontier it was taken at
// (normalized: normFrontier).
type snapshot struct {
	frontier []protocol.InstanceID
	data     []byte
}

// waitInst is a committed instance the executor could not execute yet, kept so that the
// reply can say how long it waited and so that the instance can be handed to a new
// executor when a snapshot is installed.
type waitInst struct {
	at   time.Time
	inst protocol.Instance
}

// truncater is implemented by logs that can replace their content (wal.Log): after a
// snapshot the log becomes the engine's LiveRecords.
type truncater interface {
	Truncate(live []protocol.Record) error
}

// snapshotAheader is implemented by engines that say whether a snapshot would move them
// forward (epaxos); commitIndexer by those whose snapshots are a log position
// (multipaxos: a snapshot above the commit point is installed).
type snapshotAheader interface {
	SnapshotAhead(frontier []protocol.InstanceID) bool
}

type commitIndexer interface {
	CommitIndex() uint64
}

// lastSnapshotFrontier returns the frontier of the last RecordSnapshot in recs (the one the
// engines restart from: frontiers only move forward), normalized; nil when there is none.
func lastSnapshotFrontier(recs []protocol.Record) []protocol.InstanceID {
	for i := len(recs) - 1; i >= 0; i-- {
		if recs[i].Type == protocol.RecordSnapshot {
			f := recs[i].Inst.Deps
			if len(f) == 0 && recs[i].Index > 0 {
				f = []protocol.InstanceID{{Num: recs[i].Index}} // Multi-Paxos form without Deps
			}
			return normFrontier(f)
		}
	}
	return nil
}

// openStorage opens the write-ahead log and the snapshot files in opts.DataDir (when set),
// restores the store and the executor from the snapshot the log starts from, and returns
// the records the engine is rebuilt from.
func (r *Replica) openStorage(opts *Options) ([]protocol.Record, error) {
	if opts.DataDir == "" {
		if f := lastSnapshotFrontier(opts.Records); len(f) > 0 {
			return nil, fmt.Errorf("Options.Records start from a snapshot at %v, but there is no DataDir to load it from", f)
		}
		return opts.Records, nil
	}
	if opts.Log != nil || opts.Records != nil {
		return nil, errors.New("Options.DataDir is set: leave Log and Records unset (the replica opens its log itself)")
	}
	l, recs, rep, err := wal.Open(opts.DataDir, wal.Options{NoSync: opts.NoSync, Logger: r.log})
	if err != nil {
		return nil, err // a *wal.CorruptError names the file and the offset
	}
	want := lastSnapshotFrontier(recs)
	sd, data, err := openSnapDir(opts.DataDir, want, opts.NoSync)
	if err != nil {
		l.Close()
		return nil, err
	}
	if data != nil {
		if err := r.store.Restore(data); err != nil {
			l.Close()
			return nil, fmt.Errorf("snapshot %s in %s: %w", sd.cur, opts.DataDir, err)
		}
		r.exec.Restore(want)
		r.snap = snapshot{frontier: want, data: data}
		r.stats.snapBytes.Store(uint64(len(data)))
	}
	// The loop pipelines its fsyncs through a group committer (sync.go), which owns the
	// log from now on: r.wlog is read only through r.logBytes.
	r.wal, r.wlog, r.disk = newGroupLog(l), l, sd
	r.log.Info("recovered", "dir", opts.DataDir, "records", rep.Records, "segments", rep.Segments,
		"snapshot", sd.cur, "frontier", fmt.Sprint(want), "torn", rep.Torn, "fsync", !opts.NoSync)
	return recs, nil
}

// executedFrontier returns what has executed here, per row (prefix semantics).
func (r *Replica) executedFrontier() []protocol.InstanceID {
	var f []protocol.InstanceID
	for _, row := range r.rows {
		if n := r.exec.ExecutedPrefix(row); n > 0 {
			f = append(f, protocol.InstanceID{Replica: row, Num: n})
		}
	}
	return f
}

// maybeCheckpoint takes a snapshot once SnapshotEvery commands executed since the last.
func (r *Replica) maybeCheckpoint() error {
	if r.snapEvery == 0 || r.compactor == nil {
		return nil
	}
	if r.stats.executedCmds.Load()-r.snapAt < r.snapEvery {
		return nil
	}
	return r.checkpoint()
}

// checkpoint folds everything executed here into a state-machine snapshot and lets the
// engine forget what it covers (Compact). When the log has grown enough since the last
// truncation (Options.TruncateBytes) the snapshot is also made durable (a snapshot file)
// and the log is replaced by the engine's live records, which start with a RecordSnapshot
// naming the snapshot's frontier (protocol.Compactor). Otherwise nothing is written: the
// log still holds every record since the snapshot file it names, so a restart from that
// older snapshot rebuilds everything the engine forgot. (Rewriting the live records at
// every snapshot would double what an EPaxos replica writes: peers keep the instances
// their slowest peer has not reported executed, about one snapshot interval.)
//
// The store may already hold the effects of instances above the frontier (EPaxos executes
// rows out of step, and the frontier is per-row prefixes): after a restart from this
// snapshot they execute again, which the store's sessions turn into no-ops for writes
// (exactly-once), and they were executed only after their whole dependency closure, so
// nothing that conflicts with them can be ordered before them on replay.
//
// With the pipelined fsync (sync.go) the executor only gets the committed instances of
// Readys whose records are durable: the snapshot and the frontier given to Compact never
// cover a command whose records could still be lost.
func (r *Replica) checkpoint() error {
	r.snapAt = r.stats.executedCmds.Load()
	f := r.executedFrontier()
	if len(f) == 0 || sameFrontier(f, r.snap.frontier) {
		return nil
	}
	data := r.store.Snapshot()
	r.snap = snapshot{frontier: f, data: data}
	r.pruneExecLog(f)
	r.stats.snapshots.Add(1)
	r.stats.snapBytes.Store(uint64(len(data)))
	r.compactor.Compact(f)
	if r.disk == nil || r.wlog == nil {
		return nil
	}
	// The log's size, the snapshot file and the truncation all wait for the disk (logBytes
	// for the group committer, which may be in an fsync).
	defer r.diskEnd(r.diskBegin())
	size, err := r.logBytes()
	if err != nil {
		return err
	}
	if grown := size - r.truncAt; grown < max(r.truncMin, 2*r.liveBytes) {
		return nil
	}
	name, err := r.disk.save(f, data)
	if err != nil {
		return err
	}
	return r.truncate(name)
}

// truncate replaces the log by the engine's live records, once the snapshot file name
// (which they start from) is durable, and then deletes older snapshot files.
//
// Only a replica that keeps its snapshots on disk (DataDir) truncates: a log passed in
// Options.Log that was truncated would start from a snapshot no file holds, and could not
// rebuild the replica.
func (r *Replica) truncate(name string) error {
	t, ok := r.wal.(truncater)
	if !ok || r.disk == nil {
		return nil
	}
	defer r.diskEnd(r.diskBegin())
	live := r.compactor.LiveRecords()
	if got := lastSnapshotFrontier(live[:min(1, len(live))]); !sameFrontier(got, r.snap.frontier) {
		// Restarting from these records would look for a snapshot that does not exist:
		// keep the longer log (and the older snapshot) instead.
		r.log.Error("not truncating the log: the engine's snapshot record does not match the snapshot",
			"engine", fmt.Sprint(got), "snapshot", fmt.Sprint(r.snap.frontier))
		return nil
	}
	before, err := r.logBytes()
	if err != nil {
		return err
	}
	// With the group committer, Truncate runs in its worker after every batch queued
	// before it is written and fsynced (their held Readys are released by the loop as
	// usual): it never races an fsync, and the live records it writes, durably, describe
	// the engine now, which includes whatever is still held.
	if err := t.Truncate(live); err != nil {
		return fmt.Errorf("log truncate: %w", err)
	}
	after, err := r.logBytes()
	if err != nil {
		return err
	}
	r.truncAt = after
	r.liveBytes = after - before
	return r.disk.setCurrent(name)
}

// logBytes returns the bytes appended to the log in DataDir since it was opened (0
// without): through the group committer, which owns it, once the batches queued before
// are written.
func (r *Replica) logBytes() (uint64, error) {
	if g, ok := r.wal.(*groupLog); ok {
		st, err := g.stats()
		if err != nil {
			return 0, fmt.Errorf("log stats: %w", err)
		}
		return st.Bytes, nil
	}
	if r.wlog != nil {
		return r.wlog.Stats().Bytes, nil
	}
	return 0, nil
}

// snapshotAhead reports whether the engine will install a snapshot with frontier f
// (Step(MsgSnapshot)), which is when the runtime must restore the store from it first.
func (r *Replica) snapshotAhead(f []protocol.InstanceID) bool {
	switch e := r.eng.(type) {
	case snapshotAheader:
		return e.SnapshotAhead(f)
	case commitIndexer:
		for _, d := range f {
			if d.Replica == 0 {
				return d.Num > e.CommitIndex() && d.Num != 1<<64-1
			}
		}
	}
	return false
}

// fillSnapshot puts the state-machine snapshot into an outgoing MsgSnapshot (the engine
// leaves Data empty). It reports false when the latest snapshot does not match the
// frontier the engine announces, and the message must not leave. Whatever its size:
// sendSnapshot sends one larger than max_frame in chunks.
func (r *Replica) fillSnapshot(m *protocol.Message) bool {
	if len(m.Data) > 0 {
		return true
	}
	if !sameFrontier(normFrontier(m.Deps), r.snap.frontier) {
		r.log.Warn("not sending a snapshot: no state-machine snapshot at the engine's frontier",
			"to", m.To, "engine", fmt.Sprint(m.Deps), "have", fmt.Sprint(r.snap.frontier))
		return false
	}
	m.Data = r.snap.data // never modified: shared by every message that carries it
	return true
}

// sendSnapshot sends a filled MsgSnapshot: as one message when it fits max_frame, else in
// chunks (chunk.go), paced by the receiver's acks. An engine that sends the same snapshot
// again while its chunks are on the way does not restart the transfer.
func (r *Replica) sendSnapshot(m *protocol.Message) {
	if len(m.Data)+snapshotOverhead <= r.maxFrame() {
		r.chunkOut.cancel(m.To) // a newer, smaller snapshot replaces one in chunks
		r.tr.Send(*m)
		return
	}
	r.chunkOut.offer(m, r.ticks)
}

// snapshotOverhead bounds what a MsgSnapshot adds to its Data on the wire (header, ballot,
// index, frontier of a few replicas): a snapshot up to max_frame minus this goes as one
// message, and no chunk carries more than max_frame minus this of the snapshot's bytes.
const snapshotOverhead = 4 << 10

// maxFrame is the largest frame the transport sends: the cluster's max_frame, or the
// wire default.
func (r *Replica) maxFrame() int {
	if r.cl.MaxFrame > 0 {
		return int(r.cl.MaxFrame)
	}
	return wire.DefaultMaxFrame
}

// installSnapshot prepares the runtime for Step(m) of a MsgSnapshot: when the engine will
// install it, the store and the executor are restored from m.Data and the snapshot is made
// durable before the engine sees it (the engine persists records that start from it in its
// next Ready). It returns whether m should be stepped (false: Data does not decode) and
// the snapshot file name to truncate the log to after Step ("" with no file), and whether
// the snapshot was installed. owned: m.Data belongs to the runtime (a snapshot reassembled
// from chunks) and is kept without a copy.
func (r *Replica) installSnapshot(m *protocol.Message, owned bool) (step, installed bool, name string, err error) {
	if !r.snapshotAhead(m.Deps) {
		return true, false, "", nil
	}
	st := kv.New()
	if err := st.Restore(m.Data); err != nil {
		r.log.Warn("ignoring a snapshot that does not decode", "from", m.From, "err", err)
		return false, false, "", nil
	}
	f := normFrontier(m.Deps)
	data := m.Data
	if !owned {
		data = bytes.Clone(m.Data) // m.Data belongs to the transport's receive buffer
	}
	if r.disk != nil {
		began := r.diskBegin()
		name, err = r.disk.save(f, data)
		r.diskEnd(began)
		if err != nil {
			return false, false, "", err
		}
	}
	r.log.Info("installing snapshot", "from", m.From, "frontier", fmt.Sprint(f), "bytes", len(data),
		"was", fmt.Sprint(r.executedFrontier()))
	r.store = st
	r.snap = snapshot{frontier: f, data: data}
	r.stats.installed.Add(1)
	r.stats.snapBytes.Store(uint64(len(data)))
	// A new executor that starts at the frontier. What executed here but is not covered
	// by the frontier (EPaxos: the sender may be behind in a row where this replica is
	// ahead of its last Compact) executes again on top of the snapshot: the store lost
	// it. Its dependencies are covered or executed again too (they executed before it),
	// and nothing the snapshot holds conflicts with it and follows it (that would depend
	// on it, so the sender would have executed it). What waited in the old executor and
	// lies above the frontier waits again (in ID order, so that runs are reproducible).
	r.exec = executor.New(executor.Config{Apply: r.apply})
	r.exec.Restore(f)
	again := r.execLog
	r.execLog = nil
	for i := range again {
		if !covered(f, again[i].ID) {
			r.exec.Add(again[i])
		}
	}
	ids := make([]protocol.InstanceID, 0, len(r.waiting))
	for id := range r.waiting {
		ids = append(ids, id)
	}
	slices.SortFunc(ids, func(a, b protocol.InstanceID) int {
		if a.Replica != b.Replica {
			return cmp.Compare(a.Replica, b.Replica)
		}
		return cmp.Compare(a.Num, b.Num)
	})
	for _, id := range ids {
		if covered(f, id) {
			delete(r.waiting, id) // executed by the snapshot; its client retries and is deduplicated
			continue
		}
		r.exec.Add(r.waiting[id].inst)
	}
	return true, true, name, nil
}

// logExecuted remembers an executed instance until a snapshot covers it (installSnapshot
// may have to execute it again). inst.Deps belongs to the executor: copied.
func (r *Replica) logExecuted(inst *protocol.Instance) {
	e := *inst
	e.Deps = slices.Clone(inst.Deps)
	r.execLog = append(r.execLog, e)
}

// pruneExecLog forgets the executed instances frontier f covers.
func (r *Replica) pruneExecLog(f []protocol.InstanceID) {
	k := 0
	for i := range r.execLog {
		if !covered(f, r.execLog[i].ID) {
			r.execLog[k] = r.execLog[i]
			k++
		}
	}
	clear(r.execLog[k:])
	r.execLog = r.execLog[:k]
}

// covered reports whether frontier f (prefix semantics) covers id.
func covered(f []protocol.InstanceID, id protocol.InstanceID) bool {
	for _, d := range f {
		if d.Replica == id.Replica {
			return id.Num <= d.Num
		}
	}
	return false
}
