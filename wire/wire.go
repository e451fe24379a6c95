// Package wire is Parliament's hand-written binary codec: every protocol.Message,
// protocol.Command, protocol.Reply and protocol.Record, and the frames that carry them on
// a TCP stream or in the write-ahead log. docs/wire.md specifies the format byte by byte.
//
// Encoders append to a caller-owned buffer (no allocation when it has capacity), in the
// style of strconv.AppendInt. Decoders never panic and never allocate more than the input
// can justify: every count is checked against the bytes left before anything is
// allocated, so a hostile peer or a corrupt disk costs at most a few times its own size.
//
// Aliasing: byte slices (Key, Value, Old, Data) in a decoded value point into src, and the
// slices of commands and dependencies are carved from one allocation per message. A
// caller that reuses src (a read buffer) must copy what it keeps. Aliased slices have
// their capacity clipped, so appending to them never overwrites src.
//
// Encodings are canonical: a decoder accepts exactly the bytes the encoder produces for
// some value (minimal varints, optional fields present only when non-zero, no trailing
// bytes), so decode followed by encode reproduces the input.
package wire

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/parliament-lab/parliament/protocol"
)

// Sentinel errors. Decoders wrap them with context; test with errors.Is.
var (
	// ErrTruncated: the input ends before the value does (or a length runs past it).
	ErrTruncated = errors.New("wire: truncated")
	// ErrTooLarge: a frame is longer than the configured maximum.
	ErrTooLarge = errors.New("wire: too large")
	// ErrUnknownType: an enumerated field (frame, message or record type, op, status,
	// result) holds a value this version does not know.
	ErrUnknownType = errors.New("wire: unknown type")
	// ErrMalformed: the bytes can never be a valid encoding (trailing bytes, overlong or
	// overflowing varints, a present optional field with a zero value, unknown flags).
	ErrMalformed = errors.New("wire: malformed")
)

// Minimum encoded sizes, used to bound counts by the bytes left before allocating.
const (
	minDepSize      = 2  // replica, num
	minCommandSize  = 6  // client, seq, op, three empty byte strings
	minInstanceSize = 10 // id(2), status(1), ballot(2), vballot(2), seq(1), #deps(1), #cmds(1)
)

var le = binary.LittleEndian

// decoder reads from src. Errors carry the offset at which they were found.
type decoder struct {
	src []byte
	off int
}

func (d *decoder) errf(sentinel error, format string, args ...any) error {
	return fmt.Errorf("%s at offset %d: %w", fmt.Sprintf(format, args...), d.off, sentinel)
}

func (d *decoder) left() int { return len(d.src) - d.off }

// uvarint reads a minimal unsigned LEB128 varint (as encoding/binary writes it) and
// refuses overlong forms, so that every value has exactly one encoding.
func (d *decoder) uvarint(what string) (uint64, error) {
	if d.off < len(d.src) && d.src[d.off] < 0x80 { // one byte: small enough to inline
		d.off++
		return uint64(d.src[d.off-1]), nil
	}
	return d.uvarintSlow(what)
}

func (d *decoder) uvarintSlow(what string) (uint64, error) {
	var x uint64
	var s uint
	for i := 0; ; i++ {
		if d.off+i >= len(d.src) {
			return 0, d.errf(ErrTruncated, "%s", what)
		}
		b := d.src[d.off+i]
		if i == binary.MaxVarintLen64-1 && b > 1 {
			return 0, d.errf(ErrMalformed, "%s: varint overflows 64 bits", what)
		}
		if b < 0x80 {
			if b == 0 && i > 0 {
				return 0, d.errf(ErrMalformed, "%s: overlong varint", what)
			}
			d.off += i + 1
			return x | uint64(b)<<s, nil
		}
		x |= uint64(b&0x7f) << s
		s += 7
	}
}

func (d *decoder) uint32(what string) (uint32, error) {
	v, err := d.uvarint(what)
	if err != nil {
		return 0, err
	}
	if v > 1<<32-1 {
		d.off-- // point into the varint rather than past it
		return 0, d.errf(ErrMalformed, "%s: %d overflows uint32", what, v)
	}
	return uint32(v), nil
}

func (d *decoder) byte(what string) (byte, error) {
	if d.off < len(d.src) {
		d.off++
		return d.src[d.off-1], nil
	}
	return 0, d.truncated(what)
}

func (d *decoder) truncated(what string) error { return d.errf(ErrTruncated, "%s", what) }

// bytes reads a length-prefixed byte string that aliases src (nil when empty).
func (d *decoder) bytes(what string) ([]byte, error) {
	n, err := d.uvarint(what)
	if err != nil {
		return nil, err
	}
	if n > uint64(d.left()) {
		return nil, d.errf(ErrTruncated, "%s: length %d, %d bytes left", what, n, d.left())
	}
	if n == 0 {
		return nil, nil
	}
	b := d.src[d.off : d.off+int(n) : d.off+int(n)]
	d.off += int(n)
	return b, nil
}

// count reads an element count and checks that count elements of at least minSize bytes
// each fit in what is left, so the caller may allocate count elements safely.
func (d *decoder) count(what string, minSize int) (int, error) {
	n, err := d.uvarint(what)
	if err != nil {
		return 0, err
	}
	if n > uint64(d.left()/minSize) {
		return 0, d.errf(ErrTruncated, "%s: count %d cannot fit in %d bytes", what, n, d.left())
	}
	return int(n), nil
}

func (d *decoder) ballot(what string) (b protocol.Ballot, err error) {
	if b.Round, err = d.uint32(what); err != nil {
		return b, err
	}
	r, err := d.uint32(what)
	b.Replica = protocol.ReplicaID(r)
	return b, err
}

func (d *decoder) instanceID(what string) (id protocol.InstanceID, err error) {
	r, err := d.uint32(what)
	if err != nil {
		return id, err
	}
	id.Replica = protocol.ReplicaID(r)
	id.Num, err = d.uvarint(what)
	return id, err
}

// end refuses trailing bytes.
func (d *decoder) end(what string) error {
	if d.off != len(d.src) {
		return d.errf(ErrMalformed, "%s: %d trailing bytes", what, d.left())
	}
	return nil
}

// wrap prefixes a decoding error with what was being decoded; nil stays nil.
func wrap(what string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("wire: decode %s: %w", what, err)
}
