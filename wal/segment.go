package wal

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/parliament-lab/parliament/protocol"
	"github.com/parliament-lab/parliament/wire"
)

// On-disk layout (docs/wal.md):
//
//	dir/NNNNNNNNNNNNNNNN.wal   segments, N = 16 hexadecimal digits, increasing
//	dir/LOCK                   flock'ed by the process that has the log open
//
// A segment is a sequence of frames
//
//	uint32 LE length | uint32 LE CRC32C(length bytes ‖ payload) | payload (wire.AppendRecord)
//
// A checkpoint segment (written by Truncate) starts with the 8-byte marker
// 00 00 00 00 | CRC32C("parliament wal checkpoint"): a frame of length 0, which no record
// can have. It makes every lower-numbered segment obsolete.

const (
	segmentExt  = ".wal"
	tmpExt      = ".tmp"
	frameHeader = 8
	// MaxRecordSize bounds the encoded size of one record; Append refuses larger ones and
	// recovery treats a larger length as damage.
	MaxRecordSize = wire.DefaultMaxFrame
	// DefaultSegmentSize is the size at which Append starts a new segment.
	DefaultSegmentSize = 64 << 20
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// checkpointMarker opens every segment written by Truncate.
var checkpointMarker = func() [frameHeader]byte {
	var m [frameHeader]byte
	binary.LittleEndian.PutUint32(m[4:], crc32.Checksum([]byte("parliament wal checkpoint"), castagnoli))
	return m
}()

// ErrCorrupt is matched (errors.Is) by the *CorruptError Open returns when damage lies
// before the tail of the log.
var ErrCorrupt = errors.New("wal: corrupt")

// ErrRecordTooLarge: a record encodes to more than MaxRecordSize bytes.
var ErrRecordTooLarge = errors.New("wal: record too large")

// ErrClosed: the log (or group committer) was closed.
var ErrClosed = errors.New("wal: closed")

// CorruptError names the damaged segment and byte offset.
type CorruptError struct {
	File   string // path of the segment
	Offset int64  // byte offset of the first bad frame
	Reason string
}

func (e *CorruptError) Error() string {
	return fmt.Sprintf("wal: %s: offset %d: %s", e.File, e.Offset, e.Reason)
}

// Is makes errors.Is(err, ErrCorrupt) true.
func (e *CorruptError) Is(target error) bool { return target == ErrCorrupt }

func segmentName(seq uint64) string { return fmt.Sprintf("%016x%s", seq, segmentExt) }

// parseSegmentName returns the sequence number of a segment file name.
func parseSegmentName(name string) (uint64, bool) {
	hex, ok := strings.CutSuffix(name, segmentExt)
	if !ok || len(hex) != 16 {
		return 0, false
	}
	seq, err := strconv.ParseUint(hex, 16, 64)
	return seq, err == nil
}

// listSegments returns the sequence numbers of the segments in dir, ascending.
func listSegments(dir string) ([]uint64, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var seqs []uint64
	for _, e := range entries {
		if seq, ok := parseSegmentName(e.Name()); ok && e.Type().IsRegular() {
			seqs = append(seqs, seq)
		}
	}
	sort.Slice(seqs, func(i, j int) bool { return seqs[i] < seqs[j] })
	return seqs, nil
}

// appendFrame appends one framed record to dst.
func appendFrame(dst []byte, r *protocol.Record) ([]byte, error) {
	start := len(dst)
	dst = append(dst, 0, 0, 0, 0, 0, 0, 0, 0)
	dst = wire.AppendRecord(dst, r)
	n := len(dst) - start - frameHeader
	if n > MaxRecordSize {
		return dst[:start], fmt.Errorf("%w: %d bytes (max %d)", ErrRecordTooLarge, n, MaxRecordSize)
	}
	binary.LittleEndian.PutUint32(dst[start:], uint32(n))
	crc := crc32.Update(0, castagnoli, dst[start:start+4])
	crc = crc32.Update(crc, castagnoli, dst[start+frameHeader:])
	binary.LittleEndian.PutUint32(dst[start+4:], crc)
	return dst, nil
}

// frameAt checks the frame at b[off:]: it returns the payload when the length is
// plausible and the checksum matches, or why not.
func frameAt(b []byte, off int) (payload []byte, reason string) {
	rest := len(b) - off
	if rest < frameHeader {
		return nil, fmt.Sprintf("torn frame header (%d of %d bytes)", rest, frameHeader)
	}
	n := int64(binary.LittleEndian.Uint32(b[off:]))
	if n == 0 {
		return nil, "zero frame length"
	}
	if n > MaxRecordSize {
		return nil, fmt.Sprintf("frame length %d exceeds maximum %d", n, MaxRecordSize)
	}
	if n > int64(rest-frameHeader) {
		return nil, fmt.Sprintf("frame length %d runs past the end of the file (%d bytes left)", n, rest-frameHeader)
	}
	p := b[off+frameHeader : off+frameHeader+int(n)]
	crc := crc32.Update(0, castagnoli, b[off:off+4])
	crc = crc32.Update(crc, castagnoli, p)
	if want := binary.LittleEndian.Uint32(b[off+4:]); crc != want {
		return nil, fmt.Sprintf("checksum mismatch (stored %#08x, computed %#08x)", want, crc)
	}
	return p, ""
}

// SyncDir fsyncs a directory, making the creation, rename or removal of its entries
// durable.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

func segmentPath(dir string, seq uint64) string { return filepath.Join(dir, segmentName(seq)) }
