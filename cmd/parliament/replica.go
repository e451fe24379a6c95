package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime/debug"

	"github.com/parliament-lab/parliament/config"
	"github.com/parliament-lab/parliament/protocol"
	"github.com/parliament-lab/parliament/replica"
)

func init() {
	register(command{
		name:    "replica",
		summary: "run one replica of a cluster until SIGINT/SIGTERM",
		run:     runReplica,
	})
}

// replicaGOGC is the garbage collector target a replica runs with unless GOGC is set.
const replicaGOGC = 400

// serveMetrics serves /metrics for r on addr until ctx is done. The metrics work
// (Prometheus) sets it; nil means --metrics is refused.
var serveMetrics func(ctx context.Context, addr string, r *replica.Replica, logger *slog.Logger) error

const replicaExamples = `  parliament config --protocol multipaxos --replicas 3 --port 7000 > cluster.yaml
  parliament replica --config cluster.yaml --id 1 &
  parliament replica --config cluster.yaml --id 2 &
  parliament replica --config cluster.yaml --id 3 &
  parliament replica --config cluster.yaml --id 1 --durable=false --log-level debug`

func runReplica(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("replica", "--config FILE --id N [--durable=false] [--snapshot-every N] [--truncate-bytes N] [--metrics ADDR]", replicaExamples, stderr)
	path := fs.String("config", "cluster.yaml", "cluster file (see 'parliament config')")
	id := fs.Uint("id", 0, "this replica's ID in the cluster file (1..N)")
	durable := fs.Bool("durable", true, "keep a write-ahead log and snapshots in the replica's data directory and fsync before answering; false keeps nothing (overrides the cluster file's durable field when given)")
	snapEvery := fs.Int("snapshot-every", replica.DefaultSnapshotEvery, "executed commands between state-machine snapshots (each compacts the engine and truncates the log); 0 or less = never")
	truncBytes := fs.Int64("truncate-bytes", replica.DefaultTruncateBytes, "log growth (bytes) after which a snapshot also truncates the log and is written to a snapshot file")
	metrics := fs.String("metrics", "", "serve Prometheus /metrics on this host:port (overrides the cluster file)")
	level := fs.String("log-level", "info", "log level: debug, info, warn or error")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "parliament replica: unexpected argument %q\n", fs.Arg(0))
		fs.Usage()
		return errUsage
	}
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(*level)); err != nil {
		return fmt.Errorf("--log-level %q: use debug, info, warn or error", *level)
	}
	cl, err := config.Load(*path)
	if err != nil {
		return err
	}
	if *id == 0 {
		return fmt.Errorf("--id is required: this replica's ID in %s (1..%d)", *path, len(cl.Replicas))
	}
	self, ok := cl.Lookup(protocol.ReplicaID(*id))
	if !ok {
		return fmt.Errorf("--id %d: %s has replicas 1..%d", *id, *path, len(cl.Replicas))
	}
	if flagSet(fs, "durable") {
		cl.Durable = durable
	}
	metricsAddr := self.Metrics
	if flagSet(fs, "metrics") {
		metricsAddr = *metrics
	}
	if metricsAddr != "" {
		if err := config.CheckAddress(metricsAddr); err != nil {
			return fmt.Errorf("--metrics %q %v; write host:port, like 127.0.0.1:9000", metricsAddr, err)
		}
		if serveMetrics == nil {
			return errors.New("--metrics: this build has no metrics endpoint")
		}
	}

	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: lvl}))
	if os.Getenv("GOGC") == "" {
		// The transport's receive buffers and the store's values are short-lived garbage
		// produced at hundreds of thousands of commands per second: a larger heap target
		// cuts the collector's share of the CPU (10-20% more commands per CPU-second in
		// replica's BenchmarkRuntime) for a few hundred MB. GOGC in the environment wins.
		debug.SetGCPercent(replicaGOGC)
	}
	rid := protocol.ReplicaID(*id)
	if *truncBytes < 1 {
		return fmt.Errorf("--truncate-bytes %d: want at least 1 (1 = truncate at every snapshot)", *truncBytes)
	}
	// The cluster file's snapshot_every and truncate_bytes apply unless the flag is given.
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	if !given["snapshot-every"] && cl.SnapshotEvery != 0 {
		*snapEvery = cl.SnapshotEvery
	}
	if !given["truncate-bytes"] && cl.TruncateBytes != 0 {
		*truncBytes = cl.TruncateBytes
	}
	opts := replica.Options{Cluster: cl, ID: rid, Logger: logger, SnapshotEvery: *snapEvery, TruncateBytes: *truncBytes}
	if *snapEvery <= 0 {
		opts.SnapshotEvery = -1
	}
	dataDir := "none (durable=false: nothing survives a restart)"
	if cl.IsDurable() {
		opts.DataDir = cl.DataDirFor(rid)
		dataDir = opts.DataDir
	} else {
		logger.Warn("durable=false: the log is not written; this replica restarts empty and must catch up from its peers",
			"replica", rid)
	}
	r, err := replica.Start(opts)
	if err != nil {
		return err
	}
	defer r.Stop()
	logger.Info("replica started", "replica", rid, "protocol", cl.Protocol, "replicas", len(cl.Replicas),
		"addr", r.Addr(), "site", self.Site, "durable", cl.IsDurable(), "data_dir", dataDir,
		"snapshot_every", opts.SnapshotEvery, "tick", cl.Tick)

	mctx, cancel := context.WithCancel(ctx)
	defer cancel()
	metricsErr := make(chan error, 1)
	if metricsAddr != "" {
		go func() { metricsErr <- serveMetrics(mctx, metricsAddr, r, logger) }()
	}
	select {
	case <-ctx.Done():
	case <-r.Done():
		return r.Err()
	case err := <-metricsErr:
		if err != nil {
			return fmt.Errorf("metrics on %s: %w", metricsAddr, err)
		}
		<-ctx.Done()
	}
	logger.Info("stopping", "replica", rid)
	r.Stop()
	if err := r.Err(); err != nil {
		// replica.ErrStopTimeout (a disk call that never returned: the process exits
		// anyway, with status 1), or a log failure while stopping.
		return err
	}
	st := r.Stats()
	logger.Info("stopped", "replica", rid, "committed", st.Committed, "executed_cmds", st.ExecutedCmds, "replies", st.Replies,
		"fsyncs", st.Syncs, "records", st.Records, "snapshots", st.Snapshots)
	return nil
}

// flagSet reports whether the flag was given on the command line.
func flagSet(fs *flag.FlagSet, name string) bool {
	found := false
	fs.Visit(func(f *flag.Flag) { found = found || f.Name == name })
	return found
}
