// Package exporter serves a running replica's metrics (package metrics) over HTTP for
// `parliament replica --metrics ADDR`. It lives apart from package metrics so that the
// runtime (package replica) can import metrics to report latencies without an import
// cycle. Counters come from replica.Stats, read at every scrape; the commit and execution
// latency histograms fill only if the runtime calls metrics.Replica.ObserveCommit and
// ObserveExec.
package exporter

import (
	"context"
	"log/slog"

	"github.com/parliament-lab/parliament/metrics"
	"github.com/parliament-lab/parliament/replica"
)

// New returns r's collector, refreshed from r.Stats() before every scrape: engine counters
// (commits, fast and slow path, recoveries, elections), runtime counters (executed
// commands, fsyncs, records, messages, replies, redirects) and two queue depths:
// "replies" (commands received here still waiting for their reply) and "executor"
// (committed instances not yet executed).
func New(protocolName string, r *replica.Replica) *metrics.Replica {
	m := metrics.New(protocolName, r.ID())
	m.OnScrape(func() { Refresh(m, r.Stats()) })
	return m
}

// Refresh publishes one replica.Stats snapshot.
func Refresh(m *metrics.Replica, s replica.Stats) {
	m.SetEngineStats(s.Engine)
	m.SetRuntimeStats(metrics.RuntimeStats{
		ExecutedCmds: s.ExecutedCmds, Syncs: s.Syncs, Records: s.Records,
		Messages: s.Messages, Replies: s.Replies, Redirects: s.Redirects,
	})
	m.SetQueueDepth(metrics.QueueReplies, int(sub(s.Proposed, s.Replies+s.Redirects)))
	m.SetQueueDepth(metrics.QueueExecutor, int(sub(s.Committed, s.Executed)))
}

func sub(a, b uint64) uint64 {
	if a < b {
		return 0
	}
	return a - b
}

// ServeReplica serves r's metrics at http://addr/metrics until ctx is done. Its signature
// is the serveMetrics hook of cmd/parliament/replica.go. The protocol label is left
// empty: the hook does not pass it (ServeReplicaProtocol does).
func ServeReplica(ctx context.Context, addr string, r *replica.Replica, logger *slog.Logger) error {
	return ServeReplicaProtocol(ctx, addr, "", r, logger)
}

// ServeReplicaProtocol is ServeReplica with the protocol label.
func ServeReplicaProtocol(ctx context.Context, addr, protocolName string, r *replica.Replica, logger *slog.Logger) error {
	srv, err := metrics.Serve(addr, New(protocolName, r))
	if err != nil {
		return err
	}
	if logger != nil {
		logger.Info("serving metrics", "addr", "http://"+srv.Addr().String()+"/metrics")
	}
	<-ctx.Done()
	return srv.Close()
}
