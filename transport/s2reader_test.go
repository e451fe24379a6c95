package transport

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"testing"

	"github.com/klauspost/compress/s2"
	"github.com/parliament-lab/parliament/wire"
)

// s2Stream writes the batches as conn.write does (EncodeBuffer, then Flush, per batch),
// with the writer options given, and returns the stream and the bytes it carries.
func s2Stream(t testing.TB, batches [][]byte, opts ...s2.WriterOption) (stream, plain []byte) {
	t.Helper()
	var out bytes.Buffer
	w := s2.NewWriter(&out, append([]s2.WriterOption{s2.WriterConcurrency(1), s2.WriterBlockSize(s2BlockSize)}, opts...)...)
	for _, b := range batches {
		if err := w.EncodeBuffer(b); err != nil {
			t.Fatal(err)
		}
		if err := w.Flush(); err != nil {
			t.Fatal(err)
		}
		plain = append(plain, b...)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return out.Bytes(), plain
}

// readAllWith reads r to its end with reads of at most n bytes.
func readAllWith(r io.Reader, n int) ([]byte, error) {
	var out []byte
	p := make([]byte, n)
	for {
		k, err := r.Read(p)
		out = append(out, p[:k]...)
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return out, err
		}
	}
}

// testBatches is a mix: compressible frames (the transport's usual stream), random bytes
// (s2 sends those as uncompressed chunks), one batch over a block (two chunks), and a
// 1-byte batch.
func testBatches() [][]byte {
	rng := rand.New(rand.NewPCG(3, 4))
	random := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		return b
	}
	st := newBenchStream(1024)
	return [][]byte{
		st.frames[:st.ends[41]],
		random(5000),
		{7},
		bytes.Repeat(st.frames[:st.ends[9]], 30), // over 300 KiB: three blocks
		random(70000),
		st.frames[st.ends[100]:st.ends[140]],
	}
}

// The reader returns exactly the bytes written, whatever the size of the reads (larger
// than a block: decoded in place; smaller: through its own buffer), and skips padding and
// index chunks.
func TestS2ReaderRoundTrip(t *testing.T) {
	for _, opts := range []struct {
		name string
		opts []s2.WriterOption
	}{
		{"plain", nil},
		{"padding", []s2.WriterOption{s2.WriterPadding(4096)}},
		{"index", []s2.WriterOption{s2.WriterAddIndex()}},
	} {
		stream, plain := s2Stream(t, testBatches(), opts.opts...)
		for _, n := range []int{1, 7, 4096, 64 << 10, 200 << 10} {
			got, err := readAllWith(newS2Reader(bytes.NewReader(stream), s2BlockSize), n)
			if err != nil {
				t.Fatalf("%s, reads of %d: %v", opts.name, n, err)
			}
			if !bytes.Equal(got, plain) {
				t.Fatalf("%s, reads of %d: got %d bytes, want %d (or they differ)", opts.name, n, len(got), len(plain))
			}
		}
	}
}

// A stream that arrives a byte at a time (a slow link) reads the same.
func TestS2ReaderByteAtATime(t *testing.T) {
	stream, plain := s2Stream(t, testBatches())
	got, err := readAllWith(newS2Reader(&oneByteReader{stream}, s2BlockSize), 64<<10)
	if err != nil || !bytes.Equal(got, plain) {
		t.Fatalf("got %d bytes, err %v; want %d", len(got), err, len(plain))
	}
}

type oneByteReader struct{ b []byte }

func (r *oneByteReader) Read(p []byte) (int, error) {
	if len(r.b) == 0 {
		return 0, io.EOF
	}
	if len(p) == 0 {
		return 0, nil
	}
	p[0] = r.b[0]
	r.b = r.b[1:]
	return 1, nil
}

// Every kind of bad stream is refused with a clear error, and the error sticks.
func TestS2ReaderRefuses(t *testing.T) {
	stream, _ := s2Stream(t, [][]byte{newBenchStream(1024).frames[:20000]})
	idLen := len("\xff\x06\x00\x00S2sTwO")
	chunk := func(typ byte, body []byte) []byte {
		n := len(body)
		return append([]byte{typ, byte(n), byte(n >> 8), byte(n >> 16)}, body...)
	}
	corrupt := func(f func(b []byte) []byte) []byte { return f(bytes.Clone(stream)) }
	big, _ := s2Stream(t, [][]byte{make([]byte, 100<<10)}, s2.WriterBlockSize(1<<20))
	for _, c := range []struct {
		name   string
		stream []byte
		want   error
	}{
		{"checksum", corrupt(func(b []byte) []byte { b[idLen+4] ^= 1; return b }), wire.ErrMalformed},
		{"block", corrupt(func(b []byte) []byte { b[idLen+8+10] ^= 0xff; return b }), wire.ErrMalformed},
		{"no stream identifier", stream[idLen:], wire.ErrMalformed},
		{"snappy identifier", append([]byte("\xff\x06\x00\x00sNaPpY"), stream[idLen:]...), wire.ErrMalformed},
		{"unskippable chunk", append(bytes.Clone(stream), chunk(0x05, []byte("abcd"))...), wire.ErrMalformed},
		{"chunk shorter than its checksum", append(bytes.Clone(stream), chunk(0x00, []byte("ab"))...), wire.ErrMalformed},
		{"chunk over the buffer", append(bytes.Clone(stream), 0x00, 0xff, 0xff, 0xff), wire.ErrMalformed},
		{"block over maxBlock", big, wire.ErrMalformed},
		{"truncated chunk", stream[:len(stream)-3], io.ErrUnexpectedEOF},
		{"truncated header", append(bytes.Clone(stream), 0x00, 0x10), io.ErrUnexpectedEOF},
		{"truncated skippable chunk", append(bytes.Clone(stream), 0xfe, 0x10, 0, 0, 1), io.ErrUnexpectedEOF},
	} {
		r := newS2Reader(bytes.NewReader(c.stream), 64<<10)
		_, err := readAllWith(r, 64<<10)
		if !errors.Is(err, c.want) {
			t.Errorf("%s: got %v, want %v", c.name, err, c.want)
			continue
		}
		if _, again := r.Read(make([]byte, 10)); again != err {
			t.Errorf("%s: a read after the error got %v", c.name, again)
		}
	}
}

// FuzzS2Reader checks the reader against s2.Reader on arbitrary streams: it never panics,
// and whatever both decode agrees; when it reads a stream to its end without error,
// s2.Reader does too, with the same bytes.
func FuzzS2Reader(f *testing.F) {
	// Small seeds (a few hundred bytes): the fuzzer minimizes every new input it finds,
	// which takes long on large ones.
	st := newBenchStream(64)
	frames := st.frames[:st.ends[9]]
	random := []byte(newBenchStream(300).msgs[0].Data)
	stream, _ := s2Stream(f, [][]byte{frames, random, {7}})
	f.Add(stream, uint16(4096))
	f.Add(stream[:len(stream)/2], uint16(65535))
	padded, _ := s2Stream(f, [][]byte{frames}, s2.WriterPadding(64), s2.WriterAddIndex())
	f.Add(padded, uint16(1))
	small, _ := s2Stream(f, [][]byte{[]byte("hello, hello, hello, hello")})
	f.Add(small, uint16(3))
	f.Fuzz(func(t *testing.T, stream []byte, readSize uint16) {
		const maxBlock = 64 << 10
		got, err := readAllWith(newS2Reader(bytes.NewReader(stream), maxBlock), int(readSize)+1)
		want, wantErr := readAllWith(s2.NewReader(bytes.NewReader(stream), s2.ReaderMaxBlockSize(maxBlock)), 4096)
		n := min(len(got), len(want))
		if !bytes.Equal(got[:n], want[:n]) {
			t.Fatalf("decoded bytes differ from s2.Reader's within the first %d", n)
		}
		if err == nil && (wantErr != nil || len(got) != len(want)) {
			t.Fatalf("read %d bytes to the end; s2.Reader read %d and got %v", len(got), len(want), wantErr)
		}
	})
}
