package transport

import (
	"bufio"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/klauspost/compress/s2"
	"github.com/montanaflynn/stats"
	"github.com/parliament-lab/parliament/protocol"
	"github.com/parliament-lab/parliament/wire"
)

// benchStream is what BenchmarkThroughput sends: a ring of Accepts for consecutive
// instances (a leader's stream), each with its own instance number and log index and the
// same size bytes of seeded random payload, and the same ring encoded as frames for the raw
// baseline, so that both pipes carry the same bytes.
//
// The payloads are alike on purpose: with s2 the stream compresses about fiftyfold and s2's
// work is mostly copying matches. Repeating one identical message instead, as this
// benchmark once did, is not a stream any replica sends, and it measures a slow path of s2's
// decoder rather than the transport: every frame then matches the one before it in full, so
// each s2 block encodes as one copy that runs to the block's end, which the decoder copies
// a byte at a time (it copies 8 bytes at a time only when at least 10 bytes of the block
// follow). BenchmarkS2DecodeBlock shows the difference; docs/transport.md gives both.
type benchStream struct {
	msgs   []protocol.Message
	frames []byte
	ends   []int // frame i is frames[ends[i-1]:ends[i]]
}

const benchRing = 4096

func newBenchStream(size int) *benchStream {
	rng := rand.New(rand.NewPCG(1, 2))
	data := make([]byte, size)
	for i := range data {
		data[i] = byte(rng.Uint32())
	}
	s := &benchStream{}
	for i := range benchRing {
		m := protocol.Message{
			Type: protocol.MsgAccept, From: 1, To: 2,
			Ballot: protocol.Ballot{Round: 1, Replica: 1}, Inst: protocol.InstanceID{Num: 12345 + uint64(i)},
			Index: 12000 + uint64(i), Data: data,
		}
		s.msgs = append(s.msgs, m)
		s.frames = wire.AppendMessageFrame(s.frames, &m)
		s.ends = append(s.ends, len(s.frames))
	}
	return s
}

// frame returns the encoding of message i (mod the ring).
func (s *benchStream) frame(i int) []byte {
	i %= benchRing
	start := 0
	if i > 0 {
		start = s.ends[i-1]
	}
	return s.frames[start:s.ends[i]]
}

// msg returns message i (mod the ring).
func (s *benchStream) msg(i int) *protocol.Message { return &s.msgs[i%benchRing] }

// BenchmarkS2DecodeBlock decodes one s2 block of 42 frames (a batch the transport's
// writer typically compresses at once in BenchmarkThroughput with 1 KiB messages): of the
// benchmark's stream (consecutive instances, equal payloads) and of one message repeated.
// The repeated one is about four times slower per message, all in s2's byte-at-a-time copy
// (see benchStream); it is why BenchmarkThroughput does not repeat one message.
//
//	go test -run '^$' -bench S2DecodeBlock ./transport
func BenchmarkS2DecodeBlock(b *testing.B) {
	const frames = 42
	st := newBenchStream(1024)
	for _, stream := range []string{"consecutive", "repeated"} {
		b.Run("stream="+stream, func(b *testing.B) {
			var block []byte
			for i := range frames {
				if stream == "consecutive" {
					block = append(block, st.frame(i)...)
				} else {
					block = append(block, st.frame(0)...)
				}
			}
			enc := s2.Encode(nil, block)
			dst := make([]byte, len(block))
			b.SetBytes(int64(len(block)))
			for b.Loop() {
				if _, err := s2.Decode(dst, enc); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/frames, "ns/msg")
			b.ReportMetric(float64(len(block))/float64(len(enc)), "compression")
		})
	}
}

// BenchmarkThroughput measures messages per second from one TCP transport to another on
// loopback and, in the same run, a raw baseline: a plain net.Conn with a 64 KiB
// bufio.Writer writing the same frame bytes, and a reader decoding every frame into one
// reused Message. Both move b.N messages, in alternating rounds so that a change in
// machine load hits both alike, after one untimed warm-up round each (a fresh transport
// grows its queue buffers, which a long-running replica does once); the ratio
// transport/raw is what the transport costs. Besides wall-clock rates it reports the CPU
// time and page faults per message of each (process-wide, GC included): on a shared
// machine they are steadier than wall time.
//
// With s2 on, raw compresses too (the same s2 writer and reader settings), and a plain
// uncompressed raw baseline runs alongside: transport/plain-raw compares the compressing
// transport with bare TCP.
//
// The receiver works in one of three ways (see Releaser), the messages being Accepts
// whose Data is the payload:
//
//   - recv=owns: it never calls Release and owns everything it receives; every read is
//     copied into memory of its own.
//
//   - recv=releases: it gives each batch back (the runtime's way: engines keep commands),
//     so Message slots are recycled, but reads carrying bytes are still copied.
//
//   - recv=borrows: Config.Lend; it releases each batch and keeps nothing (like the raw
//     reader), so reads are decoded in place and nothing is copied or allocated.
//
// The sender waits for queue room rather than dropping, and the queue is bounded in one of
// two ways (Config.QueueBytes):
//
//   - queue=default: DefaultQueueLen messages or DefaultQueueBytes, what a replica runs
//     with. A sender that outruns the connection keeps the queue full, so the writer
//     compresses and writes batches of up to 8192 messages (8 MiB at 1 KiB), which the
//     sender wrote long before: out of the cache.
//
//   - queue=1MiB: the sender is never more than about 1 MiB ahead of the writer, as the
//     raw baseline's writer is never more than its 64 KiB buffer ahead of its compressor.
//     This is the like-for-like comparison for a producer that can wait.
//
//     go test -run '^$' -bench Throughput -benchtime 1000000x ./transport
func BenchmarkThroughput(b *testing.B) {
	queues := []struct {
		name  string
		bytes int
	}{{"default", 0}, {"1MiB", 1 << 20}}
	for _, size := range []int{64, 1024} {
		for _, compress := range []bool{false, true} {
			for _, recv := range []string{"owns", "releases", "borrows"} {
				for _, queue := range queues {
					release, lend, queueBytes := recv != "owns", recv == "borrows", queue.bytes
					name := fmt.Sprintf("size=%d/s2=%v/recv=%s/queue=%s", size, map[bool]string{false: "off", true: "on"}[compress], recv, queue.name)
					b.Run(name, func(b *testing.B) {
						st := newBenchStream(size)
						b.SetBytes(int64(len(st.frames) / benchRing))
						b.ReportAllocs()
						raw := newRawPipe(b, compress)
						defer raw.close()
						// With s2 on, the plain (uncompressed) baseline runs too: the
						// transport with compression against bare TCP.
						var plain *rawPipe
						if compress {
							plain = newRawPipe(b, false)
							defer plain.close()
						}
						trs := tcpCluster(b, 2, func(c *Config) { c.Compress = compress; c.Lend = lend; c.QueueBytes = queueBytes })
						defer trs[0].Close()
						defer trs[1].Close()
						trs[0].Send(*st.msg(0)) // the connection is up and handshaken before timing
						recvN(b, trs[1], 1)
						warm := min(b.N, 1<<17)
						raw.run(b, warm, st)
						if plain != nil {
							plain.run(b, warm, st)
						}
						transportRun(b, trs[0], trs[1], warm, st, release)
						var rawD, trD, plainD, rawCPU, trCPU time.Duration
						var rawFlt, trFlt, batches int64
						var ratios, plainRatios []float64
						var roundRaw, roundTr []time.Duration
						retrans0 := tcpRetransSegs()
						b.ResetTimer()
						for r := range throughputRounds {
							n := b.N / throughputRounds
							if r == throughputRounds-1 {
								n = b.N - (throughputRounds-1)*(b.N/throughputRounds)
							}
							c0, f0 := usage()
							rd := raw.run(b, n, st)
							c1, f1 := usage()
							d, k := transportRun(b, trs[0], trs[1], n, st, release)
							c2, f2 := usage()
							rawD += rd
							trD += d
							roundRaw = append(roundRaw, rd)
							roundTr = append(roundTr, d)
							ratios = append(ratios, rd.Seconds()/d.Seconds())
							batches += int64(k)
							rawCPU += c1 - c0
							trCPU += c2 - c1
							rawFlt += f1 - f0
							trFlt += f2 - f1
							if plain != nil {
								pd := plain.run(b, n, st)
								plainD += pd
								plainRatios = append(plainRatios, pd.Seconds()/d.Seconds())
							}
						}
						b.StopTimer()
						retrans1 := tcpRetransSegs()
						b.ReportMetric(float64(b.N)/trD.Seconds(), "msgs/s")
						b.ReportMetric(float64(b.N)/rawD.Seconds(), "raw-msgs/s")
						b.ReportMetric(median(ratios), "transport/raw")
						b.ReportMetric(rawD.Seconds()/trD.Seconds(), "pooled-transport/raw")
						b.ReportMetric(float64(stalled(roundRaw)+stalled(roundTr)), "stalled-rounds")
						if retrans0 >= 0 && retrans1 >= 0 {
							b.ReportMetric(float64(retrans1-retrans0), "tcp-retrans")
						}
						if plain != nil {
							b.ReportMetric(float64(b.N)/plainD.Seconds(), "plain-raw-msgs/s")
							b.ReportMetric(median(plainRatios), "transport/plain-raw")
						}
						// CPU per message (process-wide: GC included) is steadier than wall time
						// on a shared machine.
						b.ReportMetric(float64(trCPU.Nanoseconds())/float64(b.N), "cpu-ns/msg")
						b.ReportMetric(float64(rawCPU.Nanoseconds())/float64(b.N), "raw-cpu-ns/msg")
						b.ReportMetric(float64(trFlt)/float64(b.N), "faults/msg")
						b.ReportMetric(float64(rawFlt)/float64(b.N), "raw-faults/msg")
						b.ReportMetric(float64(b.N)/float64(batches), "msgs/batch")
					})
				}
			}
		}
	}
}

// throughputRounds is how many alternating rounds of raw and transport BenchmarkThroughput
// times. Its headline ratio is the median of the rounds' ratios: now and then a round
// stalls for about 200 ms on either side alike (a loopback segment dropped when the
// receiving socket is over its memory and pruned, then retransmitted after the minimum
// retransmission timeout: tcp-retrans counts them), and the median keeps one such round,
// which is no cost of either pipe, from deciding the ratio. The pooled ratio (all messages
// over all time) is reported beside it.
const throughputRounds = 10

// median is the median of xs (not empty).
func median(xs []float64) float64 {
	m, err := stats.Median(xs)
	if err != nil {
		panic(err)
	}
	return m
}

// stalled counts the rounds that took more than twice the median round.
func stalled(ds []time.Duration) int {
	xs := make([]float64, len(ds))
	for i, d := range ds {
		xs[i] = d.Seconds()
	}
	m := median(xs)
	n := 0
	for _, x := range xs {
		if x > 2*m {
			n++
		}
	}
	return n
}

// tcpRetransSegs is the host's count of retransmitted TCP segments (RetransSegs in
// /proc/net/snmp), or -1 where that cannot be read.
func tcpRetransSegs() int64 {
	b, err := os.ReadFile("/proc/net/snmp")
	if err != nil {
		return -1
	}
	var names []string
	for line := range strings.Lines(string(b)) {
		fields := strings.Fields(line)
		if len(fields) == 0 || fields[0] != "Tcp:" {
			continue
		}
		if names == nil {
			names = fields
			continue
		}
		for i, name := range names {
			if name == "RetransSegs" && i < len(fields) {
				if n, err := strconv.ParseInt(fields[i], 10, 64); err == nil {
					return n
				}
			}
		}
		return -1
	}
	return -1
}

// usage returns the CPU time (user + system) the process used so far and its minor page
// faults.
func usage() (time.Duration, int64) {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), ru.Minflt
}

// transportRun sends the first n messages of st from a to b (waiting for queue room rather
// than dropping) and returns how long until b received them all, and in how many batches.
func transportRun(tb testing.TB, a, b *TCP, n int, st *benchStream, release bool) (time.Duration, int) {
	start := time.Now()
	go func() {
		for i := range n {
			if err := a.sendWait(st.msg(i)); err != nil {
				return
			}
		}
	}()
	batches := 0
	for got := 0; got < n; batches++ {
		batch, ok := <-b.Recv()
		if !ok {
			tb.Fatal("Recv closed")
		}
		got += len(batch)
		if release {
			b.Release(batch)
		}
	}
	return time.Since(start), batches
}

// rawPipe is the baseline: the same frames, written with bufio on a plain connection
// (s2-wrapped when compressed), read with wire.ReadFrame and decoded.
type rawPipe struct {
	ln    net.Listener
	c     net.Conn
	bw    *bufio.Writer
	s2w   *s2.Writer
	todo  chan int
	done  chan error
	close func()
}

func newRawPipe(tb testing.TB, compress bool) *rawPipe {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	p := &rawPipe{ln: ln, todo: make(chan int), done: make(chan error)}
	exited := make(chan struct{})
	go func() {
		defer close(exited)
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		var r io.Reader = c
		if compress {
			r = s2.NewReader(c, s2.ReaderMaxBlockSize(s2BlockSize))
		}
		br := bufio.NewReaderSize(r, ioBufferSize)
		buf := make([]byte, ioBufferSize)
		var m protocol.Message
		for n := range p.todo {
			var err error
			for range n {
				var payload []byte
				_, payload, err = wire.ReadFrame(br, buf, 0)
				if err == nil {
					err = wire.DecodeMessage(payload, &m)
				}
				if err != nil {
					break
				}
			}
			p.done <- err
		}
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		tb.Fatal(err)
	}
	p.c = c
	var w io.Writer = c
	if compress {
		p.s2w = s2.NewWriter(c, s2.WriterConcurrency(1), s2.WriterBlockSize(s2BlockSize))
		w = p.s2w
	}
	p.bw = bufio.NewWriterSize(w, ioBufferSize)
	p.close = func() {
		close(p.todo)
		c.Close()
		ln.Close()
		<-exited
	}
	return p
}

// run writes the first n frames of st and returns how long until the reader decoded them
// all.
func (p *rawPipe) run(tb testing.TB, n int, st *benchStream) time.Duration {
	start := time.Now()
	p.todo <- n
	for i := range n {
		p.bw.Write(st.frame(i))
	}
	p.bw.Flush()
	if p.s2w != nil {
		p.s2w.Flush()
	}
	if err := <-p.done; err != nil {
		tb.Fatal(err)
	}
	return time.Since(start)
}
