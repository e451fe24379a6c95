package main

// End-to-end tests: real `parliament replica` processes on loopback, driven by real
// `parliament client` processes (and, for load during a failure, by the client library).
// They build the binary once per package run; -short skips them.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
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

	"github.com/parliament-lab/parliament/client"
	"github.com/parliament-lab/parliament/config"
	"github.com/parliament-lab/parliament/internal/testnet"
	"github.com/parliament-lab/parliament/protocol"
)

var (
	binOnce sync.Once
	binPath string
	binErr  error
	binDir  string
)

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// parliamentBin builds the binary once for every test of the package.
func parliamentBin(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("end-to-end test: skipped with -short")
	}
	binOnce.Do(func() {
		binDir, binErr = os.MkdirTemp("", "parliament-e2e-")
		if binErr != nil {
			return
		}
		binPath = filepath.Join(binDir, "parliament")
		out, err := exec.Command("go", "build", "-o", binPath, ".").CombinedOutput()
		if err != nil {
			binErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return binPath
}

// procCluster is a set of replica processes started from one generated cluster file,
// which a test can kill (SIGKILL) and start again.
type procCluster struct {
	t     *testing.T
	bin   string
	cfg   string
	cl    *config.Cluster
	args  []string // extra `parliament replica` flags
	mu    sync.Mutex
	procs map[protocol.ReplicaID]*exec.Cmd
	logs  map[protocol.ReplicaID]*testnet.Buffer // every incarnation's output, appended
}

// startE2E runs n non-durable replica processes.
func startE2E(t *testing.T, proto string, n int) *procCluster {
	return startProcs(t, proto, n, "--durable=false")
}

// startProcs generates a cluster file of n replicas on free loopback ports and starts them
// all with args; they are killed when the test ends, and their logs are printed if it
// failed.
func startProcs(t *testing.T, proto string, n int, args ...string) *procCluster {
	bin := parliamentBin(t)
	dir := t.TempDir()
	base := testnet.FreeBase(t, n)
	out, err := exec.Command(bin, "config", "--protocol", proto, "--replicas", strconv.Itoa(n),
		"--port", strconv.Itoa(base), "--data", filepath.Join(dir, "data")).Output()
	if err != nil {
		t.Fatalf("parliament config: %v", err)
	}
	cfg := filepath.Join(dir, "cluster.yaml")
	if err := os.WriteFile(cfg, out, 0o600); err != nil {
		t.Fatal(err)
	}
	cl, err := config.Load(cfg)
	if err != nil {
		t.Fatalf("generated config does not load: %v", err)
	}
	c := &procCluster{t: t, bin: bin, cfg: cfg, cl: cl, args: args,
		procs: map[protocol.ReplicaID]*exec.Cmd{}, logs: map[protocol.ReplicaID]*testnet.Buffer{}}
	for _, id := range cl.IDs() {
		c.logs[id] = &testnet.Buffer{}
		c.start(id)
	}
	t.Cleanup(func() {
		for _, id := range cl.IDs() {
			c.kill(id)
		}
		if t.Failed() {
			for _, id := range cl.IDs() {
				t.Logf("--- replica %d log (every incarnation) ---\n%s", id, c.logs[id])
			}
		}
	})
	return c
}

// start starts replica id's process (again).
func (c *procCluster) start(id protocol.ReplicaID) {
	args := append([]string{"replica", "--config", c.cfg, "--id", strconv.Itoa(int(id))}, c.args...)
	cmd := exec.Command(c.bin, args...)
	cmd.Stdout, cmd.Stderr = c.logs[id], c.logs[id]
	if err := cmd.Start(); err != nil {
		c.t.Fatal(err)
	}
	c.mu.Lock()
	c.procs[id] = cmd
	c.mu.Unlock()
}

// kill sends SIGKILL (no shutdown of any kind) to the replica process this test started,
// and reaps it.
func (c *procCluster) kill(id protocol.ReplicaID) {
	c.mu.Lock()
	cmd, ok := c.procs[id]
	delete(c.procs, id)
	c.mu.Unlock()
	if !ok {
		return
	}
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
}

// alive reports whether the process of replica id is still running (it exits on a
// refused recovery or a persistence error).
func (c *procCluster) alive(id protocol.ReplicaID) bool {
	c.mu.Lock()
	cmd := c.procs[id]
	c.mu.Unlock()
	return cmd != nil && cmd.ProcessState == nil
}

// client runs `parliament client` and returns its stdout, stderr and exit code.
func (c *procCluster) client(replica protocol.ReplicaID, args ...string) (string, string, int) {
	all := []string{"client", "--config", c.cfg, "--timeout", "5s", "--attempt-timeout", "300ms"}
	if replica != 0 {
		all = append(all, "--replica", strconv.Itoa(int(replica)))
	}
	cmd := exec.Command(c.bin, append(all, args...)...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		c.t.Fatal(err)
	}
	return out.String(), errb.String(), code
}

func (c *procCluster) mustPut(replica protocol.ReplicaID, k, v string) {
	c.t.Helper()
	if _, stderr, code := c.client(replica, "put", k, v); code != 0 {
		c.t.Fatalf("put %s=%s at replica %d: exit %d: %s", k, v, replica, code, stderr)
	}
}

func (c *procCluster) mustGet(replica protocol.ReplicaID, k, want string) {
	c.t.Helper()
	out, stderr, code := c.client(replica, "get", k)
	if code != 0 || out != want+"\n" {
		c.t.Fatalf("get %s at replica %d = %q (exit %d, %s), want %q", k, replica, out, code, stderr, want)
	}
}

// waitReady waits until a write through each replica succeeds.
func (c *procCluster) waitReady() {
	c.t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for _, id := range c.cl.IDs() {
		for {
			_, stderr, code := c.client(id, "put", "ready", strconv.Itoa(int(id)))
			if code == 0 {
				break
			}
			if time.Now().After(deadline) {
				c.t.Fatalf("replica %d not ready: %s", id, stderr)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}

var leaderRE = regexp.MustCompile(`msg="leader changed" replica=(\d+) leader=(\d+)`)

// leader returns the leader the replicas' logs agree on last.
func (c *procCluster) leader() protocol.ReplicaID {
	votes := map[string]int{}
	c.mu.Lock()
	running := make([]protocol.ReplicaID, 0, len(c.procs))
	for id := range c.procs {
		running = append(running, id)
	}
	c.mu.Unlock()
	for _, id := range running {
		m := leaderRE.FindAllStringSubmatch(c.logs[id].String(), -1)
		if len(m) > 0 {
			votes[m[len(m)-1][2]]++
		}
	}
	for l, v := range votes {
		if v > len(c.cl.Replicas)/2 && l != "0" {
			n, _ := strconv.Atoi(l)
			return protocol.ReplicaID(n)
		}
	}
	return 0
}

func TestE2EMultiPaxosFailover(t *testing.T) {
	c := startE2E(t, config.MultiPaxos, 3)
	c.waitReady()

	// Writes and reads through every replica.
	acked := map[string]string{}
	for _, id := range c.cl.IDs() {
		k, v := fmt.Sprintf("key-%d", id), fmt.Sprintf("value-%d", id)
		c.mustPut(id, k, v)
		acked[k] = v
	}
	for _, id := range c.cl.IDs() {
		for k, v := range acked {
			c.mustGet(id, k, v)
		}
	}
	if _, stderr, code := c.client(1, "get", "absent"); code != 1 || !strings.Contains(stderr, "not found") {
		t.Fatalf("get of an absent key: exit %d, stderr %q; want exit 1 and a message", code, stderr)
	}
	if _, stderr, code := c.client(2, "cas", "key-1", "value-1", "value-1b"); code != 0 {
		t.Fatalf("cas: exit %d: %s", code, stderr)
	}
	acked["key-1"] = "value-1b"
	if _, stderr, code := c.client(3, "cas", "key-1", "wrong", "x"); code != 1 || !strings.Contains(stderr, "value-1b") {
		t.Fatalf("failing cas: exit %d, stderr %q", code, stderr)
	}

	leader := c.leader()
	if leader == 0 {
		t.Fatal("no leader in the replicas' logs")
	}
	t.Logf("leader is replica %d; killing it with SIGKILL", leader)
	killedAt := time.Now()
	c.kill(leader)
	// Any live replica, as a user would (the client skips the dead one).
	var resumed time.Duration
	for i := 0; ; i++ {
		k, v := fmt.Sprintf("after-%d", i), "v"
		if _, _, code := c.client(0, "put", k, v); code == 0 {
			resumed = time.Since(killedAt)
			acked[k] = v
			break
		}
		if time.Since(killedAt) > 10*time.Second {
			t.Fatal("no write succeeded within 10s of the leader's death")
		}
	}
	t.Logf("failover: first write acknowledged %v after SIGKILL of the leader", resumed.Round(time.Millisecond))
	if resumed > 2*time.Second {
		t.Errorf("writes resumed after %v, want < 2s", resumed)
	}
	if nl := c.leader(); nl == leader {
		t.Errorf("survivors still report the dead replica %d as leader", leader)
	}
	for _, id := range c.cl.IDs() {
		if id == leader {
			continue
		}
		c.mustPut(id, fmt.Sprintf("post-%d", id), "p")
		acked[fmt.Sprintf("post-%d", id)] = "p"
	}
	// Every acknowledged write is still readable at every survivor.
	for _, id := range c.cl.IDs() {
		if id == leader {
			continue
		}
		for k, v := range acked {
			c.mustGet(id, k, v)
		}
	}
}

func TestE2EEPaxosKillOne(t *testing.T) {
	c := startE2E(t, config.EPaxos, 5)
	c.waitReady()
	for _, id := range c.cl.IDs() {
		c.mustPut(id, fmt.Sprintf("key-%d", id), fmt.Sprintf("value-%d", id))
	}
	for _, id := range c.cl.IDs() {
		for _, w := range c.cl.IDs() {
			c.mustGet(id, fmt.Sprintf("key-%d", w), fmt.Sprintf("value-%d", w))
		}
	}

	// Load from the client library: one pipelined client per replica, all writing to a
	// few shared keys so that instances of the victim become dependencies of everyone's.
	const victim = protocol.ReplicaID(5)
	recovery := time.Duration(50+25) * c.cl.Tick.D() // epaxos default RecoveryTicks + max jitter
	type load struct {
		c         *client.Client
		done      atomic.Int64
		lastAck   atomic.Int64 // unix nanos
		maxGap    atomic.Int64
		submitted atomic.Int64
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var loads []*load
	var wg sync.WaitGroup
	var failures atomic.Int64
	var victimAcked sync.Map
	for _, id := range c.cl.IDs() {
		cli, err := client.New(client.Options{Cluster: c.cl, Replica: id, Timeout: 300 * time.Millisecond, MaxOutstanding: 16})
		if err != nil {
			t.Fatal(err)
		}
		defer cli.Close()
		l := &load{c: cli}
		loads = append(loads, l)
		wg.Add(1)
		go func(id protocol.ReplicaID) {
			defer wg.Done()
			for i := 0; ctx.Err() == nil; i++ {
				k := fmt.Sprintf("hot-%d", i%4)
				v := fmt.Sprintf("%d-%d", id, i)
				l.submitted.Add(1)
				cli.Submit(protocol.Command{Op: protocol.OpPut, Key: []byte(k), Value: []byte(v)}, func(rep protocol.Reply, err error) {
					if err != nil || rep.Result != protocol.ResultOK {
						if !errors.Is(err, client.ErrClosed) {
							failures.Add(1)
						}
						return
					}
					now := time.Now().UnixNano()
					if prev := l.lastAck.Swap(now); prev != 0 && now-prev > l.maxGap.Load() {
						l.maxGap.Store(now - prev)
					}
					if id == victim {
						victimAcked.Store(v, k)
					}
					l.done.Add(1)
				})
			}
		}(id)
	}
	time.Sleep(500 * time.Millisecond) // steady load before the kill
	for _, l := range loads {
		l.maxGap.Store(0)
	}
	t.Logf("killing replica %d with SIGKILL", victim)
	c.kill(victim)
	time.Sleep(2 * time.Second)
	cancel()
	wg.Wait()

	// No command hangs: every submitted command completes (the victim's client moves to
	// another replica and retries with the same IDs).
	deadline := time.Now().Add(10 * time.Second)
	for i, l := range loads {
		for l.done.Load()+failures.Load() < l.submitted.Load() {
			if time.Now().After(deadline) {
				t.Fatalf("client of replica %d: %d of %d commands still pending 10s after the load stopped",
					i+1, l.submitted.Load()-l.done.Load(), l.submitted.Load())
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	if failures.Load() > 0 {
		t.Fatalf("%d commands failed", failures.Load())
	}
	for i, l := range loads {
		id := protocol.ReplicaID(i + 1)
		gap := time.Duration(l.maxGap.Load())
		t.Logf("replica %d: %d commands acknowledged, longest pause %v", id, l.done.Load(), gap.Round(time.Millisecond))
		if id != victim && gap > recovery+500*time.Millisecond {
			t.Errorf("replica %d paused %v after the kill, more than one recovery timeout (%v)", id, gap, recovery)
		}
	}
	// The survivors keep committing through the CLI, and agree on every key.
	for _, id := range c.cl.IDs() {
		if id != victim {
			c.mustPut(id, fmt.Sprintf("post-%d", id), "p")
		}
	}
	for _, id := range c.cl.IDs() {
		if id == victim {
			continue
		}
		for _, w := range c.cl.IDs() {
			c.mustGet(id, fmt.Sprintf("key-%d", w), fmt.Sprintf("value-%d", w))
			if w != victim {
				c.mustGet(id, fmt.Sprintf("post-%d", w), "p")
			}
		}
	}
	// The contended keys have one value, whichever survivor is asked.
	for k := 0; k < 4; k++ {
		out, _, code := c.client(1, "get", fmt.Sprintf("hot-%d", k))
		if code != 0 {
			t.Fatalf("hot-%d unreadable", k)
		}
		for _, id := range []protocol.ReplicaID{2, 3, 4} {
			c.mustGet(id, fmt.Sprintf("hot-%d", k), strings.TrimSuffix(out, "\n"))
		}
	}
}

// TestCLIErrors: bad files, flags, unreachable replicas and a wrong cluster ID each give
// one line on stderr and a non-zero exit.
func TestCLIErrors(t *testing.T) {
	bin := parliamentBin(t)
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		os.WriteFile(p, []byte(body), 0o600)
		return p
	}
	base := testnet.FreeBase(t, 3)
	good, err := exec.Command(bin, "config", "--replicas", "3", "--port", strconv.Itoa(base)).Output()
	if err != nil {
		t.Fatal(err)
	}
	goodPath := write("good.yaml", string(good))
	typo := write("typo.yaml", strings.Replace(string(good), "tick:", "tik:", 1))
	tests := []struct {
		name string
		args []string
		want string
		code int
	}{
		{"missing file", []string{"replica", "--config", filepath.Join(dir, "nope.yaml"), "--id", "1"}, "nope.yaml", 1},
		{"typo in file", []string{"replica", "--config", typo, "--id", "1"}, "tik", 1},
		{"bad id", []string{"replica", "--config", goodPath, "--id", "9"}, "--id 9", 1},
		{"no id", []string{"replica", "--config", goodPath}, "--id is required", 1},
		{"bad flag", []string{"replica", "--bogus"}, "flag provided but not defined", 2},
		{"bad protocol", []string{"config", "--protocol", "raft"}, `"raft"`, 1},
		{"unreachable", []string{"client", "--config", goodPath, "--replica", "2", "get", "k"}, "replica 2", 1},
		{"unreachable any", []string{"client", "--config", goodPath, "get", "k"}, "no replica reachable", 1},
		{"client no command", []string{"client", "--config", goodPath}, "missing command", 2},
		{"client bad arity", []string{"client", "--config", goodPath, "put", "k"}, "put takes 2", 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cmd := exec.Command(bin, tt.args...)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			err := cmd.Run()
			code := 0
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				code = ee.ExitCode()
			}
			msg := stderr.String()
			if code != tt.code || !strings.Contains(msg, tt.want) {
				t.Fatalf("exit %d, stderr %q; want exit %d mentioning %q", code, msg, tt.code, tt.want)
			}
			if tt.code == 1 && strings.Count(strings.TrimSpace(msg), "\n") > 0 {
				t.Errorf("more than one line: %q", msg)
			}
			if strings.Contains(msg, "goroutine") || strings.Contains(msg, "panic") {
				t.Errorf("stack trace: %q", msg)
			}
		})
	}

	// A client with another cluster ID talking to a live replica.
	c := startE2E(t, config.MultiPaxos, 3)
	c.waitReady()
	other := write("other.yaml", regexp.MustCompile(`cluster_id: \d+`).ReplaceAllString(mustRead(t, c.cfg),
		fmt.Sprintf("cluster_id: %d", c.cl.ClusterID^1)))
	cmd := exec.Command(bin, "client", "--config", other, "--replica", "1", "get", "k")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err == nil || !strings.Contains(stderr.String(), "cluster ID mismatch") ||
		strings.Count(strings.TrimSpace(stderr.String()), "\n") > 0 {
		t.Fatalf("wrong cluster: err %v, stderr %q; want one line naming the cluster ID mismatch", err, stderr.String())
	}
}

func mustRead(t *testing.T, p string) string {
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
