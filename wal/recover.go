package wal

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/parliament-lab/parliament/protocol"
	"github.com/parliament-lab/parliament/wire"
)

// RecoveryReport says what Open found.
type RecoveryReport struct {
	Segments int   // segments read
	Obsolete int   // segments deleted because a later checkpoint superseded them
	Records  int   // records recovered
	Bytes    int64 // bytes of valid frames read

	// Torn is set when the last segment ended in a torn or corrupt tail, which Open cut
	// off: File and Offset say where, Dropped how many bytes went, Reason why the first
	// dropped frame was refused.
	Torn    bool
	File    string
	Offset  int64
	Dropped int64
	Reason  string
}

func (r *RecoveryReport) String() string {
	s := fmt.Sprintf("%d records (%d bytes) from %d segments", r.Records, r.Bytes, r.Segments)
	if r.Obsolete > 0 {
		s += fmt.Sprintf(", %d obsolete segments deleted", r.Obsolete)
	}
	if r.Torn {
		s += fmt.Sprintf("; torn tail in %s at offset %d (%s): %d bytes dropped", r.File, r.Offset, r.Reason, r.Dropped)
	}
	return s
}

// recover reads the log in dir, repairing a torn tail. It returns the records, the
// sequence number and size of the last segment (0, 0 when there is none), and the report.
func recoverDir(dir string, noSync, dropCorruptTail bool) (recs []protocol.Record, lastSeq uint64, lastSize int64, rep *RecoveryReport, err error) {
	rep = &RecoveryReport{}
	// Leftovers of a Truncate interrupted before its rename carry nothing that counts.
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, 0, 0, nil, fmt.Errorf("wal: %w", err)
	}
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), segmentExt+tmpExt) {
			if err := os.Remove(filepath.Join(dir, e.Name())); err != nil {
				return nil, 0, 0, nil, fmt.Errorf("wal: remove leftover: %w", err)
			}
		}
	}
	seqs, err := listSegments(dir)
	if err != nil {
		return nil, 0, 0, nil, fmt.Errorf("wal: %w", err)
	}
	if len(seqs) == 0 {
		return nil, 0, 0, rep, nil
	}
	// Read every segment; start from the last checkpoint.
	files := make([][]byte, len(seqs))
	first := 0
	for i, seq := range seqs {
		b, err := os.ReadFile(segmentPath(dir, seq))
		if err != nil {
			return nil, 0, 0, nil, fmt.Errorf("wal: %w", err)
		}
		files[i] = b
		if bytes.HasPrefix(b, checkpointMarker[:]) {
			first = i
		}
	}
	for _, seq := range seqs[:first] {
		if err := os.Remove(segmentPath(dir, seq)); err != nil {
			return nil, 0, 0, nil, fmt.Errorf("wal: remove obsolete segment: %w", err)
		}
		rep.Obsolete++
	}
	if rep.Obsolete > 0 && !noSync {
		if err := SyncDir(dir); err != nil {
			return nil, 0, 0, nil, fmt.Errorf("wal: %w", err)
		}
	}
	seqs, files = seqs[first:], files[first:]
	for i, b := range files {
		path := segmentPath(dir, seqs[i])
		last := i == len(files)-1
		rep.Segments++
		off := 0
		if bytes.HasPrefix(b, checkpointMarker[:]) {
			off = frameHeader
		}
		for off < len(b) {
			payload, reason := frameAt(b, off)
			if reason == "" {
				var r protocol.Record
				if err := wire.DecodeRecord(payload, &r); err != nil {
					// The checksum matched, so these are the bytes that were written: a
					// bug or a format change, never a torn write. Do not drop it.
					return nil, 0, 0, nil, &CorruptError{File: path, Offset: int64(off),
						Reason: fmt.Sprintf("record passes its checksum but does not decode: %v", err)}
				}
				recs = append(recs, r)
				rep.Records++
				rep.Bytes += int64(frameHeader + len(payload))
				off += frameHeader + len(payload)
				continue
			}
			if !last {
				return nil, 0, 0, nil, &CorruptError{File: path, Offset: int64(off),
					Reason: reason + "; damage before the last segment, refusing to drop the segments after it"}
			}
			if next := nextValidFrame(b, off+1); next >= 0 && !dropCorruptTail {
				return nil, 0, 0, nil, &CorruptError{File: path, Offset: int64(off),
					Reason: fmt.Sprintf("%s; a valid record follows at offset %d, so this is not a torn tail: refusing to drop it", reason, next)}
			}
			// A torn tail: the last write before a crash. Cut it off for good, so that
			// records appended from now on follow the last good one.
			if err := truncateFile(path, int64(off), noSync); err != nil {
				return nil, 0, 0, nil, fmt.Errorf("wal: cut torn tail of %s at offset %d: %w", path, off, err)
			}
			rep.Torn, rep.File, rep.Offset, rep.Dropped, rep.Reason = true, path, int64(off), int64(len(b)-off), reason
			b = b[:off]
			break
		}
		if last {
			lastSeq, lastSize = seqs[i], int64(len(b))
		}
	}
	return recs, lastSeq, lastSize, rep, nil
}

// nextValidFrame returns the first offset >= from where a frame with a plausible length
// and a matching checksum starts, or -1. Garbage rarely has a length small enough to be
// checked at all, so this is fast on real torn tails.
func nextValidFrame(b []byte, from int) int {
	for off := from; off+frameHeader < len(b); off++ {
		if _, reason := frameAt(b, off); reason == "" {
			return off
		}
	}
	return -1
}

func truncateFile(path string, size int64, noSync bool) error {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	if err := f.Truncate(size); err != nil {
		f.Close()
		return err
	}
	return syncClose(f, noSync)
}
