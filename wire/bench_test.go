package wire

import (
	"bufio"
	"bytes"
	"testing"
)

// Benchmarks of the hot-path values: a typical EPaxos PreAccept (64 PUTs of 16-byte
// values), a Multi-Paxos Accept of 64 commands, one client Command and one Reply. SetBytes
// is the encoded size, so MB/s is codec throughput.

func benchCodec[T any](b *testing.B, v T, enc func([]byte, *T) []byte, dec func([]byte, *T) error) {
	encoded := enc(nil, &v)
	b.Run("encode", func(b *testing.B) {
		buf := make([]byte, 0, 2*len(encoded))
		b.ReportAllocs()
		b.SetBytes(int64(len(encoded)))
		for b.Loop() {
			buf = enc(buf[:0], &v)
		}
	})
	b.Run("decode", func(b *testing.B) {
		var out T
		b.ReportAllocs()
		b.SetBytes(int64(len(encoded)))
		for b.Loop() {
			if err := dec(encoded, &out); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func BenchmarkPreAccept64(b *testing.B) {
	benchCodec(b, preAccept64(), AppendMessage, DecodeMessage)
}

func BenchmarkMultiPaxosAccept(b *testing.B) {
	benchCodec(b, mpAccept(), AppendMessage, DecodeMessage)
}

func BenchmarkCommand(b *testing.B) {
	benchCodec(b, putCommands(1)[0], AppendCommand, DecodeCommand)
}

func BenchmarkReply(b *testing.B) {
	benchCodec(b, sampleReplies()["ok"], AppendReply, DecodeReply)
}

func BenchmarkRecord(b *testing.B) {
	benchCodec(b, sampleRecords()["instance"], AppendRecord, DecodeRecord)
}

// BenchmarkReadFrame reads 256 PreAccept frames from memory into one reused buffer.
func BenchmarkReadFrame(b *testing.B) {
	m := preAccept64()
	var stream []byte
	for range 256 {
		stream = AppendMessageFrame(stream, &m)
	}
	rd := bytes.NewReader(stream)
	r := bufio.NewReaderSize(rd, 64<<10)
	buf := make([]byte, 0, 64<<10)
	b.ReportAllocs()
	b.SetBytes(int64(len(stream)))
	for b.Loop() {
		rd.Reset(stream)
		r.Reset(rd)
		for range 256 {
			if _, _, err := ReadFrame(r, buf, 0); err != nil {
				b.Fatal(err)
			}
		}
	}
}
