package bench

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/parliament-lab/parliament/bench/result"
	"github.com/parliament-lab/parliament/protocol"
	"github.com/parliament-lab/parliament/workloads"
)

// Experiment names (result.Run.Experiment); the plotter draws one chart kind per name.
const (
	ExpLatency    = "latency"    // chart (a) and (e): per-site latency on a WAN
	ExpThroughput = "throughput" // chart (b): throughput vs conflict rate
	ExpSweep      = "sweep"      // chart (c): open-loop latency vs throughput
	ExpFailure    = "failure"    // chart (d): throughput through a replica crash
	ExpCustom     = "custom"
)

// Config is one benchmark run.
type Config struct {
	Name        string // unique in a results file; derived when empty
	Experiment  string
	Protocol    string // workloads.EPaxos or workloads.MultiPaxos
	Replicas    int
	WAN         string            // name for the results: aws-5site, aws-3site, none or a file
	Matrix      *workloads.Matrix // resolved WAN (ResolveWAN); nil = none. Sized to Replicas by Run.
	Leader      string            // Multi-Paxos leader site; "" = the first replica's site
	Workload    workloads.Spec
	Clients     int     // per site
	Outstanding int     // per client (closed loop), or the in-flight cap (open loop)
	RateOps     float64 // open loop: total offered load in commands/s over all clients; 0 = closed loop
	Duration    time.Duration
	Warmup      time.Duration
	Durable     bool
	Compress    bool // s2 compression on the replicas' peer connections
	Fail        *FailSpec
	Seed        int64
	Repeat      int

	Tick          time.Duration // engine tick; default 10ms
	ElectionTicks int           // Multi-Paxos; 0 = see electionTicks
	RecoveryTicks int           // EPaxos; 0 = see recoveryTicks
	RetryTimeout  time.Duration // client resend timeout; 0 = see retryTimeout
	TimelineStep  time.Duration // default 250ms (100ms for failure runs)
	Logger        *slog.Logger
}

// FailSpec crashes the replica at Site At after the load started.
type FailSpec struct {
	Site string
	At   time.Duration
}

// ParseFail parses --fail SITE@DURATION.
func ParseFail(s string) (*FailSpec, error) {
	for i := len(s) - 1; i >= 0; i-- {
		if s[i] == '@' {
			d, err := time.ParseDuration(s[i+1:])
			if err != nil || s[:i] == "" || d <= 0 {
				break
			}
			return &FailSpec{Site: s[:i], At: d}, nil
		}
	}
	return nil, fmt.Errorf("bench: --fail %q: want SITE@DURATION, like CA@5s", s)
}

// Progress receives a run's progress: elapsed and total time of the current run and the
// commands completed so far. Called about every 100ms from the runner's goroutine.
type Progress func(run string, elapsed, total time.Duration, ops int64)

func (c *Config) defaults() {
	if c.Replicas == 0 {
		c.Replicas = 5
	}
	if c.Clients == 0 {
		c.Clients = 1
	}
	if c.Outstanding == 0 {
		c.Outstanding = 1
	}
	if c.Tick == 0 {
		c.Tick = 10 * time.Millisecond
	}
	if c.TimelineStep == 0 {
		c.TimelineStep = 250 * time.Millisecond
		if c.Fail != nil {
			c.TimelineStep = 100 * time.Millisecond
		}
	}
	if c.Experiment == "" {
		c.Experiment = ExpCustom
	}
	if c.WAN == "" {
		c.WAN = workloads.WANNone
	}
	c.Workload = c.Workload.Defaults()
	if c.Name == "" {
		c.Name = fmt.Sprintf("%s/%s/n%d/c%s/%s", c.Experiment, c.Protocol, c.Replicas, strconv.FormatFloat(c.Workload.ConflictPct, 'f', -1, 64), c.WAN)
		if c.RateOps > 0 {
			c.Name += "/rate" + strconv.FormatFloat(c.RateOps, 'f', -1, 64)
		}
		if c.Repeat > 0 {
			c.Name += "/r" + strconv.Itoa(c.Repeat)
		}
	}
}

// Validate reports the first bad field.
func (c *Config) Validate() error {
	switch c.Protocol {
	case workloads.EPaxos, workloads.MultiPaxos:
	default:
		return fmt.Errorf("bench: protocol %q: want epaxos or multipaxos", c.Protocol)
	}
	if c.Replicas < 1 || (c.Protocol == workloads.EPaxos && (c.Replicas < 3 || c.Replicas%2 == 0)) {
		return fmt.Errorf("bench: %d replicas: EPaxos needs an odd number >= 3 (3, 5, 7)", c.Replicas)
	}
	if c.Duration <= 0 {
		return fmt.Errorf("bench: duration %v: want > 0", c.Duration)
	}
	if c.Warmup < 0 {
		return fmt.Errorf("bench: warmup %v: want >= 0", c.Warmup)
	}
	if c.Clients < 1 || c.Outstanding < 1 {
		return fmt.Errorf("bench: clients %d, outstanding %d: want >= 1", c.Clients, c.Outstanding)
	}
	if c.RateOps < 0 {
		return fmt.Errorf("bench: rate %v: want >= 0", c.RateOps)
	}
	if c.Tick < 0 || c.TimelineStep < 0 {
		return fmt.Errorf("bench: tick %v, timeline step %v: want >= 0 (0 = default)", c.Tick, c.TimelineStep)
	}
	if c.ElectionTicks < 0 {
		return fmt.Errorf("bench: election ticks %d: want >= 0 (0 = from the WAN)", c.ElectionTicks)
	}
	if c.RecoveryTicks < -1 {
		return fmt.Errorf("bench: recovery ticks %d: want >= 0 (0 = from the WAN), or -1 (the engine's defaults)", c.RecoveryTicks)
	}
	if c.RetryTimeout < 0 {
		return fmt.Errorf("bench: retry timeout %v: want >= 0 (0 = from the WAN)", c.RetryTimeout)
	}
	if c.Fail != nil && (c.Fail.At <= 0 || c.Fail.At >= c.Warmup+c.Duration) {
		return fmt.Errorf("bench: --fail at %v is outside the run (warm-up %v + duration %v)", c.Fail.At, c.Warmup, c.Duration)
	}
	return c.Workload.Defaults().Validate()
}

// electionTicks picks the Multi-Paxos election timeout for a run: at least 50 ticks
// (500ms-1s at the 10ms tick), and twice the WAN's largest round trip if that is more, so
// that a leader is replaced only when it is gone. The engine default (10 ticks) is meant
// for a real deployment; in-process, 2 cores running five saturated replicas and their
// clients can stall an event loop past 100ms, and a spurious election would measure the
// machine, not the protocol (results.json counts elections per run to show there were
// none).
func (c *Config) electionTicks(m *workloads.Matrix) int {
	if c.ElectionTicks > 0 {
		return c.ElectionTicks
	}
	return max(50, int(math.Ceil(2*maxRTT(m)/float64(c.Tick/time.Millisecond))))
}

// recoveryTicks picks the EPaxos recovery timeout for a run, like electionTicks: at least
// 50 ticks (the engine's default) and twice the WAN's largest round trip. Setting it also
// sets the runtime's suspicion timeout (replica: 2 x recovery_ticks) instead of its
// default of 20 ticks, which on a WAN is shorter than an ordinary slow-path commit seen
// from a far replica (two round trips to a majority plus the one-way Commit): replicas
// then started Explicit Prepare on instances whose leader was alive, and the recoveries
// competed with the leaders (SOSP'13 §4.7). Negative = the defaults of the engine and
// the runtime.
func (c *Config) recoveryTicks(m *workloads.Matrix) int {
	switch {
	case c.RecoveryTicks > 0:
		return c.RecoveryTicks
	case c.RecoveryTicks < 0:
		return 0
	}
	return max(50, int(math.Ceil(2*maxRTT(m)/float64(c.Tick/time.Millisecond))))
}

// retryTimeout is how long a client waits for a reply before it resends the command
// (same client and seq, so it executes at most once; each further resend of the command
// waits twice as long). A resend is needed only for a command that was lost (a forward
// to a crashed Multi-Paxos leader, a message a full transport queue dropped); for one
// that is merely slow it only adds load. With a crash to survive: twice the largest round
// trip plus 100ms, so that commands lost with the crashed replica are resent soon.
// Otherwise five times the largest round trip, at least 1s: well above what a healthy
// run's slowest command takes (an EPaxos slow path with dependencies), so that a resend
// in a steady run (result.Run.Retries) means something went wrong.
func (c *Config) retryTimeout(m *workloads.Matrix) time.Duration {
	if c.RetryTimeout > 0 {
		return c.RetryTimeout
	}
	rtt := time.Duration(maxRTT(m) * float64(time.Millisecond))
	if c.Fail != nil {
		return 2*rtt + 100*time.Millisecond
	}
	return max(time.Second, 5*rtt)
}

// maxRTT is the largest round trip of m in milliseconds (0 without a WAN).
func maxRTT(m *workloads.Matrix) float64 {
	v := 0.0
	if m != nil {
		for _, row := range m.RTTMillis {
			for _, x := range row {
				v = math.Max(v, x)
			}
		}
	}
	return v
}

// Run runs one benchmark on an in-process cluster and returns its result.
func Run(ctx context.Context, cfg Config, progress Progress) (result.Run, error) {
	cfg.defaults()
	if err := cfg.Validate(); err != nil {
		return result.Run{}, err
	}
	m, err := cfg.Matrix.ForReplicas(cfg.Replicas)
	if err != nil {
		return result.Run{}, err
	}
	leader := ""
	if cfg.Protocol == workloads.MultiPaxos {
		leader = cfg.Leader
		if leader == "" {
			leader = workloads.PlaceReplicas(m, cfg.Replicas)[0]
		}
	}
	eTicks, rTicks := cfg.electionTicks(m), cfg.recoveryTicks(m)
	co := clusterOptions{
		protocol: cfg.Protocol, n: cfg.Replicas, matrix: m, leader: leader, durable: cfg.Durable, compress: cfg.Compress,
		seed: cfg.Seed, tick: cfg.Tick, electionTicks: eTicks, recoveryTicks: rTicks, logger: cfg.Logger,
	}
	c, err := startLed(ctx, co, cfg.Protocol == workloads.MultiPaxos)
	if err != nil {
		return result.Run{}, err
	}
	defer c.stop()

	// Client sites: one per distinct replica site, each at its first replica.
	var sites []string
	home := map[string]int{}
	for i, s := range c.sites {
		if _, ok := home[s]; !ok {
			home[s] = i
			sites = append(sites, s)
		}
	}
	nClients := len(sites) * cfg.Clients
	lo := &loadOptions{
		spec: cfg.Workload, clientsPerSite: cfg.Clients, outstanding: cfg.Outstanding,
		ratePerClient: workloads.SplitRate(cfg.RateOps, nClients), seed: cfg.Seed,
		warmup: cfg.Warmup, duration: cfg.Duration, retryTimeout: cfg.retryTimeout(m),
		maxBacklog: openLoopBacklog,
	}
	var completed atomic.Int64
	atStart := c.totals()
	start := time.Now()
	probe := startStallProbe(start.Add(cfg.Warmup))
	loads := make([]*siteLoad, len(sites))
	clientBase := uint64(cfg.Seed)<<20 + uint64(cfg.Repeat)<<12 + 1
	for i, s := range sites {
		loads[i] = newSiteLoad(c, lo, s, home[s], clientBase+uint64(i*cfg.Clients), start, &completed)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for _, l := range loads {
		wg.Add(1)
		go func() { defer wg.Done(); l.run(stop) }()
	}

	total := cfg.Warmup + cfg.Duration
	var before, after totals
	var cpuBefore cpuSample
	tookBefore, crashed := false, false
	var crashAt time.Duration
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	var runErr error
loop:
	for {
		el := time.Since(start)
		if !tookBefore && el >= cfg.Warmup {
			before, tookBefore = c.totals(), true
			cpuBefore = sampleCPU()
		}
		if cfg.Fail != nil && !crashed && el >= cfg.Fail.At {
			idx := -1
			for i, s := range c.sites {
				if s == cfg.Fail.Site {
					idx = i
					break
				}
			}
			if idx < 0 {
				runErr = fmt.Errorf("bench: --fail site %q is not one of %v", cfg.Fail.Site, c.sites)
				break loop
			}
			crashAt = time.Since(start)
			c.crash(idx)
			crashed = true
		}
		if progress != nil {
			progress(cfg.Name, min(el, total), total, completed.Load())
		}
		if el >= total {
			break
		}
		wait := 100 * time.Millisecond
		if cfg.Fail != nil && !crashed && cfg.Fail.At-el < wait {
			wait = max(cfg.Fail.At-el, 0)
		}
		select {
		case <-ctx.Done():
			runErr = ctx.Err()
			break loop
		case <-time.After(wait):
		}
	}
	after = c.totals()
	cpuAfter := sampleCPU()
	leaderEnd := c.agreedLeader()
	close(stop)
	wg.Wait()
	stall := probe.stop()
	if runErr != nil {
		return result.Run{}, runErr
	}
	if !tookBefore {
		before = after
	}
	r := cfg.collect(m, leader, loads, before, after, crashAt)
	r.HostStall = stall.Percentiles()
	r.WarmupElections = before.elections - atStart.elections
	if cfg.Protocol == workloads.MultiPaxos && leaderEnd != 0 {
		r.LeaderEnd = c.sites[leaderEnd-1]
	}
	if tookBefore {
		if v, ok := otherCPU(cpuBefore, cpuAfter); ok {
			r.OtherCPU = v
		}
	}
	r.RetryTimeoutS = lo.retryTimeout.Seconds()
	switch cfg.Protocol {
	case workloads.MultiPaxos:
		r.ElectionTimeoutMs = float64(eTicks) * float64(cfg.Tick) / float64(time.Millisecond)
	case workloads.EPaxos:
		r.RecoveryTimeoutMs = float64(rTicks) * float64(cfg.Tick) / float64(time.Millisecond)
	}
	r.Warnings = Warnings(&r)
	return r, nil
}

// leaderAttempts is how many times Run starts a Multi-Paxos cluster whose first leader
// is not the preferred one before it gives up.
const leaderAttempts = 3

// startLed starts the cluster and, for Multi-Paxos, waits until every replica follows the
// leader at o.leader. The preferred leader campaigns first (multipaxos.Config.
// PreferredLeader), so another replica wins only if the machine stalled the start for a
// whole election timeout; as the preferred replica never takes leadership back, the
// cluster is then started again.
func startLed(ctx context.Context, o clusterOptions, multiPaxos bool) (*cluster, error) {
	var views []protocol.ReplicaID
	for range leaderAttempts {
		c, err := startCluster(o)
		if err != nil || !multiPaxos {
			return c, err
		}
		deadline := time.Now().Add(30 * time.Second)
		for {
			l := c.agreedLeader()
			if l != 0 && c.sites[l-1] == o.leader && c.totals().elections > 0 {
				// The replicas refresh their engines' counters on their ticks: waiting
				// for the first election to show keeps it out of the warm-up's count.
				return c, nil
			}
			if (l != 0 && c.sites[l-1] != o.leader) || time.Now().After(deadline) {
				views = c.leaderViews()
				c.stop()
				break
			}
			select {
			case <-ctx.Done():
				c.stop()
				return nil, ctx.Err()
			case <-time.After(o.tick):
			}
		}
	}
	return nil, fmt.Errorf("bench: no Multi-Paxos leader at %s in %d starts (replicas last believed %v)", o.leader, leaderAttempts, views)
}

func (c *cluster) leaderViews() []protocol.ReplicaID {
	out := make([]protocol.ReplicaID, len(c.replicas))
	for i, r := range c.replicas {
		out[i] = r.Leader()
	}
	return out
}

// collect turns the sites' measurements into a result.Run.
func (cfg *Config) collect(m *workloads.Matrix, leader string, loads []*siteLoad, before, after totals, crashAt time.Duration) result.Run {
	r := result.Run{
		Name: cfg.Name, Experiment: cfg.Experiment, Protocol: cfg.Protocol, Replicas: cfg.Replicas,
		Conflict: cfg.Workload.ConflictPct, WAN: cfg.WAN, Leader: leader, Durable: cfg.Durable, Compress: cfg.Compress,
		Clients: cfg.Clients, Outstanding: cfg.Outstanding, RateOps: cfg.RateOps, Repeat: cfg.Repeat, Seed: cfg.Seed,
		DurationS: cfg.Duration.Seconds(), WarmupS: cfg.Warmup.Seconds(), TimelineStepS: cfg.TimelineStep.Seconds(),
	}
	opt, _ := workloads.Optimal(m, leader)
	allCommit, allExec := NewLatency(), NewLatency()
	var ops int64
	nb := 0
	for _, l := range loads {
		nb = max(nb, len(l.bins))
	}
	bins := make([]int64, nb)
	for _, l := range loads {
		s := result.Site{Site: l.site, Ops: l.measuredOp, Commit: l.commit.Percentiles(), Exec: l.exec.Percentiles()}
		for _, o := range opt {
			if o.Site == l.site {
				s.Optimum = o.For(cfg.Protocol)
				if cfg.Protocol == workloads.EPaxos {
					s.OptimumSlow = o.EPaxosSlow
				}
			}
		}
		r.Sites = append(r.Sites, s)
		allCommit.Merge(l.commit)
		allExec.Merge(l.exec)
		ops += l.measuredOp
		r.Errors += l.errors
		r.Retries += l.retries
		r.Redirects += l.redirects
		for i, v := range l.bins {
			bins[i] += v
		}
	}
	r.Commit, r.Exec = allCommit.Percentiles(), allExec.Percentiles()
	r.CommitCDF, r.ExecCDF = allCommit.CDF(200), allExec.CDF(200)
	r.ThroughputOps = float64(ops) / cfg.Duration.Seconds()
	if ops > 0 {
		r.MsgsPerCmd = float64(after.msgs-before.msgs) / float64(ops)
		r.BytesPerCmd = float64(after.bytes-before.bytes) / float64(ops)
	}
	r.Elections = after.elections - before.elections
	r.Recoveries = after.recoveries - before.recoveries
	r.Dropped = after.dropped - before.dropped
	if fast, slow := after.fast-before.fast, after.slow-before.slow; fast+slow > 0 {
		r.FastPathRatio = float64(fast) / float64(fast+slow)
	}
	// Timeline at TimelineStep from the 10ms bins, over the whole run.
	per := int(cfg.TimelineStep / binWidth)
	if per < 1 {
		per = 1
	}
	end := int((cfg.Warmup + cfg.Duration) / binWidth)
	for i := 0; i+per <= end; i += per {
		var n int64
		for _, v := range bins[i : i+per] {
			n += v
		}
		r.Timeline = append(r.Timeline, result.Point{TS: float64(i+per) * binWidth.Seconds(), Ops: n})
	}
	if cfg.Fail != nil {
		f := &result.Failure{Site: cfg.Fail.Site, AtS: crashAt.Seconds()}
		// Longest stretch of empty 10ms bins from the crash to the end of the run, and
		// the same between warm-up and crash for comparison.
		from := int(crashAt / binWidth)
		gap, at := longestEmpty(bins, from, min(end, len(bins)))
		f.GapS = float64(gap) * binWidth.Seconds()
		if gap > 0 {
			f.GapAtS = float64(at) * binWidth.Seconds()
		}
		before, _ := longestEmpty(bins, int(cfg.Warmup/binWidth), from)
		f.GapBeforeS = float64(before) * binWidth.Seconds()
		r.Fail = f
	}
	return r
}

// longestEmpty returns the length and start of the longest run of zero bins in [from, to).
func longestEmpty(bins []int64, from, to int) (length, start int) {
	run := 0
	for i := max(from, 0); i < to && i < len(bins); i++ {
		if bins[i] != 0 {
			run = 0
			continue
		}
		run++
		if run > length {
			length, start = run, i-run+1
		}
	}
	return length, start
}

// ErrNoRuns is returned by RunAll when there is nothing to run.
var ErrNoRuns = errors.New("bench: no runs")
