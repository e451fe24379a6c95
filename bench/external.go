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
// the file, cfg.Clients closed-loop clients (package client) prefer that site's replica,
// so clients are placed by site as the replicas are; run the bench binary on (or near)
// those hosts. The protocol is the cluster's; crashes (--fail) and open loop are not
// supported here. The optimum is computed when cfg.Matrix knows every site of the file.
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
		if cfg.Fail != nil || cfg.RateOps > 0 {
			return f, fmt.Errorf("bench: --fail and --rate are not supported with --config (external cluster)")
		}
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
	start := time.Now()
	mFrom, end := start.Add(cfg.Warmup), start.Add(cfg.Warmup+cfg.Duration)
	type extClient struct {
		mu           sync.Mutex // the starting goroutines and the client's callbacks share the generator and histograms
		c            *client.Client
		gen          *workloads.Generator
		commit, exec *Latency
		ops, errs    int64
		bins         []int64
	}
	var completed atomic.Int64
	var wg sync.WaitGroup
	bySite := map[string][]*extClient{}
	var all []*extClient
	nbins := int((cfg.Warmup+cfg.Duration)/binWidth) + 2
	for si, s := range sites {
		for i := range cfg.Clients {
			id := uint64(cfg.Seed)<<20 + uint64(si*cfg.Clients+i) + 1
			c, err := client.New(client.Options{Cluster: cl, Replica: home[s], ClientID: id, MaxOutstanding: cfg.Outstanding + 1})
			if err != nil {
				for _, x := range all {
					x.c.Close()
				}
				return result.Run{}, err
			}
			gen, _ := workloads.NewGenerator(cfg.Workload, id, cfg.Seed)
			ec := &extClient{c: c, gen: gen, commit: NewLatency(), exec: NewLatency(), bins: make([]int64, nbins)}
			bySite[s] = append(bySite[s], ec)
			all = append(all, ec)
		}
	}
	var issue func(ec *extClient)
	issue = func(ec *extClient) {
		if time.Now().After(end) || ctx.Err() != nil {
			wg.Done()
			return
		}
		ec.mu.Lock()
		op := ec.gen.Next()
		cmd := protocol.Command{Op: protocol.OpPut, Key: append([]byte(nil), op.Key...), Value: op.Value}
		ec.mu.Unlock()
		if op.Read {
			cmd.Op, cmd.Value = protocol.OpGet, nil
		}
		sent := time.Now()
		ec.c.Submit(cmd, func(rep protocol.Reply, err error) {
			now := time.Now()
			ec.mu.Lock()
			if err != nil {
				ec.errs++
			} else {
				if b := int(now.Sub(start) / binWidth); b < len(ec.bins) {
					ec.bins[b]++
				}
				completed.Add(1)
				if !sent.Before(mFrom) && !now.After(end) {
					exec := now.Sub(sent)
					ec.exec.Record(exec)
					ec.commit.Record(max(0, exec-time.Duration(rep.ExecDelayMicros)*time.Microsecond))
					ec.ops++
				}
			}
			ec.mu.Unlock()
			issue(ec)
		})
	}
	for _, ec := range all {
		for range cfg.Outstanding {
			wg.Add(1)
			go issue(ec)
		}
	}
	total := cfg.Warmup + cfg.Duration
	for time.Now().Before(end) && ctx.Err() == nil {
		if progress != nil {
			progress(cfg.Name, time.Since(start), total, completed.Load())
		}
		select {
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond):
		}
	}
	// Closing fails what is still in flight (their callbacks end the loops).
	for _, ec := range all {
		ec.c.Close()
	}
	wg.Wait()
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
	r.Warnings = Warnings(&r)
	return r, nil
}
