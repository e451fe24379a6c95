package replica

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"github.com/parliament-lab/parliament/wal"
	"hash/crc32"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/parliament-lab/parliament/protocol"
)

// State-machine snapshot files. Each holds one kv snapshot and the executed frontier it was
// taken at (docs/durability.md):
//
//	magic     "PSNP" (4 bytes), version 1 (1 byte)
//	frontier  uvarint n, then n × (uvarint replica, uvarint num), ascending replica, num > 0
//	data      uvarint length, then the kv.Store snapshot (which carries its own checksum)
//	crc       CRC-32C (Castagnoli) of everything before it, 4 bytes little-endian
//
// Files are named snapshot-<16 hex digits>.snap with increasing numbers and written as
// temp file, fsync, rename, fsync of the directory: a file with the final name is
// complete. The write-ahead log's RecordSnapshot names the frontier of the one to restart
// from; the others are stale and deleted.
const (
	snapMagic   = "PSNP"
	snapVersion = 1
	snapPrefix  = "snapshot-"
	snapExt     = ".snap"
	snapTmpExt  = ".tmp"
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// ErrSnapshotCorrupt is wrapped by the errors of unreadable snapshot files.
var ErrSnapshotCorrupt = errors.New("corrupt snapshot file")

// normFrontier returns f sorted by replica without zero entries (prefix semantics: (R, 0)
// covers nothing), so that frontiers from the executor, an engine and a file compare
// equal when they cover the same instances. Duplicate rows keep their maximum.
func normFrontier(f []protocol.InstanceID) []protocol.InstanceID {
	out := make([]protocol.InstanceID, 0, len(f))
	for _, d := range f {
		if d.Num > 0 {
			out = append(out, d)
		}
	}
	slices.SortFunc(out, func(a, b protocol.InstanceID) int {
		if a.Replica != b.Replica {
			return cmp.Compare(a.Replica, b.Replica)
		}
		return cmp.Compare(b.Num, a.Num) // higher first within a row: Compact keeps it
	})
	return slices.CompactFunc(out, func(a, b protocol.InstanceID) bool { return a.Replica == b.Replica })
}

// sameFrontier compares two normalized frontiers.
func sameFrontier(a, b []protocol.InstanceID) bool { return slices.Equal(a, b) }

func encodeSnapshot(frontier []protocol.InstanceID, data []byte) []byte {
	b := make([]byte, 0, len(data)+16+20*len(frontier))
	b = append(b, snapMagic...)
	b = append(b, snapVersion)
	b = binary.AppendUvarint(b, uint64(len(frontier)))
	for _, d := range frontier {
		b = binary.AppendUvarint(b, uint64(d.Replica))
		b = binary.AppendUvarint(b, d.Num)
	}
	b = binary.AppendUvarint(b, uint64(len(data)))
	b = append(b, data...)
	return binary.LittleEndian.AppendUint32(b, crc32.Checksum(b, castagnoli))
}

// decodeSnapshot parses a snapshot file; the error names the offset of the problem.
func decodeSnapshot(b []byte) (frontier []protocol.InstanceID, data []byte, err error) {
	bad := func(off int, why string) error {
		return fmt.Errorf("%w: offset %d: %s", ErrSnapshotCorrupt, off, why)
	}
	if len(b) < len(snapMagic)+1+4 || string(b[:4]) != snapMagic {
		return nil, nil, bad(0, "not a snapshot file (bad magic)")
	}
	body := b[:len(b)-4]
	if got, want := binary.LittleEndian.Uint32(b[len(b)-4:]), crc32.Checksum(body, castagnoli); got != want {
		return nil, nil, bad(len(b)-4, fmt.Sprintf("checksum mismatch (stored %08x, computed %08x)", got, want))
	}
	if body[4] != snapVersion {
		return nil, nil, bad(4, fmt.Sprintf("unknown version %d", body[4]))
	}
	off := 5
	uv := func(what string) (uint64, error) {
		v, n := binary.Uvarint(body[off:])
		if n <= 0 {
			return 0, bad(off, "bad "+what)
		}
		off += n
		return v, nil
	}
	n, err := uv("frontier length")
	if err != nil {
		return nil, nil, err
	}
	if n > uint64(len(body)) {
		return nil, nil, bad(off, "frontier length too large")
	}
	for i := uint64(0); i < n; i++ {
		r, err := uv("frontier replica")
		if err != nil {
			return nil, nil, err
		}
		num, err := uv("frontier number")
		if err != nil {
			return nil, nil, err
		}
		if r > 1<<32-1 {
			return nil, nil, bad(off, "frontier replica out of range")
		}
		frontier = append(frontier, protocol.InstanceID{Replica: protocol.ReplicaID(r), Num: num})
	}
	size, err := uv("data length")
	if err != nil {
		return nil, nil, err
	}
	if size != uint64(len(body)-off) {
		return nil, nil, bad(off, fmt.Sprintf("data length %d, but %d bytes follow", size, len(body)-off))
	}
	return normFrontier(frontier), body[off:], nil
}

// snapDir keeps the snapshot files of one replica in its data directory.
type snapDir struct {
	dir    string
	noSync bool
	next   uint64 // number of the next file
	cur    string // the file the log's RecordSnapshot names ("" = none yet)
}

func snapName(n uint64) string { return fmt.Sprintf("%s%016x%s", snapPrefix, n, snapExt) }

// listSnapshots returns the numbers of the snapshot files in dir, ascending, after deleting
// leftover temp files (a save that crashed before its rename).
func listSnapshots(dir string) ([]uint64, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var nums []uint64
	for _, e := range ents {
		name := e.Name()
		if !strings.HasPrefix(name, snapPrefix) {
			continue
		}
		if strings.HasSuffix(name, snapTmpExt) {
			if err := os.Remove(filepath.Join(dir, name)); err != nil {
				return nil, err
			}
			continue
		}
		hex, ok := strings.CutSuffix(strings.TrimPrefix(name, snapPrefix), snapExt)
		if !ok {
			continue
		}
		n, err := strconv.ParseUint(hex, 16, 64)
		if err != nil {
			continue
		}
		nums = append(nums, n)
	}
	slices.Sort(nums)
	return nums, nil
}

// openSnapDir finds the snapshot file whose frontier is want (the log's last
// RecordSnapshot; nil when the log has none) and returns its data. Every other snapshot
// file is stale (a snapshot whose log truncation did not happen, or an older one) and is
// deleted. A missing or corrupt wanted snapshot is an error naming the directory or file:
// the log's records after it cannot rebuild the state without it.
func openSnapDir(dir string, want []protocol.InstanceID, noSync bool) (*snapDir, []byte, error) {
	s := &snapDir{dir: dir, noSync: noSync, next: 1}
	nums, err := listSnapshots(dir)
	if err != nil {
		return nil, nil, fmt.Errorf("snapshots: %w", err)
	}
	if len(nums) > 0 {
		s.next = nums[len(nums)-1] + 1
	}
	var data []byte
	var corrupt error
	found := ""
	for i := len(nums) - 1; i >= 0 && len(want) > 0 && found == ""; i-- {
		path := filepath.Join(dir, snapName(nums[i]))
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, nil, fmt.Errorf("snapshots: %w", err)
		}
		f, d, err := decodeSnapshot(b)
		if err != nil {
			if corrupt == nil {
				corrupt = fmt.Errorf("snapshot %s: %w", path, err)
			}
			continue
		}
		if sameFrontier(f, want) {
			found, data = snapName(nums[i]), d
		}
	}
	if len(want) > 0 && found == "" {
		if corrupt != nil {
			return nil, nil, fmt.Errorf("the log starts from the snapshot at frontier %v, which is not readable: %w", want, corrupt)
		}
		return nil, nil, fmt.Errorf("the log starts from the snapshot at frontier %v, but %s has no snapshot file for it", want, dir)
	}
	s.cur = found
	if err := s.removeStale(); err != nil {
		return nil, nil, err
	}
	return s, data, nil
}

// save writes a snapshot file durably (temp, fsync, rename, fsync dir) and returns its
// name. It does not make it current: the log does that (RecordSnapshot), then setCurrent.
func (s *snapDir) save(frontier []protocol.InstanceID, data []byte) (string, error) {
	name := snapName(s.next)
	s.next++
	path := filepath.Join(s.dir, name)
	tmp := path + snapTmpExt
	if err := wal.WriteFileSync(tmp, encodeSnapshot(frontier, data), s.noSync); err != nil {
		return "", fmt.Errorf("snapshot %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return "", fmt.Errorf("snapshot: %w", err)
	}
	if !s.noSync {
		if err := wal.SyncDir(s.dir); err != nil {
			return "", fmt.Errorf("snapshot: fsync %s: %w", s.dir, err)
		}
	}
	return name, nil
}

// setCurrent records that the log now starts from the snapshot in file name, and deletes
// every other snapshot file.
func (s *snapDir) setCurrent(name string) error {
	s.cur = name
	return s.removeStale()
}

func (s *snapDir) removeStale() error {
	nums, err := listSnapshots(s.dir)
	if err != nil {
		return fmt.Errorf("snapshots: %w", err)
	}
	for _, n := range nums {
		if name := snapName(n); name != s.cur {
			if err := os.Remove(filepath.Join(s.dir, name)); err != nil {
				return fmt.Errorf("snapshots: %w", err)
			}
		}
	}
	return nil
}
