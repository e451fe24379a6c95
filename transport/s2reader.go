package transport

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"io"

	"github.com/klauspost/compress/s2"
	"github.com/parliament-lab/parliament/wire"
)

// s2Reader reads an s2 stream (the framing format of s2.Writer: a stream identifier, then
// compressed, uncompressed and skippable chunks, each carrying a CRC-32C of its
// uncompressed bytes) as s2.Reader does, with two differences that matter on a
// connection's read path:
//
//   - It reads the connection through a buffer large enough for a whole chunk and decodes
//     from there, so a read system call brings in many of the small chunks a writer that
//     flushes every batch sends. s2.Reader reads each chunk with two calls of its own
//     (header, then body).
//   - It decodes a block straight into the caller's slice when the slice can hold the
//     whole block, which readChunks's large read buffers usually can. s2.Reader always
//     decodes into a buffer of its own and copies out, one more pass over every byte.
//
// It accepts only what our writers send: the s2 stream identifier (not snappy's), blocks of
// at most maxBlock bytes. Anything else is an error, and after an error every Read returns
// it.
type s2Reader struct {
	br       *bufio.Reader
	maxBlock int
	started  bool   // the stream identifier was read
	dec      []byte // a block decoded here when the caller's slice was too small
	i, j     int    // dec[i:j] is decoded and not yet read
	err      error
}

const (
	s2ChunkHeader     = 4 // type, 3-byte little-endian length
	s2ChecksumSize    = 4
	s2ChunkCompressed = 0x00
	s2ChunkRaw        = 0x01
	s2ChunkStreamID   = 0xff
	s2StreamIDBody    = "S2sTwO"
)

// errS2Corrupt is what a malformed s2 stream gives, wrapped with what was wrong. It is a
// wire.ErrMalformed: the connection is refused as sending bad frames.
var errS2Corrupt = fmt.Errorf("transport: corrupt s2 stream: %w", wire.ErrMalformed)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// s2Checksum is the framing format's masked CRC-32C.
func s2Checksum(b []byte) uint32 {
	c := crc32.Update(0, castagnoli, b)
	return c>>15 | c<<17 + 0xa282ead8
}

// newS2Reader reads the s2 stream of r, whose blocks decode to at most maxBlock bytes.
func newS2Reader(r io.Reader, maxBlock int) *s2Reader {
	return &s2Reader{
		br:       bufio.NewReaderSize(r, s2ChunkHeader+s2ChecksumSize+s2.MaxEncodedLen(maxBlock)),
		maxBlock: maxBlock,
	}
}

func (r *s2Reader) fail(format string, args ...any) (int, error) {
	r.err = fmt.Errorf("%w: "+format, append([]any{errS2Corrupt}, args...)...)
	return 0, r.err
}

// Read implements io.Reader.
func (r *s2Reader) Read(p []byte) (int, error) {
	if r.i < r.j {
		n := copy(p, r.dec[r.i:r.j])
		r.i += n
		return n, nil
	}
	if r.err != nil {
		return 0, r.err
	}
	if len(p) == 0 {
		return 0, nil
	}
	for {
		hdr, err := r.br.Peek(s2ChunkHeader)
		if err != nil {
			if err == io.EOF && len(hdr) > 0 {
				err = io.ErrUnexpectedEOF
			}
			r.err = err
			return 0, err
		}
		typ := hdr[0]
		size := int(hdr[1]) | int(hdr[2])<<8 | int(hdr[3])<<16
		if !r.started && typ != s2ChunkStreamID {
			return r.fail("chunk type %#x before the stream identifier", typ)
		}
		if typ >= 0x80 && typ != s2ChunkStreamID { // skippable (padding, index): skip
			if _, err := r.br.Discard(s2ChunkHeader + size); err != nil {
				return r.failRead(err)
			}
			continue
		}
		if typ > s2ChunkRaw && typ != s2ChunkStreamID {
			return r.fail("unskippable chunk type %#x", typ)
		}
		if size > r.br.Size()-s2ChunkHeader {
			return r.fail("chunk of %d bytes", size)
		}
		chunk, err := r.br.Peek(s2ChunkHeader + size)
		if err != nil {
			return r.failRead(err)
		}
		body := chunk[s2ChunkHeader:]
		if typ == s2ChunkStreamID {
			if string(body) != s2StreamIDBody {
				return r.fail("stream identifier %q", body)
			}
			r.started = true
			r.br.Discard(len(chunk))
			continue
		}
		if len(body) < s2ChecksumSize {
			return r.fail("chunk of %d bytes, shorter than its checksum", len(body))
		}
		sum := binary.LittleEndian.Uint32(body)
		body = body[s2ChecksumSize:]
		n := len(body)
		if typ == s2ChunkCompressed {
			if n, err = s2.DecodedLen(body); err != nil {
				return r.fail("block header: %v", err)
			}
		}
		if n > r.maxBlock {
			return r.fail("block of %d bytes, over %d", n, r.maxBlock)
		}
		if n == 0 {
			r.br.Discard(len(chunk))
			continue
		}
		// Decode into p when the whole block fits, else into dec.
		direct := n <= len(p)
		var dst []byte
		if direct {
			dst = p[:n]
		} else {
			if cap(r.dec) < n {
				r.dec = make([]byte, r.maxBlock)
			}
			dst = r.dec[:n]
		}
		if typ == s2ChunkCompressed {
			if _, err := s2.Decode(dst, body); err != nil {
				return r.fail("block: %v", err)
			}
		} else {
			copy(dst, body)
		}
		if s2Checksum(dst) != sum {
			return r.fail("checksum mismatch")
		}
		r.br.Discard(len(chunk))
		if direct {
			return n, nil
		}
		r.i, r.j = copy(p, dst), n
		return r.i, nil
	}
}

// failRead records an error reading a chunk's body: the stream ended or broke inside it.
func (r *s2Reader) failRead(err error) (int, error) {
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	r.err = err
	return 0, err
}
