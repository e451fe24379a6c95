package replica_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"os"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/parliament-lab/parliament/client"
	"github.com/parliament-lab/parliament/config"
	"github.com/parliament-lab/parliament/protocol"
	"github.com/parliament-lab/parliament/replica"
)

// benchCluster starts 3 replicas of proto in this process on loopback TCP, in-memory log.
func benchCluster(b *testing.B, proto string) (*config.Cluster, []*replica.Replica) {
	return benchClusterDir(b, proto, "")
}

// benchClusterDir is benchCluster with durable replicas keeping their log and snapshots
// under dir (real fsync) when dir is not "".
func benchClusterDir(b *testing.B, proto, dir string) (*config.Cluster, []*replica.Replica) {
	b.Helper()
	cl := config.Generate(proto, 3, 1, "")
	for i := range cl.Replicas {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		cl.Replicas[i].Address = l.Addr().String()
		l.Close()
	}
	f := dir != ""
	cl.Durable = &f
	if err := cl.Validate(); err != nil {
		b.Fatal(err)
	}
	var rs []*replica.Replica
	for _, id := range cl.IDs() {
		opts := replica.Options{Cluster: cl, ID: id}
		if v := os.Getenv("PARLIAMENT_SNAPSHOT_EVERY"); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil {
				b.Fatalf("PARLIAMENT_SNAPSHOT_EVERY=%q: %v", v, err)
			}
			opts.SnapshotEvery = n
		}
		if dir != "" {
			opts.DataDir = fmt.Sprintf("%s/%d", dir, id)
		}
		r, err := replica.Start(opts)
		if err != nil {
			b.Fatal(err)
		}
		rs = append(rs, r)
	}
	b.Cleanup(func() {
		for _, r := range rs {
			r.Stop()
		}
	})
	return cl, rs
}

// leaderOf waits until a write commits and returns the replica that leads (Multi-Paxos:
// the one with elections; EPaxos: 1).
func warmUp(b *testing.B, cl *config.Cluster, rs []*replica.Replica) protocol.ReplicaID {
	b.Helper()
	c, err := client.New(client.Options{Cluster: cl, Replica: 1})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.Put(ctx, []byte("warm-up"), []byte("x")); err != nil {
		b.Fatal(err)
	}
	for _, r := range rs {
		if r.Stats().Engine.Elections > 0 {
			return r.ID()
		}
	}
	return 1
}

// key16 writes a 16-byte key unique to (client, i).
func key16(dst []byte, client, i uint64) []byte {
	dst = binary.LittleEndian.AppendUint64(dst[:0], client)
	return binary.LittleEndian.AppendUint64(dst, i)
}

// keysPerClient is the size of each benchmark client's key ring. Keys are private to a
// client, so EPaxos sees no conflicts between replicas (a client's commands all enter at
// the same replica).
const keysPerClient = 1024

// BenchmarkRuntime measures the full runtime: 3 replicas in this process on loopback TCP,
// in-memory log, replies after execution, 16-byte keys and values, pipelined clients.
//
// The collector runs with GOGC=400, as `parliament replica` does (unless GOGC is set in
// the environment, which then wins here too).
func BenchmarkRuntime(b *testing.B) {
	if os.Getenv("GOGC") == "" {
		defer debug.SetGCPercent(debug.SetGCPercent(400))
	}
	for _, tc := range []struct {
		name, proto string
		conflict    int // percent of commands on one shared hot key
		toLeader    bool
	}{
		{"protocol=multipaxos", config.MultiPaxos, 0, true},
		{"protocol=multipaxos/clients=all-replicas", config.MultiPaxos, 0, false},
		{"protocol=epaxos/conflict=0", config.EPaxos, 0, false},
		{"protocol=epaxos/conflict=100", config.EPaxos, 100, false},
	} {
		b.Run(tc.name, func(b *testing.B) {
			if (tc.proto == config.EPaxos) && !hasEPaxos() {
				b.Skip("epaxos not built in")
			}
			runLoad(b, loadCase{proto: tc.proto, conflict: tc.conflict, toLeader: tc.toLeader}, "")
		})
	}
}

// loadCase is one workload of the runtime benchmarks.
type loadCase struct {
	proto    string
	conflict int // percent of commands on one shared hot key
	toLeader bool
}

// BenchmarkDurability compares durable replicas (write-ahead log with real fsync in a
// temporary directory, snapshots and truncation at the default interval) with
// non-durable ones, side by side in one run, for both protocols: the workload of
// BenchmarkRuntime (3 replicas in this process, loopback TCP, 6 pipelined clients, 16-byte
// keys and values, no conflicts). records/fsync is what group commit achieves.
func BenchmarkDurability(b *testing.B) {
	if os.Getenv("GOGC") == "" {
		defer debug.SetGCPercent(debug.SetGCPercent(400))
	}
	for _, tc := range []struct {
		name string
		load loadCase
	}{
		{"protocol=epaxos", loadCase{proto: config.EPaxos}},
		{"protocol=multipaxos", loadCase{proto: config.MultiPaxos, toLeader: true}},
	} {
		for _, durable := range []bool{false, true} {
			b.Run(fmt.Sprintf("%s/durable=%v", tc.name, durable), func(b *testing.B) {
				dir := ""
				if durable {
					dir = b.TempDir()
				}
				runLoad(b, tc.load, dir)
			})
		}
	}
}

// runLoad runs one load case against a fresh cluster (durable under dir when not "").
func runLoad(b *testing.B, tc loadCase, dir string) {
	cl, rs := benchClusterDir(b, tc.proto, dir)
	leader := warmUp(b, cl, rs)
	const nclients, window = 6, 2000
	clients := make([]*client.Client, nclients)
	for i := range clients {
		target := protocol.ReplicaID(i%len(rs) + 1)
		if tc.toLeader {
			target = leader
		}
		c, err := client.New(client.Options{Cluster: cl, Replica: target, MaxOutstanding: window, Timeout: 5 * time.Second})
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		clients[i] = c
	}
	value := make([]byte, 16)
	hot := []byte("hot-key-16-bytes")
	before := make([]replica.Stats, len(rs))
	for i, r := range rs {
		before[i] = r.Stats()
	}
	b.ReportAllocs()
	b.ResetTimer()
	cpu0 := cpuTime()
	start := time.Now()
	var wg sync.WaitGroup
	per := b.N/nclients + 1
	for ci, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var done sync.WaitGroup
			done.Add(per)
			cb := func(rep protocol.Reply, err error) {
				if err != nil || rep.Result != protocol.ResultOK {
					panic(fmt.Sprintf("put failed: %v %v", rep.Result, err))
				}
				done.Done()
			}
			keys := make([][]byte, keysPerClient)
			for i := range keys {
				keys[i] = key16(nil, uint64(ci), uint64(i))
			}
			for i := 0; i < per; i++ {
				k := keys[i%len(keys)]
				if tc.conflict > 0 && i%100 < tc.conflict {
					k = hot
				}
				c.Submit(protocol.Command{Op: protocol.OpPut, Key: k, Value: value}, cb)
			}
			done.Wait()
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	total := per * nclients
	cpu := cpuTime() - cpu0
	b.ReportMetric(float64(total)/elapsed.Seconds(), "cmds/s")
	// CPU per command (whole process: 3 replicas and the clients) and what the
	// machine's cores could sustain at that cost, which the wall-clock figure
	// underestimates when other processes compete for the cores.
	perCmd := cpu.Seconds() / float64(total)
	b.ReportMetric(perCmd*1e6, "cpu-us/cmd")
	b.ReportMetric(float64(runtime.NumCPU())/perCmd, "cpu-bound-cmds/s")
	var committed, cmds, fast, slow, syncs, records uint64
	for i, r := range rs {
		s := r.Stats()
		committed += s.Committed - before[i].Committed
		cmds += s.CommittedCmds - before[i].CommittedCmds
		fast += s.Engine.FastPath - before[i].Engine.FastPath
		slow += s.Engine.SlowPath - before[i].Engine.SlowPath
		syncs += s.Syncs - before[i].Syncs
		records += s.Records - before[i].Records
	}
	if committed > 0 {
		b.ReportMetric(float64(cmds)/float64(committed), "cmds/inst")
	}
	if fast+slow > 0 {
		b.ReportMetric(100*float64(fast)/float64(fast+slow), "fast%")
	}
	if dir != "" && syncs > 0 {
		// Per replica: each one fsyncs its own log.
		b.ReportMetric(float64(records)/float64(syncs), "records/fsync")
		b.ReportMetric(float64(syncs)/float64(len(rs))/elapsed.Seconds(), "fsyncs/s/replica")
		b.ReportMetric(float64(total)*float64(len(rs))/float64(syncs), "cmds/fsync")
	}
}

// BenchmarkLatency measures one client with one command outstanding.
func BenchmarkLatency(b *testing.B) {
	for _, tc := range []struct{ name, proto string }{
		{"protocol=multipaxos", config.MultiPaxos},
		{"protocol=epaxos", config.EPaxos},
	} {
		b.Run(tc.name, func(b *testing.B) {
			if tc.proto == config.EPaxos && !hasEPaxos() {
				b.Skip("epaxos not built in")
			}
			cl, rs := benchCluster(b, tc.proto)
			leader := warmUp(b, cl, rs)
			c, err := client.New(client.Options{Cluster: cl, Replica: leader})
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			ctx := context.Background()
			value := make([]byte, 16)
			key := make([]byte, 16)
			lat := make([]time.Duration, 0, b.N)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				t0 := time.Now()
				if err := c.Put(ctx, key16(key, 1, uint64(i)), value); err != nil {
					b.Fatal(err)
				}
				lat = append(lat, time.Since(t0))
			}
			b.StopTimer()
			slices.Sort(lat)
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
			b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
		})
	}
}

func hasEPaxos() bool {
	_, err := replica.NewEngine(&config.Cluster{Protocol: config.EPaxos}, protocol.Config{ID: 1, Replicas: []protocol.ReplicaID{1, 2, 3}})
	return err == nil
}

// cpuTime returns the CPU time (user + system) this process has used.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
