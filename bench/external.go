package bench

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/parliament-lab/parliament/bench/result"
	"github.com/parliament-lab/parliament/client"
	"github.com/parliament-lab/parliament/config"
	"github.com/parliament-lab/parliament/protocol"
	"github.com/parliament-lab/parliament/workloads"
)

// RunExternal benchmarks a running cluster described by a cluster file: for every site in
// the file, cfg.Clients clients (package client) prefer that site's replica, so clients
// are placed by site as the replicas are; run the bench binary on (or near) those hosts.
// Clients run in closed loop, or in open loop with cfg.RateOps > 0 (Poisson arrivals, the
// same schedule, in-flight cap, backlog and latency correction as Run: openLoop). The
// protocol is the cluster's; crashes (--fail) are not supported, since the bench did not
// start the replicas. The optimum is computed when cfg.Matrix knows every site of the file.
//
// The bench sees only its clients: the runs are marked result.Run.External, and what
// only the replicas or the process running them could tell (fast-path ratio, messages and
// bytes per command, elections, recoveries, dropped messages, host stalls) is not
// measured. Retries and Redirects are the clients' (client.Stats) within the window;
// cfg.RetryTimeout, when set, is the clients' Options.Timeout.
func RunExternal(ctx context.Context, meta result.Meta, path string, cfgs []Config, progress Progress) (*result.File, error) {
	cl, err := config.Load(path)
	if err != nil {
		return nil, err
	}
	f := &result.File{Meta: meta}
	seen := map[string]bool{}
	for _, cfg := range cfgs {
		cfg.Protocol = cl.Protocol
		cfg.Replicas = len(cl.Replicas)
		cfg.Name = ""
		cfg.defaults()
		if seen[cfg.Name] {
			continue // --protocols listed more than the cluster's one
		}
		seen[cfg.Name] = true
		if cfg.Fail != nil {
			return f, fmt.Errorf("bench: --fail is not supported with --config (external cluster): the bench cannot crash replicas it did not start")
		}
		if cfg.Compress && !cl.Compress {
			return f, fmt.Errorf("bench: --compress with --config: an external cluster compresses when its cluster file says compress: true, and %s does not", path)
		}
		cfg.Compress = cl.Compress // its clients ask for s2 too (client.Options)
		r, err := runExternal(ctx, cl, cfg, progress)
		if err != nil {
			return f, err
		}
		f.Runs = append(f.Runs, r)
	}
	f.Meta.ElapsedS = time.Since(meta.Started).Seconds()
	f.Summary = Summarize(f.Runs)
	return f, nil
}

// extBacklog is the open-loop backlog bound of external runs: openLoopBacklog, as in
// Run; a variable so that a test can overflow it in a short run.
var extBacklog = openLoopBacklog

// extClient is one client of an external run. The run's goroutines (the open-loop
// scheduler, the client's reader calling back) share its generator, schedule and
// histograms under mu.
type extClient struct {
	mu           sync.Mutex
	c            *client.Client
	gen          *workloads.Generator
	place        uint64    // the client's place in the load: seeds gen and its arrivals
	open         *openLoop // open loop; nil = closed loop
	commit, exec *Latency
	ops, errs    int64
	bins         []int64
}

// extRun is the load of one run on an external cluster.
type extRun struct {
	ctx       context.Context
	w         measureWindow
	completed atomic.Int64
	wg        sync.WaitGroup // one per submitted command (until its callback returns) and the scheduler
}

// submit sends ec's next command. Its latency counts from start, or from now when start is
// zero (closed loop).
func (x *extRun) submit(ec *extClient, start time.Time) {
	// The generator reuses its key and value buffers at the next Next, which another
	// goroutine (the client's callback, the scheduler) may call as soon as mu is free: copy
	// them under mu.
	ec.mu.Lock()
	op := ec.gen.Next()
	cmd := protocol.Command{Op: protocol.OpGet, Key: append([]byte(nil), op.Key...)}
	if !op.Read {
		cmd.Op, cmd.Value = protocol.OpPut, append([]byte(nil), op.Value...)
	}
	ec.mu.Unlock()
	if start.IsZero() {
		start = time.Now()
	}
	x.wg.Add(1)
	ec.c.Submit(cmd, func(rep protocol.Reply, err error) {
		defer x.wg.Done()
		x.complete(ec, start, rep, err)
	})
}

// complete records a command's outcome as siteLoad.complete does, and sends what comes
// next: in closed loop a new command, in open loop the oldest arrival waiting for the slot
// this one freed. The client answers redirects and resends timed-out commands itself, so
// only a refusal (protocol.ResultError) counts as an error; a command the client failed
// with ErrClosed was still in flight when the run ended, and is not counted, as the
// in-process load drops those too.
func (x *extRun) complete(ec *extClient, start time.Time, rep protocol.Reply, err error) {
	now := time.Now()
	ec.mu.Lock()
	if err == nil {
		if rep.Result == protocol.ResultError {
			ec.errs++
		}
		x.w.countBin(ec.bins, now)
		x.completed.Add(1)
		if x.w.measure(start, now, &rep, ec.commit, ec.exec) {
			ec.ops++
		}
	} else if now.Before(x.w.end) {
		ec.errs++ // the client gave up before the end of the run
	}
	var next time.Time // closed loop: the next command's latency counts from its send
	more := true
	if ec.open != nil {
		next, more = ec.open.done()
	}
	ec.mu.Unlock()
	if !more || err != nil || !now.Before(x.w.end) || x.ctx.Err() != nil {
		return
	}
	x.submit(ec, next)
}

// schedule runs the open-loop arrivals of all clients until the end of the load: each
// due arrival is sent at once when its client has a free slot, else queued or dropped
// (openLoop.arrive), as siteLoad.run does in-process.
func (x *extRun) schedule(clients []*extClient) {
	defer x.wg.Done()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	var starts []time.Time
	for {
		next := x.w.end
		for _, ec := range clients {
			ec.mu.Lock()
			if ec.open.next.Before(next) {
				next = ec.open.next
			}
			ec.mu.Unlock()
		}
		timer.Reset(time.Until(next))
		select {
		case <-x.ctx.Done():
			return
		case <-timer.C:
		}
		now := time.Now()
		if !now.Before(x.w.end) {
			return
		}
		for _, ec := range clients {
			starts = starts[:0]
			ec.mu.Lock()
			ec.errs += ec.open.arrive(now, func(at time.Time) { starts = append(starts, at) })
			ec.mu.Unlock()
			// Submitted outside mu: Submit calls back at once on a closed client.
			for _, at := range starts {
				x.submit(ec, at)
			}
		}
	}
}

func runExternal(ctx context.Context, cl *config.Cluster, cfg Config, progress Progress) (result.Run, error) {
	if err := cfg.Validate(); err != nil {
		return result.Run{}, err
	}
	var sites []string
	home := map[string]protocol.ReplicaID{}
	for _, r := range cl.Replicas {
		if _, ok := home[r.Site]; !ok {
			home[r.Site] = r.ID
			sites = append(sites, r.Site)
		}
	}
	// The client library resends after a fixed timeout (no doubling, unlike the
	// in-process load): --retry-timeout, or the library's default.
	retry := cfg.RetryTimeout
	if retry <= 0 {
		retry = client.DefaultTimeout
	}
	nbins := int((cfg.Warmup+cfg.Duration)/binWidth) + 2
	ratePerClient := workloads.SplitRate(cfg.RateOps, len(sites)*cfg.Clients)
	bySite := map[string][]*extClient{}
	var all []*extClient
	for si, s := range sites {
		for i := range cfg.Clients {
			// The workload and the arrivals follow from the seed and the client's place
			// (place, numbered as Run numbers its clients), so runs repeat; the client ID
			// is the client library's random one, because the cluster outlives the run: a
			// repetition (--repeat) or a rerun with the same IDs would restart their
			// sequence numbers at 1, and the replicas' sessions would take its writes for
			// duplicates and not apply them.
			place := uint64(cfg.Seed)<<20 + uint64(cfg.Repeat)<<12 + uint64(si*cfg.Clients+i) + 1
			c, err := client.New(client.Options{Cluster: cl, Replica: home[s], MaxOutstanding: cfg.Outstanding + 1, Timeout: retry})
			if err != nil {
				for _, x := range all {
					x.c.Close()
				}
				return result.Run{}, err
			}
			gen, _ := workloads.NewGenerator(cfg.Workload, place, cfg.Seed)
			ec := &extClient{c: c, gen: gen, place: place, commit: NewLatency(), exec: NewLatency(), bins: make([]int64, nbins)}
			bySite[s] = append(bySite[s], ec)
			all = append(all, ec)
		}
	}
	// The clients are connected: the load starts now.
	start := time.Now()
	x := &extRun{ctx: ctx, w: measureWindow{start: start, mFrom: start.Add(cfg.Warmup), end: start.Add(cfg.Warmup + cfg.Duration)}}
	if ratePerClient > 0 {
		// Arrivals are due from start; the first ones fire as soon as the scheduler runs.
		for _, ec := range all {
			ec.open = newOpenLoop(ratePerClient, cfg.Seed, ec.place, start, cfg.Outstanding, extBacklog)
		}
		x.wg.Add(1)
		go x.schedule(all)
	} else {
		for _, ec := range all {
			for range cfg.Outstanding {
				x.submit(ec, time.Time{})
			}
		}
	}
	// The clients' resends and redirects count in the window, as in-process: their
	// counters are read when it opens and when it closes.
	var before client.Stats
	tookBefore := false
	total := cfg.Warmup + cfg.Duration
	for time.Now().Before(x.w.end) && ctx.Err() == nil {
		if !tookBefore && !time.Now().Before(x.w.mFrom) {
			before, tookBefore = clientStats(all), true
		}
		if progress != nil {
			progress(cfg.Name, time.Since(start), total, x.completed.Load())
		}
		wait := min(100*time.Millisecond, time.Until(x.w.end))
		if !tookBefore {
			wait = min(wait, time.Until(x.w.mFrom))
		}
		select {
		case <-ctx.Done():
		case <-time.After(wait):
		}
	}
	after := clientStats(all)
	if !tookBefore {
		before = after // the window passed unobserved (a stalled machine): count nothing
	}
	// Closing fails what is still in flight (their callbacks end the loops).
	for _, ec := range all {
		ec.c.Close()
	}
	x.wg.Wait()
	if ctx.Err() != nil {
		return result.Run{}, ctx.Err()
	}
	var loads []*siteLoad
	for _, s := range sites {
		l := &siteLoad{site: s, commit: NewLatency(), exec: NewLatency(), bins: make([]int64, nbins)}
		for _, ec := range bySite[s] {
			l.commit.Merge(ec.commit)
			l.exec.Merge(ec.exec)
			l.measuredOp += ec.ops
			l.errors += ec.errs
			for i, v := range ec.bins {
				l.bins[i] += v
			}
		}
		loads = append(loads, l)
	}
	var m *workloads.Matrix
	if cfg.Matrix != nil {
		m, _ = cfg.Matrix.Subset(sites...) // nil (no optimum) when the matrix lacks a site
	}
	leader := ""
	if cl.Protocol == workloads.MultiPaxos {
		leader = cfg.Leader
	}
	r := cfg.collect(m, leader, loads, totals{}, totals{}, 0)
	r.External = true
	r.Retries = int64(after.Resends - before.Resends)
	r.Redirects = int64(after.Redirects - before.Redirects)
	r.RetryTimeoutS = retry.Seconds()
	r.Warnings = Warnings(&r)
	return r, nil
}

// clientStats sums the counters of the clients of a run.
func clientStats(clients []*extClient) client.Stats {
	var sum client.Stats
	for _, ec := range clients {
		st := ec.c.Stats()
		sum.Resends += st.Resends
		sum.Redirects += st.Redirects
	}
	return sum
}
