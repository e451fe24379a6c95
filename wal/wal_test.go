package wal

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/parliament-lab/parliament/protocol"
)

// instanceRecord is a typical EPaxos instance record: ncmds PUTs of 16-byte values with a
// dependency on each row of a 5-replica cluster.
func instanceRecord(num uint64, ncmds int) protocol.Record {
	cmds := make([]protocol.Command, ncmds)
	for i := range cmds {
		cmds[i] = protocol.Command{ClientID: 100 + uint64(i%4), Seq: num*100 + uint64(i), Op: protocol.OpPut,
			Key: []byte(fmt.Sprintf("key-%04d", i)), Value: []byte(fmt.Sprintf("value-%010d", num))}
	}
	return protocol.Record{Type: protocol.RecordInstance, Inst: protocol.Instance{
		ID: protocol.InstanceID{Replica: 2, Num: num}, Status: protocol.StatusCommitted,
		Ballot: protocol.Ballot{Replica: 2}, VBallot: protocol.Ballot{Replica: 2}, Seq: num + 1,
		Deps: []protocol.InstanceID{{Replica: 1, Num: num}, {Replica: 2, Num: num - 1}, {Replica: 3, Num: 7}, {Replica: 4, Num: 1}, {Replica: 5, Num: num / 2}},
		Cmds: cmds,
	}}
}

func records(from, n int) []protocol.Record {
	recs := make([]protocol.Record, n)
	for i := range recs {
		switch num := uint64(from + i); num % 5 {
		case 0:
			recs[i] = protocol.Record{Type: protocol.RecordBallot, Ballot: protocol.Ballot{Round: uint32(num), Replica: 1}}
		case 1:
			recs[i] = protocol.Record{Type: protocol.RecordCommitIndex, Index: num}
		default:
			recs[i] = instanceRecord(num, int(num%7))
		}
	}
	return recs
}

func diffRecords(t *testing.T, want, got []protocol.Record) {
	t.Helper()
	if diff := cmp.Diff(want, got, cmpopts.EquateEmpty()); diff != "" {
		t.Fatalf("recovered records differ (-want +got):\n%s", diff)
	}
}

func mustOpen(t *testing.T, dir string, opts Options) (*Log, []protocol.Record, *RecoveryReport) {
	t.Helper()
	l, recs, rep, err := Open(dir, opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { l.Close() })
	return l, recs, rep
}

func appendSync(t *testing.T, l *Log, recs []protocol.Record) {
	t.Helper()
	if err := l.Append(recs); err != nil {
		t.Fatal(err)
	}
	if err := l.Sync(); err != nil {
		t.Fatal(err)
	}
}

func segmentFiles(t *testing.T, dir string) []string {
	t.Helper()
	seqs, err := listSegments(dir)
	if err != nil {
		t.Fatal(err)
	}
	var paths []string
	for _, s := range seqs {
		paths = append(paths, segmentPath(dir, s))
	}
	return paths
}

func TestRoundTripAcrossRotations(t *testing.T) {
	dir := t.TempDir()
	opts := Options{SegmentSize: 4 << 10, NoSync: true} // fsync itself is not under test here
	l, recs, rep := mustOpen(t, dir, opts)
	if len(recs) != 0 || rep.Torn {
		t.Fatalf("fresh log: %d records, report %v", len(recs), rep)
	}
	var want []protocol.Record
	for batch := range 40 {
		b := records(batch*13, 13)
		appendSync(t, l, b)
		want = append(want, b...)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	files := segmentFiles(t, dir)
	if len(files) < 5 {
		t.Fatalf("%d segments, want rotation into several", len(files))
	}
	for _, f := range files[:len(files)-1] {
		if st, _ := os.Stat(f); st.Size() > opts.SegmentSize {
			t.Errorf("%s: %d bytes exceeds segment size %d", f, st.Size(), opts.SegmentSize)
		}
	}
	l2, got, rep := mustOpen(t, dir, opts)
	diffRecords(t, want, got)
	if rep.Torn || rep.Segments != len(files) || rep.Records != len(want) {
		t.Fatalf("report %+v", rep)
	}
	// Appending after reopen continues the log.
	more := records(10000, 3)
	appendSync(t, l2, more)
	l2.Close()
	_, got, _ = mustOpen(t, dir, opts)
	diffRecords(t, append(want, more...), got)
}

func TestUnsyncedAppendsBufferUntilSync(t *testing.T) {
	dir := t.TempDir()
	l, _, _ := mustOpen(t, dir, Options{})
	if err := l.Append(records(0, 10)); err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(segmentFiles(t, dir)[0]); st.Size() != 0 {
		t.Fatalf("Append wrote %d bytes before Sync; expected buffering", st.Size())
	}
	if err := l.Sync(); err != nil {
		t.Fatal(err)
	}
	if s := l.Stats(); s.Syncs != 1 || s.Records != 10 {
		t.Fatalf("stats %+v", s)
	}
	if err := l.Sync(); err != nil || l.Stats().Syncs != 1 {
		t.Fatalf("empty Sync fsynced again: %v %+v", err, l.Stats())
	}
}

// writeLog creates a log of n records (the last one an instance record) and returns its
// records and the offset of the last frame in the last segment.
func writeLog(t *testing.T, dir string, n int, opts Options) ([]protocol.Record, int64) {
	t.Helper()
	l, _, _, err := Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	recs := records(0, n-1)
	appendSync(t, l, recs)
	files := segmentFiles(t, dir)
	st, err := os.Stat(files[len(files)-1])
	if err != nil {
		t.Fatal(err)
	}
	last := instanceRecord(99, 1)
	appendSync(t, l, []protocol.Record{last})
	if len(segmentFiles(t, dir)) != len(files) {
		t.Fatal("last record rotated; use a larger segment")
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	return append(recs, last), st.Size()
}

func copyDir(t *testing.T, src string) string {
	t.Helper()
	dst := t.TempDir()
	entries, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(src, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dst, e.Name()), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dst
}

// TestTornLastRecord cuts the last segment at every byte of its last record: recovery
// keeps every earlier record, reports the torn tail, and the log then appends correctly.
func TestTornLastRecord(t *testing.T) {
	base := t.TempDir()
	opts := Options{NoSync: true}
	want, lastOff := writeLog(t, base, 20, opts)
	last := segmentPath(base, 1)
	full, _ := os.ReadFile(last)
	dir := copyDir(t, base)
	path := segmentPath(dir, 1)
	for cut := lastOff; cut < int64(len(full)); cut++ {
		if err := os.WriteFile(path, full[:cut], 0o644); err != nil {
			t.Fatal(err)
		}
		l, got, rep, err := Open(dir, opts)
		if err != nil {
			t.Fatalf("cut at %d: %v", cut, err)
		}
		diffRecords(t, want[:len(want)-1], got)
		if torn := cut > lastOff; rep.Torn != torn || (torn && (rep.Offset != lastOff || rep.File != path || rep.Dropped != cut-lastOff)) {
			t.Fatalf("cut at %d: report %+v, want torn=%v at %d", cut, rep, torn, lastOff)
		}
		extra := records(500, 2)
		appendSync(t, l, extra)
		l.Close()
		l, got, rep, err = Open(dir, opts)
		if err != nil {
			t.Fatalf("cut at %d, reopen: %v", cut, err)
		}
		diffRecords(t, append(want[:len(want)-1:len(want)-1], extra...), got)
		if rep.Torn {
			t.Fatalf("cut at %d: still torn after repair: %v", cut, rep)
		}
		l.Close()
	}
}

// TestFlippedByteInLastRecord: any flipped byte in the last record loses only that record.
func TestFlippedByteInLastRecord(t *testing.T) {
	base := t.TempDir()
	opts := Options{NoSync: true}
	want, lastOff := writeLog(t, base, 20, opts)
	full, _ := os.ReadFile(segmentPath(base, 1))
	dir := copyDir(t, base)
	for pos := lastOff; pos < int64(len(full)); pos++ {
		b := append([]byte(nil), full...)
		b[pos] ^= 0x10
		if err := os.WriteFile(segmentPath(dir, 1), b, 0o644); err != nil {
			t.Fatal(err)
		}
		l, got, rep, err := Open(dir, opts)
		if err != nil {
			t.Fatalf("flip at %d: %v", pos, err)
		}
		diffRecords(t, want[:len(want)-1], got)
		if !rep.Torn || rep.Offset != lastOff {
			t.Fatalf("flip at %d: report %+v", pos, rep)
		}
		l.Close()
	}
}

func TestZeroTailAndEmptyLastSegment(t *testing.T) {
	dir := t.TempDir()
	want, _ := writeLog(t, dir, 10, Options{})
	// A tail of zeros (as a crash after a file-size update but before the data leaves).
	f, _ := os.OpenFile(segmentPath(dir, 1), os.O_WRONLY|os.O_APPEND, 0)
	f.Write(make([]byte, 4096))
	f.Close()
	// An empty next segment (a crash right after rotation created it).
	if err := os.WriteFile(segmentPath(dir, 2), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	_, _, _, err := Open(dir, Options{})
	if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), segmentName(1)) {
		t.Fatalf("zeros in a segment before the last one: got %v, want ErrCorrupt naming %s", err, segmentName(1))
	}
	// Zeros in the last segment are a torn tail; an empty last segment is fine.
	os.Remove(segmentPath(dir, 2))
	l, got, rep := mustOpen(t, dir, Options{})
	diffRecords(t, want, got)
	if !rep.Torn || rep.Dropped != 4096 {
		t.Fatalf("report %+v", rep)
	}
	l.Close()
	os.WriteFile(segmentPath(dir, 2), nil, 0o644)
	l, got, rep = mustOpen(t, dir, Options{})
	diffRecords(t, want, got)
	if rep.Torn || rep.Segments != 2 {
		t.Fatalf("report %+v", rep)
	}
	appendSync(t, l, records(100, 1))
	l.Close()
	_, got, _ = mustOpen(t, dir, Options{})
	diffRecords(t, append(want, records(100, 1)...), got)
}

// TestDamageInTheMiddleRefuses: a bad record followed by good ones, or damage in a segment
// before the last, refuses to open with the file and offset in the error.
func TestDamageInTheMiddleRefuses(t *testing.T) {
	base := t.TempDir()
	opts := Options{SegmentSize: 2 << 10, NoSync: true}
	l, _, _ := mustOpen(t, base, opts)
	recs := records(0, 60)
	for i := range recs {
		appendSync(t, l, recs[i:i+1])
	}
	l.Close()
	files := segmentFiles(t, base)
	if len(files) < 3 {
		t.Fatalf("%d segments", len(files))
	}
	lastSeq, _ := parseSegmentName(filepath.Base(files[len(files)-1]))
	tests := []struct {
		name string
		seq  uint64
		off  func(b []byte) int // frame offset to damage
		pos  int                // byte within that frame
	}{
		{"last-segment-first-record", lastSeq, func([]byte) int { return 0 }, 12},
		{"last-segment-length-field", lastSeq, func([]byte) int { return 0 }, 1},
		{"first-segment-middle", 1, func(b []byte) int { return frameOffsets(b)[2] }, 9},
		{"first-segment-last-record", 1, func(b []byte) int { o := frameOffsets(b); return o[len(o)-1] }, 10},
		{"second-segment-checksum", 2, func([]byte) int { return 0 }, 5},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := copyDir(t, base)
			path := segmentPath(dir, tt.seq)
			b, _ := os.ReadFile(path)
			off := tt.off(b)
			b[off+tt.pos] ^= 0xff
			os.WriteFile(path, b, 0o644)
			_, _, _, err := Open(dir, opts)
			var ce *CorruptError
			if !errors.As(err, &ce) || !errors.Is(err, ErrCorrupt) {
				t.Fatalf("got %v, want *CorruptError", err)
			}
			if ce.File != path || ce.Offset != int64(off) {
				t.Fatalf("error names %s offset %d, want %s offset %d", ce.File, ce.Offset, path, off)
			}
			if msg := err.Error(); !strings.Contains(msg, path) || !strings.Contains(msg, fmt.Sprintf("offset %d", off)) {
				t.Fatalf("message %q lacks file and offset", msg)
			}
			// Nothing was repaired: the damaged file is untouched.
			if b2, _ := os.ReadFile(path); len(b2) != len(b) {
				t.Fatalf("refusing Open changed %s", path)
			}
			// The operator's override cuts the last segment there; it cannot help with
			// damage in an earlier one.
			o := opts
			o.DropCorruptTail = true
			l, _, rep, err := Open(dir, o)
			if tt.seq != lastSeq {
				if !errors.Is(err, ErrCorrupt) {
					t.Fatalf("DropCorruptTail on an earlier segment: %v", err)
				}
				return
			}
			if err != nil || !rep.Torn || rep.Offset != int64(off) {
				t.Fatalf("DropCorruptTail: %v, report %+v", err, rep)
			}
			l.Close()
		})
	}
}

// frameOffsets lists the frame offsets of a valid segment.
func frameOffsets(b []byte) []int {
	var offs []int
	for off := 0; off < len(b); {
		p, reason := frameAt(b, off)
		if reason != "" {
			break
		}
		offs = append(offs, off)
		off += frameHeader + len(p)
	}
	return offs
}

func TestTruncate(t *testing.T) {
	dir := t.TempDir()
	opts := Options{SegmentSize: 2 << 10}
	l, _, _ := mustOpen(t, dir, opts)
	appendSync(t, l, records(0, 50))
	before := segmentFiles(t, dir)
	live := []protocol.Record{
		{Type: protocol.RecordSnapshot, Index: 49, Inst: protocol.Instance{Deps: []protocol.InstanceID{{Replica: 2, Num: 49}}}},
		{Type: protocol.RecordBallot, Ballot: protocol.Ballot{Round: 9, Replica: 3}},
	}
	if err := l.Append(records(50, 2)); err != nil { // appended, not in live: dropped
		t.Fatal(err)
	}
	if err := l.Truncate(live); err != nil {
		t.Fatal(err)
	}
	after := segmentFiles(t, dir)
	if len(after) != 1 || after[0] <= before[len(before)-1] {
		t.Fatalf("segments after Truncate: %v (before %v)", after, before)
	}
	more := records(100, 30)
	appendSync(t, l, more)
	l.Close()
	_, got, rep := mustOpen(t, dir, opts)
	diffRecords(t, append(append([]protocol.Record(nil), live...), more...), got)
	if rep.Torn || rep.Obsolete != 0 {
		t.Fatalf("report %+v", rep)
	}
}

// TestTruncateCrash simulates crashes inside Truncate: before the rename (a leftover
// temporary file) the old log survives whole; after it (old segments not yet deleted)
// exactly the live records come back.
func TestTruncateCrash(t *testing.T) {
	dir := t.TempDir()
	l, _, _ := mustOpen(t, dir, Options{SegmentSize: 1 << 10})
	old := records(0, 30)
	appendSync(t, l, old)
	l.Close()
	oldFiles := map[string][]byte{}
	for _, f := range segmentFiles(t, dir) {
		oldFiles[f], _ = os.ReadFile(f)
	}
	live := records(1000, 3)

	// Crash before the rename: a torn temporary file.
	crashed := copyDir(t, dir)
	seqs, _ := listSegments(crashed)
	tmp := segmentPath(crashed, seqs[len(seqs)-1]+1) + tmpExt
	os.WriteFile(tmp, append(checkpointMarker[:], 1, 2, 3), 0o644)
	_, got, _ := mustOpen(t, crashed, Options{})
	diffRecords(t, old, got)
	if _, err := os.Stat(tmp); !os.IsNotExist(err) {
		t.Fatalf("leftover %s not removed", tmp)
	}

	// Crash after the rename, before the deletions.
	l, _, _ = mustOpen(t, dir, Options{})
	if err := l.Truncate(live); err != nil {
		t.Fatal(err)
	}
	l.Close()
	for f, b := range oldFiles {
		os.WriteFile(f, b, 0o644)
	}
	_, got, rep := mustOpen(t, dir, Options{})
	diffRecords(t, live, got)
	if rep.Obsolete != len(oldFiles) {
		t.Fatalf("report %+v, want %d obsolete", rep, len(oldFiles))
	}
	if n := len(segmentFiles(t, dir)); n != 1 {
		t.Fatalf("%d segments left", n)
	}
}

func TestRecordThatPassesChecksumButDoesNotDecodeRefuses(t *testing.T) {
	dir := t.TempDir()
	writeLog(t, dir, 3, Options{})
	path := segmentPath(dir, 1)
	b, _ := os.ReadFile(path)
	// A frame with a valid checksum around an unknown record type, then a good record.
	bad := []byte{9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}
	frame := append(make([]byte, frameHeader), bad...)
	putFrameHeader(frame)
	good, _ := appendFrame(nil, &protocol.Record{Type: protocol.RecordCommitIndex, Index: 5})
	b = append(append(b, frame...), good...)
	os.WriteFile(path, b, 0o644)
	if _, _, _, err := Open(dir, Options{}); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "does not decode") {
		t.Fatalf("got %v", err)
	}
}

func putFrameHeader(frame []byte) {
	p := frame[frameHeader:]
	frame[0], frame[1], frame[2], frame[3] = byte(len(p)), byte(len(p)>>8), byte(len(p)>>16), byte(len(p)>>24)
	crc := crcOf(frame[:4], p)
	frame[4], frame[5], frame[6], frame[7] = byte(crc), byte(crc>>8), byte(crc>>16), byte(crc>>24)
}

func TestSecondOpenIsRefused(t *testing.T) {
	dir := t.TempDir()
	mustOpen(t, dir, Options{})
	if _, _, _, err := Open(dir, Options{}); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("second Open: %v", err)
	}
}

func TestRecordTooLarge(t *testing.T) {
	l, _, _ := mustOpen(t, t.TempDir(), Options{})
	big := protocol.Record{Type: protocol.RecordInstance, Inst: protocol.Instance{Cmds: []protocol.Command{{Op: protocol.OpPut, Value: make([]byte, MaxRecordSize)}}}}
	ok := records(0, 1)
	if err := l.Append([]protocol.Record{ok[0], big}); !errors.Is(err, ErrRecordTooLarge) {
		t.Fatalf("got %v", err)
	}
	// The log stays usable; the record before the big one was appended.
	appendSync(t, l, records(1, 1))
	if s := l.Stats(); s.Records != 2 {
		t.Fatalf("stats %+v", s)
	}
}

// TestGroupCommitSharesFsyncs: commits that arrive while the worker is busy share one
// fsync. The worker is held by a Do task until all committers have queued, so the test
// does not depend on timing.
func TestGroupCommitSharesFsyncs(t *testing.T) {
	dir := t.TempDir()
	l, _, _ := mustOpen(t, dir, Options{})
	g := NewGroupCommitter(l)
	defer g.Close()

	release := make(chan struct{})
	held := make(chan struct{})
	go g.Do(func(*Log) error { close(held); <-release; return nil })
	<-held
	const n = 16
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = g.Commit(records(i*10, 3))
		}()
	}
	waitQueued(t, g, n)
	close(release)
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("committer %d: %v", i, err)
		}
	}
	if s := g.Stats(); s.Syncs != 1 || s.Records != 3*n {
		t.Fatalf("stats %+v, want one fsync for %d records", s, 3*n)
	}
	if err := g.Close(); err != nil {
		t.Fatal(err)
	}
	_, got, _ := mustOpen(t, dir, Options{})
	if len(got) != 3*n {
		t.Fatalf("recovered %d records, want %d", len(got), 3*n)
	}
}

func waitQueued(t *testing.T, g *GroupCommitter, n int) {
	t.Helper()
	for {
		g.mu.Lock()
		queued := len(g.waiters)
		g.mu.Unlock()
		if queued == n {
			return
		}
		runtimeGosched()
	}
}

// TestGroupCommitConcurrent: many committers at full speed; every acknowledged record is
// recovered, and fsyncs are shared (Syncs < Records).
func TestGroupCommitConcurrent(t *testing.T) {
	dir := t.TempDir()
	l, _, _ := mustOpen(t, dir, Options{SegmentSize: 64 << 10})
	g := NewGroupCommitter(l)
	const workers, each = 8, 40
	var wg sync.WaitGroup
	var mu sync.Mutex
	acked := map[uint64]bool{}
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				num := uint64(w*1000 + i + 2)
				if err := g.Commit([]protocol.Record{instanceRecord(num, 2)}); err != nil {
					t.Errorf("commit: %v", err)
					return
				}
				mu.Lock()
				acked[num] = true
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	s := g.Stats()
	if s.Records != workers*each || s.Syncs >= s.Records {
		t.Fatalf("stats %+v: want %d records sharing fewer fsyncs", s, workers*each)
	}
	t.Logf("%d records in %d fsyncs (%.1f per fsync)", s.Records, s.Syncs, float64(s.Records)/float64(s.Syncs))
	if err := g.Close(); err != nil {
		t.Fatal(err)
	}
	if err := g.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if err := g.Commit(records(0, 1)); !errors.Is(err, ErrClosed) {
		t.Fatalf("Commit after Close: %v", err)
	}
	_, got, _ := mustOpen(t, dir, Options{})
	for _, r := range got {
		delete(acked, r.Inst.ID.Num)
	}
	if len(acked) != 0 {
		t.Fatalf("%d acknowledged records lost", len(acked))
	}
}

// TestGroupCommitOrderWithDo: a Truncate queued through Do keeps the records committed
// after it was queued.
func TestGroupCommitOrderWithDo(t *testing.T) {
	dir := t.TempDir()
	l, _, _ := mustOpen(t, dir, Options{})
	g := NewGroupCommitter(l)
	defer g.Close()
	release := make(chan struct{})
	held := make(chan struct{})
	go g.Do(func(*Log) error { close(held); <-release; return nil })
	<-held
	before := g.CommitAsync(records(0, 2))
	live := records(500, 1)
	truncated := make(chan error, 1)
	go func() { truncated <- g.Do(func(l *Log) error { return l.Truncate(live) }) }()
	for { // wait until the Do is queued behind the first commit
		g.mu.Lock()
		n := len(g.tasks)
		g.mu.Unlock()
		if n == 1 {
			break
		}
		runtimeGosched()
	}
	after := g.CommitAsync(records(10, 2))
	close(release)
	if err := <-before; err != nil {
		t.Fatal(err)
	}
	if err := <-truncated; err != nil {
		t.Fatal(err)
	}
	if err := <-after; err != nil {
		t.Fatal(err)
	}
	g.Close()
	_, got, _ := mustOpen(t, dir, Options{})
	diffRecords(t, append(live, records(10, 2)...), got)
}
