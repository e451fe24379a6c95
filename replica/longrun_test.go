package replica_test

import (
	"bufio"
	"bytes"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/parliament-lab/parliament/client"
	"github.com/parliament-lab/parliament/config"
	"github.com/parliament-lab/parliament/protocol"
	"github.com/parliament-lab/parliament/replica"
)

// TestLongRun runs 3 replicas in this process (loopback TCP, durable in a temporary
// directory with real fsync, snapshots and truncation at the default interval) under a
// steady pipelined load for PARLIAMENT_LONG_RUN (a duration, e.g. 10m), and reports
// resident memory, Go heap, the size of the data directories and records per fsync at
// the start (after a 30 s warm-up) and every minute. Memory and disk must stay bounded:
// the peak of the second half of the samples may not exceed twice the peak of the first
// half plus a margin.
//
//	PARLIAMENT_LONG_RUN=10m go test -run TestLongRun -v -timeout 30m ./replica
//
// PARLIAMENT_LONG_RUN_PROTOCOL (epaxos, multipaxos; default epaxos) and
// PARLIAMENT_LONG_RUN_DURABLE=false (no log, snapshots in memory) vary it.
func TestLongRun(t *testing.T) {
	v := os.Getenv("PARLIAMENT_LONG_RUN")
	if v == "" {
		t.Skip("set PARLIAMENT_LONG_RUN=10m to run")
	}
	dur, err := time.ParseDuration(v)
	if err != nil {
		t.Fatalf("PARLIAMENT_LONG_RUN=%q: %v", v, err)
	}
	proto := os.Getenv("PARLIAMENT_LONG_RUN_PROTOCOL")
	if proto == "" {
		proto = config.EPaxos
	}
	durable := os.Getenv("PARLIAMENT_LONG_RUN_DURABLE") != "false"
	if os.Getenv("GOGC") == "" {
		defer debug.SetGCPercent(debug.SetGCPercent(400))
	}
	dir := ""
	if durable {
		dir = t.TempDir()
	}
	cl, rs := longCluster(t, proto, dir)
	leader := protocol.ReplicaID(1)
	for _, r := range rs {
		if r.Leader() != 0 {
			leader = r.Leader()
		}
	}
	const nclients, window = 6, 500
	var done atomic.Uint64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var clients []*client.Client
	for ci := 0; ci < nclients; ci++ {
		target := protocol.ReplicaID(ci%len(rs) + 1)
		if proto == config.MultiPaxos {
			target = leader
		}
		c, err := client.New(client.Options{Cluster: cl, Replica: target, MaxOutstanding: window, Timeout: 5 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		clients = append(clients, c)
		wg.Add(1)
		go func() {
			defer wg.Done()
			keys := make([][]byte, keysPerClient)
			for i := range keys {
				keys[i] = key16(nil, uint64(ci), uint64(i))
			}
			value := make([]byte, 16)
			var failed atomic.Bool
			cb := func(rep protocol.Reply, err error) {
				if err != nil || rep.Result != protocol.ResultOK {
					if !failed.Swap(true) && err != client.ErrClosed {
						t.Errorf("client %d: %v %v", ci, rep.Result, err)
					}
					return
				}
				done.Add(1)
			}
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				c.Submit(protocol.Command{Op: protocol.OpPut, Key: keys[i%len(keys)], Value: value}, cb)
			}
		}()
	}
	type sample struct {
		at          time.Duration
		cmds        uint64
		rss, heap   uint64
		disk        int64
		syncs, recs uint64
		snaps       uint64
		heapObjects uint64
	}
	take := func(at time.Duration) sample {
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		s := sample{at: at, cmds: done.Load(), rss: rssBytes(), heap: ms.HeapAlloc, heapObjects: ms.HeapObjects}
		if dir != "" {
			s.disk = treeSize(dir)
		}
		for _, r := range rs {
			st := r.Stats()
			s.syncs += st.Syncs
			s.recs += st.Records
			s.snaps += st.Snapshots
		}
		return s
	}
	show := func(s, prev sample) {
		rate := float64(s.cmds-prev.cmds) / (s.at - prev.at).Seconds()
		rpf := 0.0
		if s.syncs > prev.syncs {
			rpf = float64(s.recs-prev.recs) / float64(s.syncs-prev.syncs)
		}
		t.Logf("t=%-6v cmds=%-10d rate=%-8.0f rss=%-6.1fMiB heap=%-6.1fMiB objects=%-8d disk=%-6.1fMiB snapshots=%-5d records/fsync=%.2f",
			s.at.Round(time.Second), s.cmds, rate, mib(s.rss), mib(s.heap), s.heapObjects, mib(uint64(s.disk)), s.snaps, rpf)
	}
	t0 := time.Now()
	warm := 30 * time.Second
	if dur < 2*warm {
		warm = dur / 4
	}
	time.Sleep(warm)
	first := take(time.Since(t0))
	show(first, sample{})
	prev := first
	samples := []sample{first}
	tick := time.NewTicker(time.Minute)
	end := time.NewTimer(dur - warm)
loop:
	for {
		select {
		case <-tick.C:
			s := take(time.Since(t0))
			show(s, prev)
			prev = s
			samples = append(samples, s)
		case <-end.C:
			break loop
		}
	}
	tick.Stop()
	last := take(time.Since(t0))
	show(last, prev)
	samples = append(samples, last)
	close(stop)
	for _, c := range clients {
		c.Close() // fails what is outstanding, which unblocks Submit
	}
	wg.Wait()
	t.Logf("%s durable=%v over %v: %d commands (%.0f/s); rss %.1f -> %.1f MiB, heap %.1f -> %.1f MiB, disk %.1f -> %.1f MiB, records/fsync %.2f overall, %d snapshots",
		proto, durable, last.at.Round(time.Second), last.cmds, float64(last.cmds-first.cmds)/(last.at-first.at).Seconds(),
		mib(first.rss), mib(last.rss), mib(first.heap), mib(last.heap), mib(uint64(first.disk)), mib(uint64(last.disk)),
		float64(last.recs)/float64(max(last.syncs, 1)), last.snaps)
	// Bounded: the samples fluctuate with what is in flight when they are taken (client
	// windows, instances not yet executed everywhere, a snapshot being written), so the
	// second half of the run is compared with the first, not the last sample with the
	// first: growth with the number of commands would at least double it.
	const margin = 64 << 20
	half := len(samples) / 2
	peak := func(ss []sample, f func(sample) uint64) uint64 {
		m := uint64(0)
		for _, s := range ss {
			m = max(m, f(s))
		}
		return m
	}
	for _, q := range []struct {
		name string
		f    func(sample) uint64
	}{
		{"heap", func(s sample) uint64 { return s.heap }},
		{"resident memory", func(s sample) uint64 { return s.rss }},
		{"data directories", func(s sample) uint64 { return uint64(s.disk) }},
	} {
		a, b := peak(samples[:half], q.f), peak(samples[half:], q.f)
		if len(samples) >= 4 && b > 2*a+margin {
			t.Errorf("%s grew: peak %.1f MiB in the first half of the run, %.1f MiB in the second", q.name, mib(a), mib(b))
		}
	}
}

// longCluster is benchClusterDir for a test.
func longCluster(t *testing.T, proto, dir string) (*config.Cluster, []*replica.Replica) {
	cl := config.Generate(proto, 3, 1, "")
	freeAddrs(t, cl)
	d := dir != ""
	cl.Durable = &d
	var rs []*replica.Replica
	for _, id := range cl.IDs() {
		opts := replica.Options{Cluster: cl, ID: id}
		if dir != "" {
			opts.DataDir = filepath.Join(dir, strconv.Itoa(int(id)))
		}
		r, err := replica.Start(opts)
		if err != nil {
			t.Fatal(err)
		}
		rs = append(rs, r)
	}
	t.Cleanup(func() {
		for _, r := range rs {
			r.Stop()
		}
	})
	// A first write: elections done, connections up.
	c, err := client.New(client.Options{Cluster: cl, Replica: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Do(t.Context(), protocol.Command{Op: protocol.OpPut, Key: []byte("warm-up"), Value: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	return cl, rs
}

func mib(b uint64) float64 { return float64(b) / (1 << 20) }

// rssBytes returns this process's resident set size (Linux), 0 when unknown.
func rssBytes() uint64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			f := strings.Fields(rest)
			if len(f) >= 1 {
				kb, _ := strconv.ParseUint(f[0], 10, 64)
				return kb << 10
			}
		}
	}
	return 0
}

func treeSize(dir string) int64 {
	var n int64
	filepath.Walk(dir, func(_ string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() {
			n += fi.Size()
		}
		return nil
	})
	return n
}

// freeAddrs gives every replica of cl a free loopback port.
func freeAddrs(t testing.TB, cl *config.Cluster) {
	t.Helper()
	for i := range cl.Replicas {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		cl.Replicas[i].Address = l.Addr().String()
		l.Close()
	}
}
