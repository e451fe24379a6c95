package wal

import (
	"fmt"
	"testing"

	"github.com/parliament-lab/parliament/protocol"
)

// BenchmarkAppendSync measures durable appends on this disk: each op appends a batch of
// typical EPaxos instance records (one command, 16-byte value, five deps; and a batched
// instance of 16 commands) and fsyncs once. records/s is the figure that bounds a
// replica's durable instance rate; MB/s includes frames.
func BenchmarkAppendSync(b *testing.B) {
	for _, cmds := range []int{1, 16} {
		for _, batch := range []int{1, 16, 256} {
			b.Run(fmt.Sprintf("cmds=%d/batch=%d", cmds, batch), func(b *testing.B) {
				recs := make([]protocol.Record, batch)
				for i := range recs {
					recs[i] = instanceRecord(uint64(1000+i), cmds)
				}
				l, _, _, err := Open(b.TempDir(), Options{})
				if err != nil {
					b.Fatal(err)
				}
				defer l.Close()
				frame, _ := appendFrame(nil, &recs[0])
				b.SetBytes(int64(len(frame) * batch))
				b.ReportAllocs()
				for b.Loop() {
					if err := l.Append(recs); err != nil {
						b.Fatal(err)
					}
					if err := l.Sync(); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(b.N*batch)/b.Elapsed().Seconds(), "records/s")
			})
		}
	}
}

// BenchmarkGroupCommit: concurrent committers of one record each share fsyncs.
func BenchmarkGroupCommit(b *testing.B) {
	for _, par := range []int{1, 16, 64} {
		b.Run(fmt.Sprintf("committers=%d", par*2), func(b *testing.B) { // RunParallel starts par×GOMAXPROCS
			l, _, _, err := Open(b.TempDir(), Options{})
			if err != nil {
				b.Fatal(err)
			}
			g := NewGroupCommitter(l)
			defer g.Close()
			rec := []protocol.Record{instanceRecord(1000, 1)}
			frame, _ := appendFrame(nil, &rec[0])
			b.SetBytes(int64(len(frame)))
			b.ReportAllocs()
			b.SetParallelism(par)
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if err := g.Commit(rec); err != nil {
						b.Error(err)
						return
					}
				}
			})
			s := g.Stats()
			b.ReportMetric(float64(s.Records)/b.Elapsed().Seconds(), "records/s")
			b.ReportMetric(float64(s.Records)/float64(max(s.Syncs, 1)), "records/fsync")
		})
	}
}
