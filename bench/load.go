package bench

import (
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/parliament-lab/parliament/protocol"
	"github.com/parliament-lab/parliament/workloads"
)

// binWidth is the resolution of the completion timeline (and of the failure gap).
const binWidth = 10 * time.Millisecond

// redirectBackoff is how long a client waits before retrying a command that a replica
// answered with "no leader known" (Multi-Paxos during an election) or "shutting down".
const redirectBackoff = 10 * time.Millisecond

// scanEvery is how often a site checks its clients' commands for timeouts and backoffs.
const scanEvery = 5 * time.Millisecond

// loadOptions describe the clients of one run.
type loadOptions struct {
	spec           workloads.Spec
	clientsPerSite int
	outstanding    int
	ratePerClient  float64 // open loop; 0 = closed loop
	seed           int64
	warmup         time.Duration
	duration       time.Duration
	retryTimeout   time.Duration // resend a command (same client and seq) after this long without a reply
	maxBacklog     int           // open loop: arrivals waiting for a free slot per client, beyond which they are dropped (counted as errors)
}

// siteLoad drives the clients at one site from one goroutine: it owns their generators,
// histograms and in-flight commands, so none of them needs a lock (HDR histograms are not
// goroutine-safe).
type siteLoad struct {
	c    *cluster
	o    *loadOptions
	site string
	home int // index of the replica at this site
	measureWindow

	clients []*benchClient
	byID    map[uint64]*benchClient
	toRep   *delayLine // client -> replica leg
	fromRep *delayLine // replica -> client leg

	mu      sync.Mutex
	inbox   []siteEvent
	signal  chan struct{}
	stopped bool

	bins       []int64 // completions per binWidth since start (whole run, warm-up included)
	completed  *atomic.Int64
	errors     int64
	retries    int64    // resends after a timeout, in the window
	redirects  int64    // redirect answers, in the window
	commit     *Latency // merged at the end from the clients
	exec       *Latency
	measuredOp int64
}

type siteEvent struct {
	rep    protocol.Reply
	target int
}

// benchClient is one closed- or open-loop client.
type benchClient struct {
	id       uint64
	gen      *workloads.Generator
	open     *openLoop // open loop: arrivals, in-flight cap and backlog; nil = closed loop
	seq      uint64
	inflight map[uint64]*inflightCmd
	commit   *Latency
	exec     *Latency
	ops      int64
}

type inflightCmd struct {
	cmd      protocol.Command
	start    time.Time // intended start: send time (closed loop) or scheduled arrival (open loop)
	sent     time.Time
	target   int
	resendAt time.Time     // zero = not waiting for a backoff
	timeout  time.Duration // current resend timeout (doubles on each timeout)
}

// replier receives the replies of one replica for the clients of one site and sends them
// back over the reply leg.
type replier struct {
	s      *siteLoad
	target int
	delay  time.Duration
}

func (r *replier) Reply(rep protocol.Reply) {
	s := r.s
	ev := siteEvent{rep: rep, target: r.target}
	s.fromRep.push(time.Now().Add(r.delay), func() { s.deliver(ev) })
}

func newSiteLoad(c *cluster, o *loadOptions, site string, home int, firstClient uint64, start time.Time, completed *atomic.Int64) *siteLoad {
	s := &siteLoad{
		c: c, o: o, site: site, home: home,
		byID: map[uint64]*benchClient{}, signal: make(chan struct{}, 1),
		toRep: newDelayLine(), fromRep: newDelayLine(), completed: completed,
		commit: NewLatency(), exec: NewLatency(),
	}
	s.measureWindow = measureWindow{start: start, mFrom: start.Add(o.warmup), end: start.Add(o.warmup + o.duration)}
	s.bins = make([]int64, int((o.warmup+o.duration)/binWidth)+2)
	for i := range o.clientsPerSite {
		id := firstClient + uint64(i)
		gen, err := workloads.NewGenerator(o.spec, id, o.seed)
		if err != nil {
			panic(err) // the spec was validated by the caller
		}
		bc := &benchClient{id: id, gen: gen, inflight: map[uint64]*inflightCmd{}, commit: NewLatency(), exec: NewLatency()}
		if o.ratePerClient > 0 {
			bc.open = newOpenLoop(o.ratePerClient, o.seed, id, start, o.outstanding, o.maxBacklog)
		}
		s.clients = append(s.clients, bc)
		s.byID[id] = bc
	}
	return s
}

// deliver is called on the reply leg's goroutine.
func (s *siteLoad) deliver(ev siteEvent) {
	s.mu.Lock()
	if s.stopped {
		s.mu.Unlock()
		return
	}
	wake := len(s.inbox) == 0
	s.inbox = append(s.inbox, ev)
	s.mu.Unlock()
	if wake {
		select {
		case s.signal <- struct{}{}:
		default:
		}
	}
}

// oneWay returns the one-way delay between this site and replica i's site.
func (s *siteLoad) oneWay(i int) time.Duration {
	if s.c.matrix == nil {
		return 0
	}
	d, err := s.c.matrix.OneWay(s.site, s.c.sites[i])
	if err != nil {
		return 0
	}
	return d
}

// target picks the replica a command goes to: this site's own, or after it crashed the
// closest live one (the EPaxos paper's clients reconnect to another replica).
func (s *siteLoad) target() int {
	if !s.c.down[s.home].Load() {
		return s.home
	}
	best, bestD := -1, time.Duration(math.MaxInt64)
	for i := range s.c.replicas {
		if s.c.down[i].Load() {
			continue
		}
		if d := s.oneWay(i); d < bestD {
			best, bestD = i, d
		}
	}
	return best
}

// send hands p to its target replica over the client leg.
func (s *siteLoad) send(p *inflightCmd, now time.Time) {
	p.target = s.target()
	p.sent = now
	p.resendAt = time.Time{}
	if p.target < 0 {
		p.resendAt = now.Add(redirectBackoff)
		return
	}
	r := s.c.replicas[p.target]
	d := s.oneWay(p.target)
	rp := &replier{s: s, target: p.target, delay: d}
	cmd := p.cmd
	s.toRep.push(now.Add(d), func() { r.Submit([]protocol.Command{cmd}, rp) })
}

// issue starts a new command for bc with the given intended start time.
func (s *siteLoad) issue(bc *benchClient, start, now time.Time) {
	op := bc.gen.Next()
	bc.seq++
	cmd := protocol.Command{ClientID: bc.id, Seq: bc.seq, Op: protocol.OpPut, Key: append([]byte(nil), op.Key...), Value: op.Value}
	if op.Read {
		cmd.Op = protocol.OpGet
		cmd.Value = nil
	}
	p := &inflightCmd{cmd: cmd, start: start}
	bc.inflight[cmd.Seq] = p
	s.send(p, now)
}

// run drives the site until the end of the load or until stop is closed.
func (s *siteLoad) run(stop <-chan struct{}) {
	defer func() {
		s.mu.Lock()
		s.stopped = true
		s.inbox = nil
		s.mu.Unlock()
		s.toRep.close()
		s.fromRep.close()
		for _, bc := range s.clients {
			s.commit.Merge(bc.commit)
			s.exec.Merge(bc.exec)
			s.measuredOp += bc.ops
		}
	}()
	now := time.Now()
	open := s.o.ratePerClient > 0
	if !open {
		for _, bc := range s.clients {
			for range s.o.outstanding {
				s.issue(bc, now, now)
			}
		}
	}
	scan := time.NewTicker(scanEvery)
	defer scan.Stop()
	arrive := time.NewTimer(time.Hour)
	defer arrive.Stop()
	var events []siteEvent
	for {
		if open {
			next := s.end
			for _, bc := range s.clients {
				if bc.open.next.Before(next) {
					next = bc.open.next
				}
			}
			arrive.Reset(time.Until(next))
		}
		select {
		case <-stop:
			return
		case <-s.signal:
		case <-scan.C:
		case <-arrive.C:
		}
		now = time.Now()
		if !now.Before(s.end) {
			return
		}
		s.mu.Lock()
		events, s.inbox = s.inbox, events[:0]
		s.mu.Unlock()
		for _, ev := range events {
			s.handle(ev, now)
		}
		if open {
			s.arrivals(now)
		}
		s.scan(now)
	}
}

func (s *siteLoad) handle(ev siteEvent, now time.Time) {
	bc := s.byID[ev.rep.ClientID]
	if bc == nil {
		return
	}
	p := bc.inflight[ev.rep.Seq]
	if p == nil || p.target != ev.target {
		return // a duplicate, or the answer of a replica we already gave up on
	}
	switch ev.rep.Result {
	case protocol.ResultRedirect:
		p.resendAt = now.Add(redirectBackoff)
		if !now.Before(s.mFrom) {
			s.redirects++
		}
		return
	case protocol.ResultError:
		s.errors++
	}
	delete(bc.inflight, ev.rep.Seq)
	s.complete(bc, p, ev.rep, now)
	if bc.open != nil {
		if start, ok := bc.open.done(); ok {
			s.issue(bc, start, now)
		}
		return
	}
	s.issue(bc, now, now)
}

// complete records a finished command. Execution latency is what the client waited (from
// the intended start: coordinated-omission corrected in open loop); commit latency is that
// minus the time the command waited at the replica between commit and execution
// (protocol.Reply.ExecDelayMicros).
func (s *siteLoad) complete(bc *benchClient, p *inflightCmd, rep protocol.Reply, now time.Time) {
	s.countBin(s.bins, now)
	s.completed.Add(1)
	if s.measure(p.start, now, &rep, bc.commit, bc.exec) {
		bc.ops++
	}
}

// arrivals issues (or queues) every open-loop arrival due by now.
func (s *siteLoad) arrivals(now time.Time) {
	for _, bc := range s.clients {
		s.errors += bc.open.arrive(now, func(at time.Time) { s.issue(bc, at, now) })
	}
}

// scan resends commands whose backoff expired or that timed out (a lost forward to a
// crashed leader, a crashed replica); the resend keeps (client, seq), so the command still
// executes at most once.
func (s *siteLoad) scan(now time.Time) {
	for _, bc := range s.clients {
		for _, p := range bc.inflight {
			switch {
			case !p.resendAt.IsZero() && !now.Before(p.resendAt):
				s.send(p, now)
			case p.resendAt.IsZero() && now.Sub(p.sent) > max(p.timeout, s.o.retryTimeout):
				p.timeout = 2 * max(p.timeout, s.o.retryTimeout)
				if !now.Before(s.mFrom) {
					s.retries++
				}
				s.send(p, now)
			case p.target >= 0 && s.c.down[p.target].Load():
				s.send(p, now)
			}
		}
	}
}
