// Package metrics exposes a replica's counters and latency histograms in the Prometheus
// text format (github.com/prometheus/client_golang) for `parliament replica --metrics ADDR`.
//
// The runtime (package replica) owns one *Replica and calls it from its event loop:
// ObserveCommit / ObserveExec per command, ObserveFsync per group commit, SetEngineStats
// with the engine's cumulative counters, SetQueueDepth for its queues. Every method is
// safe for concurrent use and cheap (atomics and lock-free histograms), so calling them on
// the hot path costs little; scraping happens on the HTTP server's goroutines.
package metrics

import (
	"context"
	"errors"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"

	"github.com/parliament-lab/parliament/protocol"
)

// Namespace prefixes every metric name.
const Namespace = "parliament"

// Queue names the runtime is expected to report with SetQueueDepth (others are allowed).
const (
	QueueProposals = "proposals" // client commands waiting to be proposed
	QueueExecutor  = "executor"  // committed instances waiting for their dependencies
	QueueInbox     = "inbox"     // peer messages received, not yet stepped
	QueueReplies   = "replies"   // replies waiting to be written to clients
)

// latencyBuckets span a loopback commit (~100 µs) to a WAN election (seconds).
var latencyBuckets = prometheus.ExponentialBuckets(0.0001, 2, 18) // 100 µs .. ~13 s

// Replica collects one replica's metrics in its own registry.
type Replica struct {
	reg *prometheus.Registry

	stats struct {
		proposed, committed, fast, slow, recoveries, elections atomic.Uint64
	}
	// Runtime counters: incremented by the Observe methods or raised to a snapshot by
	// SetRuntimeStats, whichever the caller uses.
	executed, fsyncs, fsyncRecs, messages, replies, redirects atomic.Uint64
	commitLat, execLat, fsyncLat                              prometheus.Histogram
	queues                                                    *prometheus.GaugeVec

	queueMu   sync.Mutex
	queueSeen map[string]prometheus.Gauge

	hookMu sync.Mutex
	hooks  []func()
}

// RuntimeStats are cumulative counters of the runtime (replica.Stats has them all), for
// callers that publish snapshots instead of calling the Observe methods.
type RuntimeStats struct {
	ExecutedCmds uint64 // commands applied to the store
	Syncs        uint64 // log fsyncs (group commits)
	Records      uint64 // records made durable
	Messages     uint64 // peer messages sent
	Replies      uint64 // replies sent to clients
	Redirects    uint64 // commands answered with a redirect
}

// New returns the collector of replica id running protocol ("epaxos" or "multipaxos");
// both become constant labels of every metric. Go runtime and process metrics are
// included.
func New(protocolName string, id protocol.ReplicaID) *Replica {
	labels := prometheus.Labels{"protocol": protocolName, "replica": strconv.FormatUint(uint64(id), 10)}
	m := &Replica{reg: prometheus.NewRegistry(), queueSeen: map[string]prometheus.Gauge{}}
	counterFunc := func(name, help string, v *atomic.Uint64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{
			Namespace: Namespace, Name: name, Help: help, ConstLabels: labels,
		}, func() float64 { return float64(v.Load()) })
	}
	hist := func(name, help string) prometheus.Histogram {
		return prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: Namespace, Name: name, Help: help, ConstLabels: labels, Buckets: latencyBuckets,
		})
	}
	m.commitLat = hist("commit_latency_seconds", "Time from a command's arrival at this replica to its commit.")
	m.execLat = hist("exec_latency_seconds", "Time from a command's arrival at this replica to its execution.")
	m.fsyncLat = hist("fsync_seconds", "Duration of one write-ahead-log group commit (write + fsync).")
	m.queues = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: Namespace, Name: "queue_depth", Help: "Items waiting in one of the runtime's queues.", ConstLabels: labels,
	}, []string{"queue"})
	m.reg.MustRegister(
		counterFunc("proposed_total", "Client commands proposed at this replica (engine stats).", &m.stats.proposed),
		counterFunc("commits_total", "Instances committed with this replica as command leader / leader (engine stats).", &m.stats.committed),
		counterFunc("fast_path_total", "EPaxos instances led here that committed on the fast path.", &m.stats.fast),
		counterFunc("slow_path_total", "EPaxos instances led here that needed the Accept phase.", &m.stats.slow),
		counterFunc("recoveries_total", "EPaxos explicit-prepare recoveries or Multi-Paxos elections started here.", &m.stats.recoveries),
		counterFunc("elections_total", "Multi-Paxos: times this replica became leader.", &m.stats.elections),
		counterFunc("executed_total", "Commands executed by this replica's state machine.", &m.executed),
		counterFunc("fsyncs_total", "Write-ahead-log fsyncs (one per group commit).", &m.fsyncs),
		counterFunc("fsync_records_total", "Records made durable by those fsyncs.", &m.fsyncRecs),
		counterFunc("messages_sent_total", "Messages sent to peers.", &m.messages),
		counterFunc("replies_total", "Replies sent to clients of this replica.", &m.replies),
		counterFunc("redirects_total", "Client commands answered with a redirect.", &m.redirects),
		m.commitLat, m.execLat, m.fsyncLat, m.queues,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return m
}

// Registry returns the registry (to add runtime-specific collectors or gather in tests).
func (m *Replica) Registry() *prometheus.Registry { return m.reg }

// SetEngineStats publishes the engine's cumulative counters (protocol.Stats). Call it from
// the event loop whenever convenient (for example after each Ready); the counters must only
// grow, which the engine's Stats guarantee.
func (m *Replica) SetEngineStats(s protocol.Stats) {
	m.stats.proposed.Store(s.Proposed)
	m.stats.committed.Store(s.Committed)
	m.stats.fast.Store(s.FastPath)
	m.stats.slow.Store(s.SlowPath)
	m.stats.recoveries.Store(s.Recoveries)
	m.stats.elections.Store(s.Elections)
}

// ObserveCommit records one command's commit latency at this replica.
func (m *Replica) ObserveCommit(d time.Duration) { m.commitLat.Observe(d.Seconds()) }

// ObserveExec records one executed command and its execution latency at this replica.
func (m *Replica) ObserveExec(d time.Duration) {
	m.executed.Add(1)
	m.execLat.Observe(d.Seconds())
}

// ObserveFsync records one group commit that made records durable in d.
func (m *Replica) ObserveFsync(d time.Duration, records int) {
	m.fsyncs.Add(1)
	m.fsyncRecs.Add(uint64(records))
	m.fsyncLat.Observe(d.Seconds())
}

// SetRuntimeStats publishes a snapshot of the runtime's cumulative counters. A counter
// never goes down: each is raised to the snapshot's value if that is higher.
func (m *Replica) SetRuntimeStats(s RuntimeStats) {
	raise := func(a *atomic.Uint64, v uint64) {
		for {
			cur := a.Load()
			if v <= cur || a.CompareAndSwap(cur, v) {
				return
			}
		}
	}
	raise(&m.executed, s.ExecutedCmds)
	raise(&m.fsyncs, s.Syncs)
	raise(&m.fsyncRecs, s.Records)
	raise(&m.messages, s.Messages)
	raise(&m.replies, s.Replies)
	raise(&m.redirects, s.Redirects)
}

// OnScrape registers f to run before every scrape (to refresh snapshots).
func (m *Replica) OnScrape(f func()) {
	m.hookMu.Lock()
	m.hooks = append(m.hooks, f)
	m.hookMu.Unlock()
}

// SetQueueDepth publishes the current length of a named queue (see the Queue constants).
func (m *Replica) SetQueueDepth(queue string, n int) {
	m.queueMu.Lock()
	g, ok := m.queueSeen[queue]
	if !ok {
		g = m.queues.WithLabelValues(queue)
		m.queueSeen[queue] = g
	}
	m.queueMu.Unlock()
	g.Set(float64(n))
}

// Handler serves the metrics in the Prometheus exposition format.
func (m *Replica) Handler() http.Handler {
	g := prometheus.GathererFunc(func() ([]*dto.MetricFamily, error) {
		m.hookMu.Lock()
		hooks := append([]func(){}, m.hooks...)
		m.hookMu.Unlock()
		for _, f := range hooks {
			f()
		}
		return m.reg.Gather()
	})
	return promhttp.HandlerFor(g, promhttp.HandlerOpts{Registry: m.reg})
}

// Server is a running /metrics endpoint.
type Server struct {
	ln   net.Listener
	srv  *http.Server
	done chan struct{}
	once sync.Once
	err  error
}

// Serve listens on addr (host:port; port 0 picks one) and serves m at /metrics until Close.
func Serve(addr string, m *Replica) (*Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", m.Handler())
	s := &Server{ln: ln, srv: &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}, done: make(chan struct{})}
	go func() {
		defer close(s.done)
		if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.err = err
		}
	}()
	return s, nil
}

// Addr returns the address the server listens on.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Close stops the server and waits for its goroutine; safe to call twice.
func (s *Server) Close() error {
	s.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if err := s.srv.Shutdown(ctx); err != nil {
			s.srv.Close()
		}
		<-s.done
	})
	return s.err
}
