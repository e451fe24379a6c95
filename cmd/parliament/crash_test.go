package main

// Crash test: real `parliament replica` processes (durable, small snapshot interval and
// truncation threshold so that snapshots and log truncation happen under the kills), clients in this process
// writing and reading, and cycles of SIGKILL — of one random replica, and in every third
// cycle of all of them at once — then restart from the data directories. After every
// cycle every acknowledged write must be readable and the client history must be
// linearizable (check.CheckLinearizable). -short skips it.
//
// CI runs a few cycles; the long run:
//
//	go test -run TestCrash ./cmd/parliament -cycles 50
//	PARLIAMENT_CRASH_CYCLES=50 go test -run TestCrash ./cmd/parliament -timeout 1h

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/parliament-lab/parliament/check"
	"github.com/parliament-lab/parliament/client"
	"github.com/parliament-lab/parliament/config"
	"github.com/parliament-lab/parliament/internal/testnet"
	"github.com/parliament-lab/parliament/protocol"
	"github.com/parliament-lab/parliament/wal"
)

var crashCycles = flag.Int("cycles", 0, "crash test: kill/restart cycles per protocol (0 = PARLIAMENT_CRASH_CYCLES, else 3)")

func cyclesWanted(t *testing.T) int {
	if *crashCycles > 0 {
		return *crashCycles
	}
	if v := os.Getenv("PARLIAMENT_CRASH_CYCLES"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			t.Fatalf("PARLIAMENT_CRASH_CYCLES=%q: want a positive number", v)
		}
		return n
	}
	return 3
}

func TestCrashMultiPaxos(t *testing.T) { runCrash(t, config.MultiPaxos) }
func TestCrashEPaxos(t *testing.T)     { runCrash(t, config.EPaxos) }

// startCrashCluster runs 3 durable replica processes that snapshot and truncate often, for
// the test to kill and restart.
func startCrashCluster(t *testing.T, proto string) *procCluster {
	return startProcs(t, proto, 3, "--snapshot-every", "500", "--truncate-bytes", "65536")
}

// history is the client history shared by the load goroutines.
type history struct {
	mu    sync.Mutex
	t0    time.Time
	ops   []check.Op
	acked map[string]string // unique keys: acknowledged value (never overwritten)
	puts  atomic.Int64      // acknowledged writes (unique and hot)
}

func (h *history) now() int64 { return int64(time.Since(h.t0)) }

func (h *history) add(op check.Op) {
	h.mu.Lock()
	h.ops = append(h.ops, op)
	h.mu.Unlock()
}

// do runs one command, recording it with its outcome (unknown when no reply came).
func (h *history) do(ctx context.Context, c *client.Client, lane int, cmd protocol.Command, timeout time.Duration) (protocol.Reply, bool) {
	op := check.Op{Client: lane, ClientID: c.ID(), Kind: cmd.Op, Key: string(cmd.Key), Value: string(cmd.Value), Call: h.now()}
	octx, cancel := context.WithTimeout(ctx, timeout)
	rep, err := c.Do(octx, cmd)
	cancel()
	if err == nil {
		op.Known, op.Return, op.Result, op.Out = true, h.now(), rep.Result, string(rep.Value)
		op.Seq = rep.Seq
	}
	h.add(op)
	return rep, err == nil
}

// load runs closed-loop clients until ctx is done: puts and gets on a few hot keys of this
// cycle (contended, for the linearizability check) and puts of unique keys (for the
// durability check).
func load(ctx context.Context, h *history, clients []*client.Client, cycle int, seed int64, wg *sync.WaitGroup) {
	for lane, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewSource(seed + int64(lane)))
			for i := 0; ctx.Err() == nil; i++ {
				hot := fmt.Sprintf("hot-%d-%d", cycle, rng.Intn(4))
				switch p := rng.Intn(10); {
				case p < 4:
					v := fmt.Sprintf("c%d-l%d-%d", cycle, lane, i)
					if _, ok := h.do(ctx, c, lane, protocol.Command{Op: protocol.OpPut, Key: []byte(hot), Value: []byte(v)}, 3*time.Second); ok {
						h.puts.Add(1)
					}
				case p < 7:
					h.do(ctx, c, lane, protocol.Command{Op: protocol.OpGet, Key: []byte(hot)}, 3*time.Second)
				default:
					k, v := fmt.Sprintf("u-%d-%d-%d", cycle, lane, i), fmt.Sprintf("v%d", i)
					if _, ok := h.do(ctx, c, lane, protocol.Command{Op: protocol.OpPut, Key: []byte(k), Value: []byte(v)}, 3*time.Second); ok {
						h.puts.Add(1)
						h.mu.Lock()
						h.acked[k] = v
						h.mu.Unlock()
					}
				}
			}
		}()
	}
}

// bulk writes unique keys pipelined (many commands in flight) until ctx is done, so that
// the logs grow, snapshots are taken and truncation runs while replicas are killed.
func bulk(ctx context.Context, h *history, c *client.Client, cycle int, wg *sync.WaitGroup) {
	wg.Add(1)
	go func() {
		defer wg.Done()
		var inflight sync.WaitGroup
		for i := 0; ctx.Err() == nil; i++ {
			k, v := fmt.Sprintf("b-%d-%d", cycle, i), fmt.Sprintf("bulk%d", i)
			inflight.Add(1)
			c.Submit(protocol.Command{Op: protocol.OpPut, Key: []byte(k), Value: []byte(v)}, func(rep protocol.Reply, err error) {
				defer inflight.Done()
				if err == nil && rep.Result == protocol.ResultOK {
					h.puts.Add(1)
					h.mu.Lock()
					h.acked[k] = v
					h.mu.Unlock()
				}
			})
		}
		inflight.Wait() // the callbacks run once the client is closed, at the latest
	}()
}

var recoveredRE = regexp.MustCompile(`msg=recovered .*records=(\d+)`)

func runCrash(t *testing.T, proto string) {
	cycles := cyclesWanted(t)
	c := startCrashCluster(t, proto)
	seed := time.Now().UnixNano()
	t.Logf("seed %d, %d cycles", seed, cycles)
	rng := rand.New(rand.NewSource(seed))
	h := &history{t0: time.Now(), acked: map[string]string{}}
	began := time.Now()

	newClient := func(id protocol.ReplicaID, outstanding int) *client.Client {
		cli, err := client.New(client.Options{Cluster: c.cl, Replica: id, Timeout: 300 * time.Millisecond,
			DialTimeout: 300 * time.Millisecond, MaxOutstanding: outstanding})
		if err != nil {
			t.Fatalf("client of replica %d: %v", id, err)
		}
		return cli
	}
	waitReady := func(what string) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for _, id := range c.cl.IDs() {
			for {
				if !c.alive(id) {
					t.Fatalf("%s: replica %d exited", what, id)
				}
				cli, err := client.New(client.Options{Cluster: c.cl, Replica: id, Timeout: 300 * time.Millisecond, DialTimeout: 300 * time.Millisecond})
				if err == nil {
					ctx, cancel := context.WithTimeout(context.Background(), time.Second)
					err = cli.Put(ctx, []byte(fmt.Sprintf("ready-%d", id)), []byte("x"))
					cancel()
					cli.Close()
				}
				if err == nil {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("%s: replica %d not serving after 30s: %v", what, id, err)
				}
				time.Sleep(20 * time.Millisecond)
			}
		}
	}
	waitReady("start")

	var clients []*client.Client
	for _, id := range c.cl.IDs() {
		clients = append(clients, newClient(id, 1))
	}
	defer func() {
		for _, cli := range clients {
			cli.Close()
		}
	}()
	allKills, oneKills := 0, 0
	for cycle := 0; cycle < cycles; cycle++ {
		ctx, stop := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		load(ctx, h, clients, cycle, seed+int64(cycle)*100, &wg)
		bulkCli := newClient(protocol.ReplicaID(rng.Intn(3)+1), 8)
		bulk(ctx, h, bulkCli, cycle, &wg)
		time.Sleep(time.Duration(500+rng.Intn(700)) * time.Millisecond)

		var victims []protocol.ReplicaID
		if cycle%3 == 2 {
			victims = c.cl.IDs()
			allKills++
		} else {
			victims = []protocol.ReplicaID{protocol.ReplicaID(rng.Intn(3) + 1)}
			oneKills++
		}
		for _, id := range victims {
			c.kill(id)
		}
		// The load goes on against the survivors (or against nobody) for a while.
		time.Sleep(time.Duration(200+rng.Intn(500)) * time.Millisecond)
		for _, id := range victims {
			c.start(id)
		}
		time.Sleep(300 * time.Millisecond) // load across the restart
		stop()
		bulkCli.Close()
		wg.Wait()
		t1 := time.Now()
		waitReady(fmt.Sprintf("cycle %d", cycle))
		t2 := time.Now()

		// Every acknowledged unique write is readable: through a restarted replica (reads
		// are linearizable, so through one replica is through all), and at the end
		// through every replica.
		h.mu.Lock()
		acked := make(map[string]string, len(h.acked))
		for k, v := range h.acked {
			acked[k] = v
		}
		h.mu.Unlock()
		through := []protocol.ReplicaID{victims[rng.Intn(len(victims))]}
		if cycle == cycles-1 {
			through = c.cl.IDs()
		}
		for _, id := range through {
			verifyAcked(t, newClient(id, 512), acked, cycle, id)
		}
		t3 := time.Now()
		// Read every hot key of this cycle through each replica (recorded: the reads
		// are part of the history the checker judges).
		for lane, cli := range clients {
			for k := 0; k < 4; k++ {
				key := fmt.Sprintf("hot-%d-%d", cycle, k)
				if _, ok := h.do(context.Background(), cli, lane, protocol.Command{Op: protocol.OpGet, Key: []byte(key)}, 10*time.Second); !ok {
					t.Fatalf("cycle %d: read of %s through replica %d got no reply", cycle, key, lane+1)
				}
			}
		}
		h.mu.Lock()
		ops := append([]check.Op(nil), h.ops...)
		h.mu.Unlock()
		res := check.CheckLinearizable(ops, time.Minute)
		if res.Illegal() {
			path := filepath.Join(t.TempDir(), "history.html")
			res.Visualize(path)
			t.Fatalf("cycle %d: %v (visualization: %s)", cycle, res.Violation(), path)
		}
		if !res.Ok() {
			t.Logf("cycle %d: linearizability check timed out on %d operations (not a violation)", cycle, res.Ops)
		}
		t.Logf("cycle %d: killed %v; %d unique writes verified through %v; %d operations linearizable; %d writes acknowledged so far (ready %v, verify %v, check %v)",
			cycle, victims, len(acked), through, res.Ops, h.puts.Load(), t2.Sub(t1).Round(time.Millisecond), t3.Sub(t2).Round(time.Millisecond), time.Since(t3).Round(time.Millisecond))
	}
	// Every restart recovered from disk (a replica killed with acknowledged writes behind
	// it has records or a snapshot to start from).
	for _, id := range c.cl.IDs() {
		m := recoveredRE.FindAllStringSubmatch(c.logs[id].String(), -1)
		if len(m) < 2 {
			t.Errorf("replica %d: %d recovery reports, want one per start", id, len(m))
			continue
		}
		if n, _ := strconv.Atoi(m[len(m)-1][1]); n == 0 {
			t.Errorf("replica %d: the last restart recovered no records", id)
		}
	}
	snaps := regexp.MustCompile(`snapshot=snapshot-`).FindAllString(c.logs[1].String()+c.logs[2].String()+c.logs[3].String(), -1)
	t.Logf("%s: %d cycles (%d single kills, %d whole-cluster kills), %d writes acknowledged, %d operations in the history, %d restarts from a snapshot, 0 violations, %v",
		proto, cycles, oneKills, allKills, h.puts.Load(), len(h.ops), len(snaps), time.Since(began).Round(time.Second))
}

// verifyAcked reads every acknowledged unique key through cli (pipelined) and fails on a
// missing or different value. It closes cli.
func verifyAcked(t *testing.T, cli *client.Client, acked map[string]string, cycle int, id protocol.ReplicaID) {
	t.Helper()
	defer cli.Close()
	var mu sync.Mutex
	var bad []string
	var wg sync.WaitGroup
	for k, v := range acked {
		wg.Add(1)
		cli.Submit(protocol.Command{Op: protocol.OpGet, Key: []byte(k)}, func(rep protocol.Reply, err error) {
			defer wg.Done()
			if err != nil || rep.Result != protocol.ResultOK || string(rep.Value) != v {
				mu.Lock()
				bad = append(bad, fmt.Sprintf("%s: got %v %q (err %v), acknowledged %q", k, rep.Result, rep.Value, err, v))
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if len(bad) > 0 {
		t.Fatalf("cycle %d: %d of %d acknowledged writes not readable through replica %d, e.g. %s",
			cycle, len(bad), len(acked), id, bad[0])
	}
}

// TestReplicaRecoveryReports: a torn last record is cut off and reported (file and
// offset) and the replica starts; a damaged record followed by valid ones refuses to
// start with one line naming the file and the offset, exit status 1.
func TestReplicaRecoveryReports(t *testing.T) {
	bin := parliamentBin(t)
	dir := t.TempDir()
	base := testnet.FreeBase(t, 3)
	out, err := exec.Command(bin, "config", "--replicas", "3", "--port", strconv.Itoa(base), "--data", filepath.Join(dir, "data")).Output()
	if err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "cluster.yaml")
	os.WriteFile(cfg, out, 0o600)
	data := filepath.Join(dir, "data", "1")
	l, _, _, err := wal.Open(data, wal.Options{})
	if err != nil {
		t.Fatal(err)
	}
	var recs []protocol.Record
	for i := uint64(1); i <= 5; i++ {
		recs = append(recs, protocol.Record{Type: protocol.RecordInstance, Inst: protocol.Instance{
			ID: protocol.InstanceID{Num: i}, Status: protocol.StatusAccepted, Seq: i,
			VBallot: protocol.Ballot{Round: 1, Replica: 1},
			Cmds:    []protocol.Command{{ClientID: 9, Seq: i, Op: protocol.OpPut, Key: []byte("k"), Value: []byte("v")}}}})
	}
	if err := l.Append(recs); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	seg := filepath.Join(data, "0000000000000001.wal")
	good, err := os.ReadFile(seg)
	if err != nil {
		t.Fatal(err)
	}

	// Torn tail: three bytes of a frame header.
	os.WriteFile(seg, append(append([]byte(nil), good...), 3, 0, 0), 0o644)
	cmd := exec.Command(bin, "replica", "--config", cfg, "--id", "1")
	logs := &testnet.Buffer{}
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf(`msg="wal: torn tail cut off" replica=1 file=%s offset=%d`, seg, len(good))
	deadline := time.Now().Add(10 * time.Second)
	for !regexp.MustCompile(`msg="replica started"`).MatchString(logs.String()) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	if !strings.Contains(logs.String(), want) || !strings.Contains(logs.String(), "records=5") {
		t.Fatalf("torn tail: log lacks %q or records=5:\n%s", want, logs)
	}

	// Damage in the middle: a flipped byte in the second record's payload.
	bad := append([]byte(nil), good...)
	bad[len(good)/5+12] ^= 0xff
	os.WriteFile(seg, bad, 0o644)
	cmd = exec.Command(bin, "replica", "--config", cfg, "--id", "1", "--log-level", "error")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	err = cmd.Run()
	var ee *exec.ExitError
	msg := strings.TrimSpace(stderr.String())
	if !errors.As(err, &ee) || ee.ExitCode() != 1 {
		t.Fatalf("damaged log: %v, want exit status 1 (stderr %q)", err, msg)
	}
	if strings.Contains(msg, "\n") || !strings.Contains(msg, seg) || !regexp.MustCompile(`offset \d+`).MatchString(msg) || !strings.Contains(msg, "not a torn tail") {
		t.Fatalf("damaged log: stderr %q, want one line naming %s and the offset", msg, seg)
	}
	t.Logf("refused: %s", msg)
}
