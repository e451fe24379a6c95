// Package sim is Parliament's deterministic simulator: it drives the real engines (the same
// protocol.Engine values the runtime uses), each with the shared executor and key-value
// store, through a simulated WAN under a virtual clock, injects seeded faults, runs
// simulated clients, and judges every run with package check.
//
// One master seed determines a run completely. Inside a run there is no goroutine, no wall
// clock, no global math/rand and no map iteration that could reach the output: events
// wait in a queue ordered by (virtual time, sequence number), and every random draw comes
// from one of four PCG streams derived from the seed (network, clients, faults, engines).
// Replaying a seed therefore replays the run bit for bit, trace included.
//
// A run has two phases (as in TigerBeetle's VOPR): a faults phase in which messages are
// lost, duplicated, reordered and delayed, partitions come and go and replicas crash and
// restart; then everything heals and a liveness phase checks that every operation
// completes within a bound of virtual time. Finally every replica reads every key, so
// that each one must have executed every acknowledged write. See docs/simulation.md.
package sim

import (
	"bufio"
	"fmt"
	"math/rand/v2"
	"runtime/debug"
	"strings"
	"time"

	"github.com/parliament-lab/parliament/check"
	"github.com/parliament-lab/parliament/protocol"
	"github.com/parliament-lab/parliament/workloads"
)

// Result is the outcome of one run.
type Result struct {
	Seed       uint64
	Ops        int // client operations in the checked history (final reads included)
	Completed  int // of which the client saw the outcome
	Instances  int // distinct instances (slots) committed
	Events     int // simulated events
	Messages   uint64
	Dropped    uint64 // messages lost to loss, partitions and down replicas
	Crashes    int
	Partitions int
	// Compaction (compaction.go): the seed's plan, snapshots taken, sent to peers and
	// installed from peers.
	Compaction    string
	Snapshots     int
	SnapshotsSent int
	Installs      int
	Restores      int           // restarts that restored the state machine from a snapshot
	EndTime       time.Duration // virtual time at which the run ended
	HealTime      time.Duration // virtual time at which the faults healed
	Swarm         string        // the fault mix this seed drew
	// Violations lists every broken property, the first one first. Empty means the run
	// passed every check.
	Violations []check.Violation
	// Lin is porcupine's verdict (nil if the run panicked before any check). When it is
	// illegal, Lin.Visualize writes the HTML visualization.
	Lin *check.LinResult
}

// Failed reports whether the run broke any property.
func (r *Result) Failed() bool { return len(r.Violations) > 0 }

// LinUnknown reports whether porcupine ran out of time (nothing proved, nothing violated).
func (r *Result) LinUnknown() bool { return r.Lin != nil && !r.Lin.Ok() && !r.Lin.Illegal() }

// linTimeout bounds porcupine's search per run (wall clock, the only place a wall clock is
// used, and after the run: it can turn a verdict into "unknown", never change the run).
const linTimeout = 60 * time.Second

type sim struct {
	cfg Config
	now int64
	seq uint64
	q   eventQueue

	netRng, cliRng, faultRng, engRng, compRng *rand.Rand
	sw                                        swarm
	plan                                      compactPlan
	newEngine                                 EngineFactory
	snaps                                     []*snapshot          // every snapshot taken, by serial-1
	snapByExec                                map[string]*snapshot // first snapshot of each executed set (check.ExecState.Key)
	rows                                      []protocol.ReplicaID

	ids    []protocol.ReplicaID
	nodes  []*node
	sites  []string
	oneWay [][]int64 // nanoseconds between replica sites
	fifo   [][]int64 // last delivery time per directed link (FIFO unless reordered)

	blocked    [][]int // per directed link: partitions currently cutting it
	partitions []partition
	healAt     int64
	healed     bool

	keys     []string
	clients  []*client
	history  []check.Op
	issued   int // workload operations issued
	finished int // workload operations completed
	final    bool
	finalAt  int64
	acked    []check.CmdID // acknowledged writes (PUT and successful CAS)
	deadline int64
	draining bool  // every operation completed: waiting for every replica to execute everything
	drainAt  int64 // when the drain began

	checker *check.ReplicaChecker
	res     Result
	stopped bool

	trace *bufio.Writer
}

// Run simulates one seed and checks it. It never panics: a panic inside an engine, the
// executor or the store is reported as a check.Panic violation.
func Run(cfg Config) (res Result) {
	c, err := cfg.withDefaults()
	if err != nil {
		return Result{Seed: cfg.Seed, Violations: []check.Violation{{Property: check.Panic, Detail: err.Error()}}}
	}
	s := newSim(c)
	defer func() {
		if p := recover(); p != nil {
			s.violate(check.Panic, fmt.Sprintf("%v\n%s", p, trimStack(debug.Stack())))
			s.finish(true)
			res = s.res
		}
		if s.trace != nil {
			s.trace.Flush()
		}
	}()
	s.start()
	s.loop()
	s.finish(false)
	return s.res
}

func newSim(cfg Config) *sim {
	s := &sim{
		cfg:      cfg,
		netRng:   newStream(cfg.Seed, streamNetwork),
		cliRng:   newStream(cfg.Seed, streamClients),
		faultRng: newStream(cfg.Seed, streamFaults),
		engRng:   newStream(cfg.Seed, streamEngines),
		compRng:  newStream(cfg.Seed, streamCompaction),
		checker:  check.NewReplicaChecker(),
	}
	s.res.Seed = cfg.Seed
	if cfg.Trace != nil {
		s.trace = bufio.NewWriterSize(cfg.Trace, 64<<10)
	}
	n := cfg.Replicas
	m, err := workloads.AWS5().ForReplicas(n)
	if err != nil {
		panic(err) // the built-in matrix covers every n
	}
	s.sites = workloads.PlaceReplicas(m, n)
	s.rows = []protocol.ReplicaID{0} // Multi-Paxos slots; EPaxos rows are the replica IDs
	s.oneWay = make([][]int64, n)
	s.fifo = make([][]int64, n)
	s.blocked = make([][]int, n)
	for i := range n {
		s.ids = append(s.ids, protocol.ReplicaID(i+1))
		s.rows = append(s.rows, protocol.ReplicaID(i+1))
		s.oneWay[i] = make([]int64, n)
		s.fifo[i] = make([]int64, n)
		s.blocked[i] = make([]int, n)
		for j := range n {
			d, err := m.OneWay(s.sites[i], s.sites[j])
			if err != nil {
				panic(err)
			}
			s.oneWay[i][j] = int64(d)
		}
	}
	return s
}

func (s *sim) start() {
	cfg := &s.cfg
	s.sw = drawSwarm(cfg.Faults, cfg.Replicas, cfg.Tick, cfg.SkewMax, s.faultRng)
	s.healAt = s.sw.healAt
	s.deadline = s.healAt + 2*int64(cfg.LivenessBound)
	s.res.HealTime = time.Duration(s.healAt)
	s.res.Swarm = s.sw.String()
	s.plan = drawCompaction(cfg.Compaction, s.compRng)
	s.res.Compaction = s.plan.String()
	s.newEngine = cfg.NewEngine
	if s.newEngine == nil {
		f, err := engineWith(cfg.Protocol, cfg.Mutation, engineKnobs{retain: s.plan.retain})
		if err != nil {
			panic(err) // validated by withDefaults
		}
		s.newEngine = f
	}

	nClients := cfg.Clients
	if nClients == 0 {
		nClients = 2 + s.cliRng.IntN(3)
	}
	nKeys := cfg.Keys
	if nKeys == 0 {
		nKeys = 2 + s.cliRng.IntN(4)
	}
	for k := range nKeys {
		s.keys = append(s.keys, fmt.Sprintf("k%d", k))
	}
	s.tracef("seed %d protocol %s replicas %d sites %s faults %s mutation %q",
		cfg.Seed, cfg.Protocol, cfg.Replicas, strings.Join(s.sites, ","), cfg.Faults, cfg.Mutation)
	s.tracef("swarm %s", s.res.Swarm)
	s.tracef("compaction %s", s.res.Compaction)
	s.tracef("workload ops %d clients %d keys %d heal-at %s", cfg.Ops, nClients, nKeys, check.FormatTime(s.healAt))

	for i := range cfg.Replicas {
		nd := &node{idx: i, id: s.ids[i], period: s.sw.tick[i]}
		s.nodes = append(s.nodes, nd)
		s.boot(nd)
	}
	for i := range nClients {
		c := &client{idx: i, id: uint64(i + 1), home: s.cliRng.IntN(cfg.Replicas), op: -1, lastSeen: map[string]string{}}
		s.clients = append(s.clients, c)
		s.schedule(event{at: int64(s.cliRng.IntN(20)) * int64(time.Millisecond), kind: evIssue, client: i})
	}
	s.scheduleFaults()
	s.schedule(event{at: s.healAt, kind: evHeal})
}

func (s *sim) schedule(e event) {
	s.seq++
	e.seq = s.seq
	s.q.push(e)
}

func (s *sim) after(d int64, e event) {
	e.at = s.now + d
	s.schedule(e)
}

func (s *sim) loop() {
	for !s.stopped && s.q.len() > 0 {
		e := s.q.pop()
		s.now = e.at
		s.res.Events++
		if s.res.Events > s.cfg.MaxEvents {
			s.violate(check.Liveness, fmt.Sprintf("the run exceeded %d events (a message storm?)", s.cfg.MaxEvents))
			return
		}
		if s.now > s.deadline {
			s.now = s.deadline
			return
		}
		s.dispatch(&e)
	}
}

func (s *sim) dispatch(e *event) {
	switch e.kind {
	case evDeliver:
		s.deliver(e)
	case evRequest:
		s.request(e)
	case evReply:
		s.clientReply(e)
	case evTick:
		s.tick(e)
	case evIssue:
		s.issue(s.clients[e.client])
	case evTimeout:
		s.clientTimeout(e)
	case evResend:
		if c := s.clients[e.client]; c.op >= 0 && c.attempt == e.attempt {
			s.sendRequest(c)
		}
	case evCrash:
		s.crashEvent(e)
	case evRestart:
		if nd := s.nodes[e.node]; !nd.up {
			s.restart(nd)
		}
	case evPartition:
		s.partitionStart(e.part)
	case evPartitionEnd:
		s.partitionEnd(e.part)
	case evHeal:
		s.heal()
	case evSnapshot:
		s.checkpoint(e)
	}
}

// violate records a broken property; a safety violation stops the run (the trace then ends
// where things went wrong).
func (s *sim) violate(p check.Property, detail string) {
	s.res.Violations = append(s.res.Violations, check.Violation{Property: p, Time: s.now, Detail: detail})
	s.tracef("VIOLATION %s: %s", p, detail)
	s.stopped = true
}

func (s *sim) violation(v *check.Violation) {
	if v != nil {
		s.violate(v.Property, v.Detail)
	}
}

// progress runs on every tick of replica 1's clock (about every 10 ms of virtual time):
// it starts the final reads once the workload is done and faults have healed, enforces
// the liveness bound, and ends the run once every replica has caught up.
func (s *sim) progress() {
	if !s.healed {
		return
	}
	bound := int64(s.cfg.LivenessBound)
	for _, c := range s.clients {
		if c.op >= 0 {
			op := &s.history[c.op]
			if s.now > max(op.Call, s.healAt)+bound {
				s.violation(check.CheckLiveness(s.history, s.healAt, bound, s.now))
				return
			}
		}
	}
	if !s.final {
		if s.finished == s.cfg.Ops {
			s.startFinalReads()
		}
		return
	}
	for _, c := range s.clients {
		if c.op >= 0 || len(c.finalKeys) > 0 {
			return
		}
	}
	// Every operation, final reads included, has completed. Each replica must now have
	// executed every acknowledged write (an EPaxos final read at replica r executes after
	// every write that completed before it; a Multi-Paxos follower executes the log in
	// order as it learns commits).
	var lagging *check.Violation
	for _, nd := range s.nodes {
		if v := s.checker.Durable(nd.id, s.acked); v != nil {
			lagging = v
			break
		}
	}
	if lagging == nil {
		if !s.draining {
			s.tracef("all operations complete and every replica executed every acknowledged write; draining")
			s.draining, s.drainAt = true, s.now
			s.deadline = max(s.deadline, s.now+bound+int64(time.Second))
		}
		s.drain()
		return
	}
	if s.finalAt == 0 {
		s.finalAt = s.now
	}
	if s.now > s.finalAt+bound {
		s.violation(lagging)
	}
}

// finish runs the checks that need the whole run.
func (s *sim) finish(panicked bool) {
	s.res.EndTime = time.Duration(s.now)
	s.res.Instances = s.checker.Instances()
	s.res.Ops = len(s.history)
	for i := range s.history {
		if s.history[i].Known {
			s.res.Completed++
		}
	}
	if !panicked && !s.stopped {
		// The queue ran dry or the deadline passed before every operation completed.
		v := check.CheckLiveness(s.history, s.healAt, int64(s.cfg.LivenessBound), s.now+int64(s.cfg.LivenessBound)+1)
		if v == nil {
			v = &check.Violation{Property: check.Liveness, Detail: "the run ended before the replicas caught up"}
		}
		s.violation(v)
	}
	s.res.Lin = check.CheckLinearizable(s.history, linTimeout)
	if v := s.res.Lin.Violation(); v != nil {
		s.res.Violations = append(s.res.Violations, *v)
		s.tracef("VIOLATION %s: %s", v.Property, v.Detail)
	}
	s.tracef("end: ops %d completed %d instances %d events %d messages %d dropped %d violations %d",
		s.res.Ops, s.res.Completed, s.res.Instances, s.res.Events, s.res.Messages, s.res.Dropped, len(s.res.Violations))
	if s.trace != nil {
		s.tracef("history:")
		for i := range s.history {
			o := &s.history[i]
			end := "pending"
			if o.Known {
				end = check.FormatTime(o.Return)
			}
			fmt.Fprintf(s.trace, "  [%s, %s] %s\n", check.FormatTime(o.Call), end, o.Tag())
		}
	}
}

// trimStack keeps the function lines of a stack trace (arguments and addresses vary from
// run to run and are noise in a report).
func trimStack(st []byte) string {
	var out []string
	for _, line := range strings.Split(string(st), "\n") {
		if strings.HasPrefix(line, "\t") {
			if i := strings.LastIndex(line, " +0x"); i > 0 {
				line = line[:i]
			}
			out = append(out, line)
		}
	}
	if len(out) > 24 {
		out = out[:24]
	}
	return strings.Join(out, "\n")
}

func (s *sim) tracef(format string, args ...any) {
	if s.trace == nil {
		return
	}
	fmt.Fprintf(s.trace, "%12s ", check.FormatTime(s.now))
	fmt.Fprintf(s.trace, format, args...)
	s.trace.WriteByte('\n')
}
