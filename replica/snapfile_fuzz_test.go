package replica

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"slices"
	"testing"

	"github.com/parliament-lab/parliament/protocol"
)

// FuzzDecodeSnapshot: the bytes of a snapshot file either are refused with an error
// wrapping ErrSnapshotCorrupt, or give a normalized frontier (ascending replicas, no zero
// entries) and the data, which encodeSnapshot writes back as a file that decodes the
// same. With fixCRC the fuzzed bytes get a valid checksum appended, so that the decoder
// past the checksum is fuzzed too.
func FuzzDecodeSnapshot(f *testing.F) {
	good := encodeSnapshot([]protocol.InstanceID{{Replica: 1, Num: 9}, {Replica: 3, Num: 5}}, []byte("state"))
	f.Add(good, false)
	f.Add(good[:len(good)-4], true)
	f.Add(good[:len(good)-1], false)
	f.Add(encodeSnapshot(nil, nil), false)
	// Unsorted, zero and repeated rows, as an old or foreign writer might leave them.
	f.Add([]byte("PSNP\x01\x04\x03\x05\x01\x04\x02\x00\x01\x09\x02ab"), true)
	f.Add([]byte("PSNP\x01\xff\xff\xff\xff\x0f"), true)             // a frontier longer than the file
	f.Add([]byte("PSNP\x02\x00\x00"), true)                         // unknown version
	f.Add([]byte("PSNP\x01\x00\x05ab"), true)                       // data shorter than announced
	f.Add([]byte("PSNP\x01\x01\x80\x80\x80\x80\x10\x01\x00"), true) // replica over 32 bits
	f.Fuzz(func(t *testing.T, b []byte, fixCRC bool) {
		if fixCRC {
			b = binary.LittleEndian.AppendUint32(slices.Clip(b), crc32.Checksum(b, castagnoli))
		}
		frontier, data, err := decodeSnapshot(b)
		if err != nil {
			if frontier != nil || data != nil || !errors.Is(err, ErrSnapshotCorrupt) {
				t.Fatalf("refusal returns %v, %q and error %v, want nothing and ErrSnapshotCorrupt", frontier, data, err)
			}
			return
		}
		if !sameFrontier(frontier, normFrontier(frontier)) {
			t.Fatalf("frontier %v is not normalized", frontier)
		}
		again := encodeSnapshot(frontier, data)
		f2, d2, err := decodeSnapshot(again)
		if err != nil || !sameFrontier(f2, frontier) || !bytes.Equal(d2, data) {
			t.Fatalf("re-encoded snapshot decodes as %v, %q, %v; want %v, %q", f2, d2, err, frontier, data)
		}
	})
}
