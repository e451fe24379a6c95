// Package wal is Parliament's write-ahead log: the records an engine asks to persist
// (protocol.Ready.Persist) are appended to segment files, made durable with one fsync per
// batch (group commit), and handed back in order by Open after a crash. docs/wal.md
// describes the format, the guarantees and the recovery rules.
//
// A Log is not safe for concurrent use: one goroutine (the replica's event loop) owns it.
// GroupCommitter wraps a Log for concurrent committers.
package wal

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"syscall"

	"github.com/parliament-lab/parliament/protocol"
)

// Options configure a Log. The zero value is valid.
type Options struct {
	// SegmentSize is the size after which Append starts a new segment; 0 means
	// DefaultSegmentSize. A segment exceeds it by at most one batch.
	SegmentSize int64
	// NoSync skips every fsync (Sync still writes, recovery still repairs): for
	// protocol-only experiments and tests, never for a replica that claims durability.
	NoSync bool
	// DropCorruptTail makes recovery cut the last segment at its first bad frame even when
	// valid frames follow it (which Open otherwise refuses as damage in the middle). An
	// operator's override after such a refusal, for example when the kernel persisted
	// unsynced pages out of order before a crash: the dropped frames may include
	// acknowledged records.
	DropCorruptTail bool
	// Logger receives recovery reports; nil discards.
	Logger *slog.Logger
}

// Stats are counters since Open.
type Stats struct {
	Records   uint64 // records appended
	Bytes     uint64 // bytes appended (frames included)
	Syncs     uint64 // fsyncs that made appended records durable (Sync calls with work to do)
	Segments  uint64 // segments started (rotation and truncation)
	Truncates uint64 // Truncate calls
}

// flushSize is how much Append buffers before it writes (without fsync) to the file, so
// that memory stays bounded between Syncs.
const flushSize = 1 << 20

// Log is an open write-ahead log.
type Log struct {
	dir   string
	opts  Options
	log   *slog.Logger
	lock  *os.File // flock'ed LOCK file
	f     *os.File // current (last) segment, opened for appending
	seq   uint64   // its sequence number
	size  int64    // its size including buffered bytes
	buf   []byte   // frames appended but not yet written to f
	dirty bool     // bytes written to f since the last fsync
	err   error    // sticky: after a failed write or fsync nothing more is promised
	stats Stats
}

// Open opens (creating if needed) the log in dir and recovers it: it returns every record
// that was appended and synced before, in order, and what it found. A torn or corrupt
// tail of the last segment (the write a crash interrupted) is cut off and reported; damage
// anywhere else refuses to open with a *CorruptError (errors.Is(err, ErrCorrupt)) naming
// the file and offset, rather than silently losing the records after it. Records alias
// one buffer per segment; the caller owns them.
func Open(dir string, opts Options) (*Log, []protocol.Record, *RecoveryReport, error) {
	if opts.SegmentSize <= 0 {
		opts.SegmentSize = DefaultSegmentSize
	}
	l := &Log{dir: dir, opts: opts, log: opts.Logger}
	if l.log == nil {
		l.log = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, nil, nil, fmt.Errorf("wal: %w", err)
	}
	lock, err := lockDir(dir)
	if err != nil {
		return nil, nil, nil, err
	}
	l.lock = lock
	recs, seq, size, rep, err := recoverDir(dir, opts.NoSync, opts.DropCorruptTail)
	if err != nil {
		l.lock.Close()
		return nil, nil, nil, err
	}
	if seq == 0 {
		err = l.startSegment(1, nil)
	} else {
		l.seq, l.size = seq, size
		l.f, err = os.OpenFile(segmentPath(dir, seq), os.O_WRONLY|os.O_APPEND, 0)
	}
	if err != nil {
		l.lock.Close()
		return nil, nil, nil, fmt.Errorf("wal: %w", err)
	}
	if rep.Torn {
		l.log.Warn("wal: torn tail cut off", "file", rep.File, "offset", rep.Offset, "dropped", rep.Dropped, "reason", rep.Reason)
	}
	l.log.Info("wal: recovered", "dir", dir, "report", rep.String())
	return l, recs, rep, nil
}

// lockDir keeps a second process from opening the same log.
func lockDir(dir string) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(dir, "LOCK"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("wal: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return nil, fmt.Errorf("wal: %s is in use by another process: %w", dir, err)
	}
	return f, nil
}

// Append buffers recs at the end of the log. It does not fsync: records are durable only
// once a later Sync returns nil. The caller may reuse recs when Append returns. A record
// that encodes to more than MaxRecordSize fails with ErrRecordTooLarge; the records before
// it stay appended.
func (l *Log) Append(recs []protocol.Record) error {
	if l.err != nil {
		return l.err
	}
	for i := range recs {
		start := len(l.buf)
		var err error
		if l.buf, err = appendFrame(l.buf, &recs[i]); err != nil {
			return err // nothing was added for this record
		}
		n := int64(len(l.buf) - start)
		if l.size > 0 && l.size+n > l.opts.SegmentSize {
			// The frame goes to a new segment; everything before it stays in the old one.
			frame := append([]byte(nil), l.buf[start:]...)
			l.buf = l.buf[:start]
			if err := l.rotate(); err != nil {
				return err
			}
			l.buf = append(l.buf, frame...)
		}
		l.size += n
		l.stats.Records++
		l.stats.Bytes += uint64(n)
	}
	if len(l.buf) >= flushSize {
		return l.write()
	}
	return nil
}

// appendFrames adds pre-encoded frames (a GroupCommitter batch), keeping them in one
// segment.
func (l *Log) appendFrames(frames []byte, records int) error {
	if l.err != nil {
		return l.err
	}
	n := int64(len(frames))
	if l.size > 0 && l.size+n > l.opts.SegmentSize {
		if err := l.rotate(); err != nil {
			return err
		}
	}
	l.size += n
	l.stats.Records += uint64(records)
	l.stats.Bytes += uint64(n)
	if len(l.buf) > 0 {
		l.buf = append(l.buf, frames...)
		return l.write()
	}
	// Nothing buffered: write the batch as it is, saving a copy.
	if _, err := l.f.Write(frames); err != nil {
		return l.fail(fmt.Errorf("wal: write %s: %w", l.f.Name(), err))
	}
	l.dirty = true
	return nil
}

// write hands the buffered frames to the file (no fsync).
func (l *Log) write() error {
	if l.err != nil {
		return l.err
	}
	if len(l.buf) == 0 {
		return nil
	}
	if _, err := l.f.Write(l.buf); err != nil {
		return l.fail(fmt.Errorf("wal: write %s: %w", l.f.Name(), err))
	}
	l.buf = l.buf[:0]
	l.dirty = true
	return nil
}

// fail makes err sticky: after a failed write or fsync the kernel may have dropped the
// data (fsyncgate), so the log refuses all further work and the replica must restart and
// recover from what is really on disk.
func (l *Log) fail(err error) error {
	l.err = err
	return err
}

// Sync makes everything appended so far durable with one fsync (group commit: call it
// once after appending all records of a Ready, or of several Readys).
func (l *Log) Sync() error {
	if err := l.write(); err != nil {
		return err
	}
	if !l.dirty {
		return nil
	}
	if !l.opts.NoSync {
		if err := l.f.Sync(); err != nil {
			return l.fail(fmt.Errorf("wal: fsync %s: %w", l.f.Name(), err))
		}
	}
	l.dirty = false
	l.stats.Syncs++
	return nil
}

// rotate makes the current segment durable and starts the next one. The old segment is
// fsynced first, so a later segment never holds records that an earlier one lost.
func (l *Log) rotate() error {
	if err := l.Sync(); err != nil {
		return err
	}
	if err := l.f.Close(); err != nil {
		return l.fail(fmt.Errorf("wal: close %s: %w", l.f.Name(), err))
	}
	l.f = nil
	if err := l.startSegment(l.seq+1, nil); err != nil {
		return l.fail(fmt.Errorf("wal: %w", err))
	}
	return nil
}

// startSegment creates segment seq and makes its directory entry durable. With a non-nil
// content (a checkpoint) the segment is written to a temporary file, fsynced and renamed,
// so that it appears complete or not at all.
func (l *Log) startSegment(seq uint64, content []byte) error {
	path := segmentPath(l.dir, seq)
	if content != nil {
		tmp := path + tmpExt
		if err := WriteFileSync(tmp, content, l.opts.NoSync); err != nil {
			return err
		}
		if err := os.Rename(tmp, path); err != nil {
			return err
		}
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	if !l.opts.NoSync {
		if err := SyncDir(l.dir); err != nil {
			f.Close()
			return err
		}
	}
	l.f, l.seq, l.size, l.dirty = f, seq, int64(len(content)), false
	l.stats.Segments++
	return nil
}

// WriteFileSync writes b to path (created or truncated) and, unless noSync, fsyncs it
// before closing. Callers that replace a file atomically write a temporary name with it,
// rename, then SyncDir.
func WriteFileSync(path string, b []byte, noSync bool) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	return syncClose(f, noSync)
}

// syncClose fsyncs f (unless noSync) and closes it, reporting the first error.
func syncClose(f *os.File, noSync bool) error {
	if !noSync {
		if err := f.Sync(); err != nil {
			f.Close()
			return err
		}
	}
	return f.Close()
}

// Truncate replaces the whole log by live: the records that rebuild the current state
// (for example a RecordSnapshot followed by the instances it does not cover and the
// latest ballot). It writes them into a new checkpoint segment, durably, then deletes
// every older segment. The switch is atomic: a crash at any point recovers either the old
// log or exactly live. Records appended before Truncate but not in live are gone.
func (l *Log) Truncate(live []protocol.Record) error {
	if l.err != nil {
		return l.err
	}
	content := append([]byte(nil), checkpointMarker[:]...)
	for i := range live {
		var err error
		if content, err = appendFrame(content, &live[i]); err != nil {
			return err
		}
	}
	// Before the switch the old log must be complete as promised: flush what is buffered.
	if err := l.Sync(); err != nil {
		return err
	}
	old := l.seq
	if err := l.f.Close(); err != nil {
		return l.fail(fmt.Errorf("wal: close %s: %w", l.f.Name(), err))
	}
	l.f = nil
	if err := l.startSegment(old+1, content); err != nil {
		return l.fail(fmt.Errorf("wal: truncate: %w", err))
	}
	// The checkpoint is durable; older segments are garbage now (recovery would skip and
	// delete them too).
	seqs, err := listSegments(l.dir)
	if err != nil {
		return l.fail(fmt.Errorf("wal: truncate: %w", err))
	}
	for _, s := range seqs {
		if s < l.seq {
			if err := os.Remove(segmentPath(l.dir, s)); err != nil {
				return l.fail(fmt.Errorf("wal: truncate: %w", err))
			}
		}
	}
	if !l.opts.NoSync {
		if err := SyncDir(l.dir); err != nil {
			return l.fail(fmt.Errorf("wal: truncate: %w", err))
		}
	}
	l.stats.Records += uint64(len(live))
	l.stats.Bytes += uint64(len(content))
	l.stats.Truncates++
	return nil
}

// Stats returns counters since Open.
func (l *Log) Stats() Stats { return l.stats }

// Dir returns the log's directory.
func (l *Log) Dir() string { return l.dir }

// Close syncs and closes the log. It is safe to call twice.
func (l *Log) Close() error {
	if l.lock == nil {
		return nil
	}
	var err error
	if l.f != nil {
		if l.err == nil {
			err = l.Sync()
		}
		if cerr := l.f.Close(); err == nil {
			err = cerr
		}
		l.f = nil
	}
	if cerr := l.lock.Close(); err == nil {
		err = cerr
	}
	l.lock = nil
	if l.err == nil {
		l.err = ErrClosed
	}
	if errors.Is(err, ErrClosed) {
		err = nil
	}
	return err
}
