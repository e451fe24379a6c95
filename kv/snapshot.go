package kv

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"slices"
	"strings"

	"github.com/parliament-lab/parliament/protocol"
)

// Snapshot format, version 1 (all integers unsigned varints in their shortest form unless
// stated; the encoding is canonical, so equal stores give equal bytes):
//
//	magic    "PKVS" (4 bytes)
//	version  1 byte (1)
//	nKeys, then per key in ascending byte order: len(key), key, len(value), value
//	nSessions, then per session in ascending client ID (never 0):
//	    clientID, prefix, nAbove, then each executed number above the prefix as the
//	    difference to the previous one (the first relative to prefix+1; always >= 1),
//	    nCached (<= MaxCachedReplies), then per cached CAS reply in ascending seq:
//	    seq, result (1 byte: ok or cas-failed), len(value), value
//	crc      CRC-32C (Castagnoli) of everything before it, 4 bytes little-endian
const (
	snapshotMagic   = "PKVS"
	snapshotVersion = 1
)

// ErrCorrupt is returned (wrapped, with the reason) by Restore for input that is not a
// valid snapshot.
var ErrCorrupt = errors.New("corrupt snapshot")

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Snapshot returns the whole state (data and sessions) in a deterministic encoding.
func (s *Store) Snapshot() []byte {
	keys := make([]string, 0, len(s.data))
	size := 16
	for k, e := range s.data {
		keys = append(keys, k)
		size += len(k) + len(e.v) + 4
	}
	slices.Sort(keys)
	ids := make([]uint64, 0, len(s.sessions))
	for id, sess := range s.sessions {
		ids = append(ids, id)
		size += 16 + 2*len(sess.executed.Above) + 24*len(sess.live())
	}
	slices.Sort(ids)

	b := make([]byte, 0, size)
	b = append(b, snapshotMagic...)
	b = append(b, snapshotVersion)
	b = binary.AppendUvarint(b, uint64(len(keys)))
	for _, k := range keys {
		v := s.data[k].v
		b = binary.AppendUvarint(b, uint64(len(k)))
		b = append(b, k...)
		b = binary.AppendUvarint(b, uint64(len(v)))
		b = append(b, v...)
	}
	b = binary.AppendUvarint(b, uint64(len(ids)))
	for _, id := range ids {
		sess := s.sessions[id]
		b = binary.AppendUvarint(b, id)
		b = binary.AppendUvarint(b, sess.executed.Prefix)
		b = binary.AppendUvarint(b, uint64(len(sess.executed.Above)))
		prev := sess.executed.Prefix + 1
		for _, n := range sess.executed.Above {
			b = binary.AppendUvarint(b, n-prev)
			prev = n
		}
		live := sess.live()
		b = binary.AppendUvarint(b, uint64(len(live)))
		for _, c := range live {
			b = binary.AppendUvarint(b, c.seq)
			b = append(b, byte(c.result))
			b = binary.AppendUvarint(b, uint64(len(c.value)))
			b = append(b, c.value...)
		}
	}
	return binary.LittleEndian.AppendUint32(b, crc32.Checksum(b, castagnoli))
}

// Restore replaces the whole state with the snapshot in b. Invalid input (truncated,
// corrupted, wrong version, not canonical) is refused with an error wrapping ErrCorrupt,
// and the store is left unchanged. b is not retained.
func (s *Store) Restore(b []byte) error {
	const minLen = len(snapshotMagic) + 1 + 4
	if len(b) < minLen {
		return fmt.Errorf("kv: snapshot: %w: %d bytes, shorter than any snapshot", ErrCorrupt, len(b))
	}
	if string(b[:4]) != snapshotMagic {
		return fmt.Errorf("kv: snapshot: %w: bad magic %q", ErrCorrupt, b[:4])
	}
	if b[4] != snapshotVersion {
		return fmt.Errorf("kv: snapshot: %w: version %d, this build reads version %d", ErrCorrupt, b[4], snapshotVersion)
	}
	body, sum := b[:len(b)-4], binary.LittleEndian.Uint32(b[len(b)-4:])
	if got := crc32.Checksum(body, castagnoli); got != sum {
		return fmt.Errorf("kv: snapshot: %w: checksum %08x, want %08x", ErrCorrupt, got, sum)
	}
	// Values point into one private copy of the body: one allocation instead of one per value.
	own := slices.Clone(body)
	d := decoder{b: own, off: 5}
	data, sessions, err := d.decode()
	if err != nil {
		return fmt.Errorf("kv: snapshot: %w: at byte %d: %v", ErrCorrupt, d.off, err)
	}
	s.data, s.sessions = data, sessions
	return nil
}

type decoder struct {
	b   []byte
	off int
}

func (d *decoder) uvarint(what string) (uint64, error) {
	v, n := binary.Uvarint(d.b[d.off:])
	if n <= 0 {
		return 0, fmt.Errorf("bad or truncated %s", what)
	}
	if n != uvarintLen(v) {
		return 0, fmt.Errorf("%s not in shortest form", what)
	}
	d.off += n
	return v, nil
}

func uvarintLen(v uint64) int {
	n := 1
	for v >= 0x80 {
		v >>= 7
		n++
	}
	return n
}

// count reads a count of items that take at least minSize bytes each: a count the
// remaining input cannot hold is refused before anything is allocated for it.
func (d *decoder) count(what string, minSize int) (int, error) {
	n, err := d.uvarint(what)
	if err != nil {
		return 0, err
	}
	if n > uint64(len(d.b)-d.off)/uint64(minSize) {
		return 0, fmt.Errorf("%s %d exceeds the remaining %d bytes", what, n, len(d.b)-d.off)
	}
	return int(n), nil
}

func (d *decoder) bytes(what string) ([]byte, error) {
	n, err := d.uvarint(what + " length")
	if err != nil {
		return nil, err
	}
	if n > uint64(len(d.b)-d.off) {
		return nil, fmt.Errorf("%s length %d exceeds the remaining %d bytes", what, n, len(d.b)-d.off)
	}
	v := d.b[d.off : d.off+int(n) : d.off+int(n)]
	d.off += int(n)
	return v, nil
}

func (d *decoder) decode() (map[string]*entry, map[uint64]*session, error) {
	nKeys, err := d.count("key count", 2)
	if err != nil {
		return nil, nil, err
	}
	data := make(map[string]*entry, nKeys)
	var prevKey []byte
	for i := 0; i < nKeys; i++ {
		k, err := d.bytes("key")
		if err != nil {
			return nil, nil, err
		}
		if i > 0 && strings.Compare(string(prevKey), string(k)) >= 0 {
			return nil, nil, fmt.Errorf("key %q not after %q", k, prevKey)
		}
		prevKey = k
		v, err := d.bytes("value")
		if err != nil {
			return nil, nil, err
		}
		data[string(k)] = &entry{v: v}
	}
	nSess, err := d.count("session count", 4)
	if err != nil {
		return nil, nil, err
	}
	sessions := make(map[uint64]*session, nSess)
	var prevID uint64
	for i := 0; i < nSess; i++ {
		id, err := d.uvarint("client ID")
		if err != nil {
			return nil, nil, err
		}
		if id == 0 || id <= prevID {
			return nil, nil, fmt.Errorf("client ID %d not after %d (and not 0)", id, prevID)
		}
		prevID = id
		sess := &session{}
		if sess.executed.Prefix, err = d.uvarint("prefix"); err != nil {
			return nil, nil, err
		}
		nAbove, err := d.count("executed count", 1)
		if err != nil {
			return nil, nil, err
		}
		if nAbove > 0 {
			sess.executed.Above = make([]uint64, nAbove)
		}
		prev := sess.executed.Prefix + 1
		for j := range sess.executed.Above {
			delta, err := d.uvarint("executed number")
			if err != nil {
				return nil, nil, err
			}
			if delta == 0 || prev+delta < prev {
				return nil, nil, fmt.Errorf("client %d: executed numbers not increasing above prefix+1", id)
			}
			prev += delta
			sess.executed.Above[j] = prev
		}
		nCache, err := d.count("cached reply count", 3)
		if err != nil {
			return nil, nil, err
		}
		if nCache > MaxCachedReplies {
			return nil, nil, fmt.Errorf("client %d: %d cached replies, at most %d", id, nCache, MaxCachedReplies)
		}
		if nCache > 0 {
			sess.cache = make([]cached, nCache)
		}
		for j := range sess.cache {
			c := &sess.cache[j]
			if c.seq, err = d.uvarint("cached seq"); err != nil {
				return nil, nil, err
			}
			if (j > 0 && c.seq <= sess.cache[j-1].seq) || !sess.executed.Has(c.seq) {
				return nil, nil, fmt.Errorf("client %d: cached reply %d not increasing or never executed", id, c.seq)
			}
			if d.off >= len(d.b) {
				return nil, nil, errors.New("truncated cached result")
			}
			c.result = protocol.Result(d.b[d.off])
			d.off++
			if c.result != protocol.ResultOK && c.result != protocol.ResultCASFailed {
				return nil, nil, fmt.Errorf("client %d: cached result %v is not a CAS result", id, c.result)
			}
			if c.value, err = d.bytes("cached value"); err != nil {
				return nil, nil, err
			}
			if len(c.value) == 0 {
				c.value = nil
			}
		}
		sessions[id] = sess
	}
	if d.off != len(d.b) {
		return nil, nil, fmt.Errorf("%d trailing bytes", len(d.b)-d.off)
	}
	return data, sessions, nil
}
