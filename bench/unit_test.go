package bench

import (
	"bytes"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/parliament-lab/parliament/bench/result"
	"github.com/parliament-lab/parliament/protocol"
	"github.com/parliament-lab/parliament/workloads"
)

func TestParseFail(t *testing.T) {
	f, err := ParseFail("CA@4s")
	if err != nil || f.Site != "CA" || f.At != 4*time.Second {
		t.Fatalf("%+v %v", f, err)
	}
	for _, bad := range []string{"CA", "@4s", "CA@", "CA@-1s", "CA@x"} {
		if _, err := ParseFail(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	ok := Config{Protocol: "epaxos", Replicas: 5, Duration: time.Second}
	ok.defaults()
	if err := ok.Validate(); err != nil {
		t.Fatal(err)
	}
	for name, mut := range map[string]func(c *Config){
		"protocol":      func(c *Config) { c.Protocol = "raft" },
		"even epaxos":   func(c *Config) { c.Replicas = 4 },
		"duration":      func(c *Config) { c.Duration = 0 },
		"outstanding":   func(c *Config) { c.Outstanding = 0 },
		"fail too late": func(c *Config) { c.Fail = &FailSpec{Site: "CA", At: time.Hour} },
		"conflict":      func(c *Config) { c.Workload.ConflictPct = 200 },
		"value size":    func(c *Config) { c.Workload.ValueSize = -1 },
		"tick":          func(c *Config) { c.Tick = -time.Millisecond },
		"election":      func(c *Config) { c.ElectionTicks = -5 },
		"recovery":      func(c *Config) { c.RecoveryTicks = -2 },
		"retry":         func(c *Config) { c.RetryTimeout = -time.Second },
	} {
		c := ok
		mut(&c)
		if err := c.Validate(); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	ok.RecoveryTicks = -1 // the engine's defaults: allowed
	if err := ok.Validate(); err != nil {
		t.Errorf("recovery ticks -1: %v", err)
	}
	if !strings.HasPrefix(ok.Name, "custom/epaxos/n5/c0/none") {
		t.Errorf("derived name %q", ok.Name)
	}
}

func TestElectionTicksFollowTheWAN(t *testing.T) {
	c := Config{Tick: 10 * time.Millisecond}
	if got := c.electionTicks(nil); got != 50 {
		t.Errorf("no WAN: %d, want 50", got)
	}
	// aws-5site's largest RTT is 204.4ms: twice that is 41 ticks of 10ms, below 50.
	if got := c.electionTicks(workloads.AWS5()); got != 50 {
		t.Errorf("aws-5site: %d, want 50", got)
	}
	slow := &workloads.Matrix{Sites: []string{"A", "B"}, RTTMillis: [][]float64{{0, 400}, {400, 0}}}
	if got := c.electionTicks(slow); got != 80 {
		t.Errorf("400ms RTT: %d, want 80", got)
	}
	c.ElectionTicks = 7
	if c.electionTicks(workloads.AWS5()) != 7 {
		t.Error("explicit ElectionTicks ignored")
	}
}

// TestPreferredLeaderWinsFirst starts a 5-site Multi-Paxos cluster with the farthest
// site as --leader: its replica must be the first and only leader, although the nearer
// replicas hear each other sooner.
func TestPreferredLeaderWinsFirst(t *testing.T) {
	m := workloads.AWS5()
	c, err := startCluster(clusterOptions{protocol: workloads.MultiPaxos, n: 5, matrix: m, leader: "JP", seed: 7,
		tick: 10 * time.Millisecond, electionTicks: 50})
	if err != nil {
		t.Fatal(err)
	}
	defer c.stop()
	done := make(chan protocol.ReplicaID)
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for {
			if l := c.agreedLeader(); l != 0 {
				done <- l
				return
			}
			select {
			case <-tick.C:
			case <-stop:
				return
			}
		}
	}()
	select {
	case l := <-done:
		if c.sites[l-1] != "JP" {
			t.Fatalf("leader %d at %s, want JP", l, c.sites[l-1])
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("no agreed leader after 20s: %v", c.leaderViews())
	}
	if e := c.totals().elections; e > 1 {
		t.Fatalf("%d elections before the first leader was agreed", e)
	}
}

func TestDelayLineOrderAndDelay(t *testing.T) {
	d := newDelayLine()
	defer d.close()
	var mu sync.Mutex
	var got []int
	var at []time.Duration
	done := make(chan struct{})
	start := time.Now()
	for i, ms := range []int{30, 10, 20, 10} {
		d.push(start.Add(time.Duration(ms)*time.Millisecond), func() {
			mu.Lock()
			got = append(got, i)
			at = append(at, time.Since(start))
			if len(got) == 4 {
				close(done)
			}
			mu.Unlock()
		})
	}
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("delay line stuck")
	}
	if want := []int{1, 3, 2, 0}; !equalInts(got, want) {
		t.Fatalf("order %v, want %v (time order, FIFO on ties)", got, want)
	}
	if at[0] < 10*time.Millisecond || at[3] < 30*time.Millisecond {
		t.Fatalf("ran early: %v", at)
	}
	d.close()
	d.push(time.Now(), func() { t.Error("ran after close") })
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestDefaultSuiteShape(t *testing.T) {
	cfgs := DefaultSuite(SuiteOptions{Seed: 3})
	count := map[string]int{}
	for _, c := range cfgs {
		count[c.Experiment]++
		c.defaults()
		if err := c.Validate(); err != nil {
			t.Fatalf("%s: %v", c.Name, err)
		}
	}
	if count[ExpLatency] != 4 || count[ExpThroughput] != 8 || count[ExpSweep] != 10 || count[ExpFailure] != 2 {
		t.Fatalf("suite %v", count)
	}
	// The budget: at most 10 minutes on 2 cores; keep the load time well under.
	if est := Estimate(cfgs); est > 4*time.Minute {
		t.Fatalf("default suite load time %v", est)
	}
	if n := len(DefaultSuite(SuiteOptions{Repeat: 3})); n != 3*len(cfgs) {
		t.Fatalf("repeat 3: %d runs", n)
	}
}

func TestWriteTable(t *testing.T) {
	f := &result.File{Runs: []result.Run{
		{Experiment: ExpLatency, Protocol: "epaxos", Sites: []result.Site{{Site: "CA", Optimum: 60, Commit: result.Percentiles{P50: 63, P99: 70}}}},
		{Experiment: ExpFailure, Protocol: "multipaxos", Fail: &result.Failure{Site: "CA", AtS: 4, GapS: 0.93}},
	}}
	var b bytes.Buffer
	if err := WriteTable(&b, f); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"1.050", "60.0", "63.0", "0.93"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, b.String())
		}
	}
}

// TestWriteTableExternal: the replica and host counters of an external run print as
// "n/a", with a note saying why; the clients' resends and redirects print as measured.
func TestWriteTableExternal(t *testing.T) {
	in := result.Run{Name: "in", Experiment: ExpThroughput, Protocol: "epaxos", WAN: "none", FastPathRatio: 0.97, MsgsPerCmd: 7.25, Elections: 0}
	ext := result.Run{Name: "ext", Experiment: ExpThroughput, Protocol: "epaxos", WAN: "none", External: true, Retries: 31, Redirects: 17}
	var b bytes.Buffer
	if err := WriteTable(&b, &result.File{Runs: []result.Run{in, ext}}); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(b.String(), "\n")
	find := func(prefix string, cells ...string) string {
		t.Helper()
		for _, l := range lines {
			if f := strings.Fields(l); len(f) >= len(cells) && slices.Equal(f[:len(cells)], cells) {
				return l
			}
		}
		t.Fatalf("no %s line starting %q:\n%s", prefix, cells, b.String())
		return ""
	}
	if l := find("throughput", "epaxos", "0", "none", "0", "0.97", "7.25"); strings.Contains(l, notMeasured) {
		t.Errorf("in-process run: %q", l)
	}
	if l := find("throughput", "epaxos", "0", "none", "0", "n/a", "n/a", "n/a"); countNA(l) != 5 {
		t.Errorf("external run, throughput table: %q", l)
	}
	if l := find("disturbances", "ext", "n/a", "n/a", "31", "17", "n/a"); countNA(l) != 6 {
		t.Errorf("external run, disturbances: %q", l)
	}
	if !strings.Contains(b.String(), "not measured on an external cluster") {
		t.Errorf("no note:\n%s", b.String())
	}
	// Without an external run, no note.
	b.Reset()
	WriteTable(&b, &result.File{Runs: []result.Run{in}})
	if strings.Contains(b.String(), notMeasured) {
		t.Errorf("in-process only:\n%s", b.String())
	}
	// A file written before Run.External: the meta says the runs were external.
	b.Reset()
	old := ext
	old.External = false
	WriteTable(&b, &result.File{Meta: result.Meta{Emulation: "external"}, Runs: []result.Run{old}})
	if countNA(b.String()) != 11 {
		t.Errorf("old external file:\n%s", b.String())
	}
}

// TestExternalRunSummaryAndWarnings: an external run's unmeasured counters feed neither
// the summary (no fast-path ratio of 0) nor the warnings (no "ended without the leader":
// the bench cannot see the replicas' leader); its clients' resends do.
func TestExternalRunSummaryAndWarnings(t *testing.T) {
	ext := result.Run{Name: "x", Protocol: "epaxos", External: true, ThroughputOps: 10}
	for _, s := range Summarize([]result.Run{ext}) {
		if s.Metric == "fast_path_ratio" {
			t.Errorf("external run summarized its unmeasured fast path: %+v", s)
		}
	}
	mp := result.Run{Protocol: "multipaxos", Leader: "CA", External: true}
	if w := Warnings(&mp); len(w) != 0 {
		t.Errorf("external Multi-Paxos run: %q", w)
	}
	mp.Retries, mp.RetryTimeoutS = 2, 1
	if w := strings.Join(Warnings(&mp), ";"); !strings.Contains(w, "2 client resend(s) after 1s") {
		t.Errorf("external run's resends: %q", w)
	}
}

// countNA counts the table cells that say "not measured".
func countNA(table string) int {
	n := 0
	for _, f := range strings.Fields(table) {
		if f == notMeasured {
			n++
		}
	}
	return n
}

func TestRecoveryAndRetryTimeoutsFollowTheWAN(t *testing.T) {
	c := Config{Tick: 10 * time.Millisecond}
	if got := c.recoveryTicks(nil); got != 50 {
		t.Errorf("recovery ticks without WAN: %d, want 50", got)
	}
	slow := &workloads.Matrix{Sites: []string{"A", "B"}, RTTMillis: [][]float64{{0, 400}, {400, 0}}}
	if got := c.recoveryTicks(slow); got != 80 {
		t.Errorf("recovery ticks at 400ms RTT: %d, want 80", got)
	}
	c.RecoveryTicks = -1
	if got := c.recoveryTicks(slow); got != 0 {
		t.Errorf("RecoveryTicks -1 (defaults): %d, want 0", got)
	}
	c.RecoveryTicks = 0
	if got := c.retryTimeout(nil); got != time.Second {
		t.Errorf("retry timeout without WAN: %v, want 1s", got)
	}
	if got := c.retryTimeout(slow); got != 2*time.Second {
		t.Errorf("retry timeout at 400ms RTT: %v, want 5 round trips", got)
	}
	c.Fail = &FailSpec{Site: "A", At: time.Second}
	if got := c.retryTimeout(slow); got != 900*time.Millisecond {
		t.Errorf("retry timeout with a crash: %v, want 2 round trips + 100ms", got)
	}
	c.RetryTimeout = 3 * time.Second
	if got := c.retryTimeout(slow); got != 3*time.Second {
		t.Errorf("explicit retry timeout ignored: %v", got)
	}
}

func TestWarningsNameEachDisturbance(t *testing.T) {
	quiet := result.Run{Protocol: "multipaxos", Leader: "CA", LeaderEnd: "CA", HostStall: result.Percentiles{P99: 0.3, Max: 4}}
	if w := Warnings(&quiet); len(w) != 0 {
		t.Fatalf("steady run warned: %v", w)
	}
	r := quiet
	r.Elections, r.Recoveries, r.Retries, r.Redirects, r.Dropped, r.RetryTimeoutS = 1, 2, 3, 4, 5, 1
	r.HostStall.Max, r.OtherCPU = 900, 1.6
	r.WarmupElections, r.LeaderEnd = 6, "JP"
	w := strings.Join(Warnings(&r), "\n")
	for _, want := range []string{"1 leader election", "2 Multi-Paxos campaigns", "3 client resend", "4 redirect", "5 peer message", "1.6 CPUs", "900ms",
		"6 leader election(s) during the warm-up", "ended with the leader at JP"} {
		if !strings.Contains(w, want) {
			t.Errorf("warnings lack %q:\n%s", want, w)
		}
	}
	// A crash run expects elections, recoveries, resends and drops; only the machine counts.
	r.Fail = &result.Failure{Site: "CA"}
	r.HostStall.Max, r.OtherCPU = 4, 0.01
	if w := Warnings(&r); len(w) != 0 {
		t.Fatalf("crash run warned about its crash: %v", w)
	}
	// A throughput run saturates the cores itself: its own stalls are no disturbance,
	// unless other processes' CPU is unknown on a latency run.
	sat := result.Run{Experiment: "throughput", HostStall: result.Percentiles{P99: 150, Max: 400}, OtherCPU: 0.05}
	if w := Warnings(&sat); len(w) != 0 {
		t.Fatalf("saturated throughput run warned: %v", w)
	}
	sat.Experiment, sat.OtherCPU = "latency", 0
	if w := Warnings(&sat); len(w) != 1 || !strings.Contains(w[0], "400ms") {
		t.Fatalf("latency run with unknown CPU and stalls: %v", w)
	}
}

func TestOtherCPU(t *testing.T) {
	at := time.Now()
	a := cpuSample{at: at, busy: 10 * time.Second, self: 2 * time.Second, ok: true}
	b := cpuSample{at: at.Add(2 * time.Second), busy: 13 * time.Second, self: 3 * time.Second, ok: true}
	if v, ok := otherCPU(a, b); !ok || v < 0.99 || v > 1.01 {
		t.Fatalf("3s busy, 1s ours, over 2s: %v %v, want 1 CPU", v, ok)
	}
	if _, ok := otherCPU(cpuSample{}, b); ok {
		t.Fatal("unknown sample gave a value")
	}
	if s := sampleCPU(); runtime.GOOS == "linux" && (!s.ok || s.busy <= 0) {
		t.Fatalf("linux sample %+v", s)
	}
}

func TestStallProbe(t *testing.T) {
	base := time.Now()
	p := &stallProbe{from: base, hist: NewLatency()}
	p.observe(base.Add(-time.Second), base.Add(-time.Millisecond)) // warm-up: not recorded
	p.observe(base, base.Add(stallInterval+200*time.Millisecond))  // woke up 200ms late
	p.observe(base, base.Add(stallInterval))                       // on time
	if st := p.hist.Percentiles(); p.hist.Count() != 2 || st.Max < 199 || st.Max > 201 {
		t.Fatalf("count %d, %+v", p.hist.Count(), st)
	}
	// The goroutine records about one observation per interval and stops.
	began := time.Now()
	live := startStallProbe(began)
	time.Sleep(20 * stallInterval) // the probe measures wall-clock time: let some pass
	h := live.stop()
	// At most one observation per interval of the time that really passed (a loaded
	// machine oversleeps), and at least one.
	if n, most := h.Count(), int64(time.Since(began)/stallInterval)+1; n < 1 || n > most {
		t.Fatalf("%d observations in %v (at most %d)", n, time.Since(began), most)
	}
}

func TestWriteWarnings(t *testing.T) {
	f := &result.File{Runs: []result.Run{{Name: "a"}, {Name: "latency/multipaxos", Warnings: []string{"1 leader election(s) without a failure"}}}}
	var b bytes.Buffer
	if err := WriteWarnings(&b, f); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), "WARNING latency/multipaxos: 1 leader election") || strings.Contains(b.String(), "WARNING a:") {
		t.Fatalf("warnings:\n%s", b.String())
	}
	b.Reset()
	WriteWarnings(&b, &result.File{Runs: []result.Run{{Name: "a"}}})
	if b.Len() != 0 {
		t.Fatalf("no disturbed run, yet: %q", b.String())
	}
}
