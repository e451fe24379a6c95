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

// benchMessage is an Accept whose Data carries size bytes of seeded random payload. The
// benchmark sends this one message over and over, so with s2 the stream compresses about a
// hundredfold (every payload matches the previous one) and s2's work is mostly copying its
// matches; docs/transport.md gives what distinct incompressible payloads measure.
func benchMessage(size int) protocol.Message {
	rng := rand.New(rand.NewPCG(1, 2))
	data := make([]byte, size)
	for i := range data {
		data[i] = byte(rng.Uint32())
	}
	return protocol.Message{
		Type: protocol.MsgAccept, From: 1, To: 2,
		Ballot: protocol.Ballot{Round: 1, Replica: 1}, Inst: protocol.InstanceID{Num: 12345},
		Index: 12000, Data: data,
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
//     go test -run '^$' -bench Throughput -benchtime 2000000x ./transport
func BenchmarkThroughput(b *testing.B) {
	for _, size := range []int{64, 1024} {
		for _, compress := range []bool{false, true} {
			for _, recv := range []string{"owns", "releases", "borrows"} {
				release, lend := recv != "owns", recv == "borrows"
				name := fmt.Sprintf("size=%d/s2=%v/recv=%s", size, map[bool]string{false: "off", true: "on"}[compress], recv)
				b.Run(name, func(b *testing.B) {
					m := benchMessage(size)
					frame := wire.AppendMessageFrame(nil, &m)
					b.SetBytes(int64(len(frame)))
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
					trs := tcpCluster(b, 2, func(c *Config) { c.Compress = compress; c.Lend = lend })
					defer trs[0].Close()
					defer trs[1].Close()
					trs[0].Send(m) // the connection is up and handshaken before timing
					recvN(b, trs[1], 1)
					warm := min(b.N, 1<<17)
					raw.run(b, warm, frame)
					if plain != nil {
						plain.run(b, warm, frame)
					}
					transportRun(b, trs[0], trs[1], warm, &m, release)
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
						rd := raw.run(b, n, frame)
						c1, f1 := usage()
						d, k := transportRun(b, trs[0], trs[1], n, &m, release)
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
							pd := plain.run(b, n, frame)
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

// transportRun sends n messages from a to b (waiting for queue room rather than
// dropping) and returns how long until b received them all, and in how many batches.
func transportRun(tb testing.TB, a, b *TCP, n int, m *protocol.Message, release bool) (time.Duration, int) {
	start := time.Now()
	go func() {
		for range n {
			if err := a.sendWait(m); err != nil {
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

// run writes n frames and returns how long until the reader decoded them all.
func (p *rawPipe) run(tb testing.TB, n int, frame []byte) time.Duration {
	start := time.Now()
	p.todo <- n
	for range n {
		p.bw.Write(frame)
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
