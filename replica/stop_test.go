package replica

import (
	"errors"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/parliament-lab/parliament/config"
	"github.com/parliament-lab/parliament/internal/testnet"
	"github.com/parliament-lab/parliament/protocol"
)

// hungLog is a synchronous Log whose Sync, once armed, hangs as on a dying disk until the
// test releases it.
type hungLog struct {
	MemLog
	armed     atomic.Bool
	entered   chan struct{} // closed when an armed Sync starts
	enterOnce sync.Once
	release   chan struct{}
	relOnce   sync.Once
	closed    atomic.Bool
}

func newHungLog() *hungLog {
	return &hungLog{entered: make(chan struct{}), release: make(chan struct{})}
}

func (l *hungLog) Sync() error {
	if l.armed.Load() {
		l.enterOnce.Do(func() { close(l.entered) })
		<-l.release
	}
	return l.MemLog.Sync()
}

// unblock makes the hung Sync, and every later one, return.
func (l *hungLog) unblock() { l.relOnce.Do(func() { close(l.release) }) }

func (l *hungLog) Close() error {
	l.closed.Store(true)
	return l.MemLog.Close()
}

const stopTimeout = 200 * time.Millisecond

// stopDeadline bounds everything the test waits for: far above stopTimeout, so that a
// slow machine does not fail it, and still a failure instead of a hang.
const stopDeadline = 5 * time.Second

// stuck is a replica whose loop the test has stuck in the disk.
type stuck struct {
	r         *Replica
	addr      string
	logs      *testnet.Buffer
	logClosed func() bool
}

// startStuck starts replica 1 of a one-replica cluster on loopback TCP with log, a short
// StopTimeout and logs kept for the checks.
func startStuck(t *testing.T, log Log, newEngine func(protocol.Config) (protocol.Engine, error)) *stuck {
	t.Helper()
	cl := testCluster(t, config.MultiPaxos, 1)
	freePorts(t, cl)
	s := &stuck{logs: &testnet.Buffer{}}
	r, err := Start(Options{
		Cluster: cl, ID: 1, Log: log, NewEngine: newEngine, StopTimeout: stopTimeout,
		Logger: slog.New(slog.NewTextHandler(s.logs, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	s.r, s.addr = r, r.Addr()
	t.Cleanup(r.Stop) // after the test's own cleanups, which unblock the disk
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("replica logs:\n%s", s.logs)
		}
	})
	return s
}

// stopTimesOut stops a replica whose loop is stuck in the disk and checks what Stop
// leaves: it returns after the timeout, Err reports ErrStopTimeout, the transport is
// closed, the loop and the log are not.
func (s *stuck) stopTimesOut(t *testing.T) {
	t.Helper()
	stopped := make(chan time.Duration, 1)
	start := time.Now()
	go func() {
		s.r.Stop()
		stopped <- time.Since(start)
	}()
	select {
	case took := <-stopped:
		if took < stopTimeout {
			t.Errorf("Stop returned after %v, before its timeout %v", took, stopTimeout)
		}
	case <-time.After(stopDeadline):
		t.Fatalf("Stop has not returned after %v (StopTimeout %v): it waits for the hung disk", stopDeadline, stopTimeout)
	}
	err := s.r.Err()
	if !errors.Is(err, ErrStopTimeout) || !strings.Contains(err.Error(), "the disk may be hung") {
		t.Errorf("Err() = %v, want ErrStopTimeout naming the hung disk", err)
	}
	if logs := s.logs.String(); !strings.Contains(logs, "level=ERROR") || !strings.Contains(logs, "replica did not stop within 200ms: a log append or fsync has not returned for") {
		t.Errorf("no ERROR line explaining the timeout in the logs:\n%s", logs)
	}
	select {
	case <-s.r.Done():
		t.Fatal("Done closed while the loop is stuck in the disk")
	default:
	}
	if s.logClosed() {
		t.Error("Stop closed the log while a call on it hangs")
	}
	if c, err := net.DialTimeout("tcp", s.addr, time.Second); err == nil {
		c.Close()
		t.Errorf("dialed %s after Stop timed out: the transport is still open", s.addr)
	}
	again := make(chan struct{})
	go func() {
		s.r.Stop()
		close(again)
	}()
	select {
	case <-again:
	case <-time.After(stopDeadline):
		t.Fatal("second Stop blocks")
	}
}

// finishes checks that the loop, once the disk answers, stops by itself and closes the
// log, and that Err still reports the timeout.
func (s *stuck) finishes(t *testing.T) {
	t.Helper()
	select {
	case <-s.r.Done():
	case <-time.After(stopDeadline):
		t.Fatalf("loop still running %v after the disk answered", stopDeadline)
	}
	if !s.logClosed() {
		t.Error("log not closed after the loop ended")
	}
	if err := s.r.Err(); !errors.Is(err, ErrStopTimeout) {
		t.Errorf("Err() = %v after the loop ended, want ErrStopTimeout still", err)
	}
}

// TestStopTimeout: Stop of a replica whose disk hangs returns after Options.StopTimeout,
// closes the transport, reports ErrStopTimeout and leaves the log to the stuck loop; when
// the disk answers, the loop finishes cleanly, closes the log and no goroutine is left.
// Both log paths: synchronous (Options.Log: Append, Sync) and pipelined (an asyncLog, as
// the WAL in DataDir behind its group committer; the test's gatedLog holds its fsync).
func TestStopTimeout(t *testing.T) {
	t.Run("sync", func(t *testing.T) {
		leaks := goleak.IgnoreCurrent()
		log := newHungLog()
		s := startStuck(t, log, nil) // the real Multi-Paxos engine
		s.logClosed = log.closed.Load
		t.Cleanup(log.unblock)
		do(t, s.r, put(1, 1, "a", "1")) // a leader, and a write through the healthy disk
		log.armed.Store(true)
		w := submit(s.r, put(1, 2, "b", "2"))
		select {
		case <-log.entered:
		case <-time.After(stopDeadline):
			t.Fatal("no Sync after a write")
		}
		s.stopTimesOut(t)
		log.unblock()
		s.finishes(t)
		if _, ok := w.wait(t, 2, stopDeadline); !ok {
			t.Error("the command in flight was never answered (a result or a redirect)")
		}
		goleak.VerifyNone(t, leaks)
	})
	for _, tt := range []struct {
		name  string
		fsync error // how the hung fsync ends
	}{{"pipelined", nil}, {"pipelined/fsync-fails", errors.New("disk on fire")}} {
		t.Run(tt.name, func(t *testing.T) {
			leaks := goleak.IgnoreCurrent()
			log := newGatedLog()
			s := startStuck(t, log, func(protocol.Config) (protocol.Engine, error) { return &gateEngine{}, nil })
			s.logClosed = func() bool {
				log.mu.Lock()
				defer log.mu.Unlock()
				return log.closed
			}
			t.Cleanup(log.openGate)
			w := newReplyRecorder()
			s.r.Submit([]protocol.Command{put(1, 1, "a", "1")}, w)
			select {
			case <-log.started:
			case <-time.After(stopDeadline):
				t.Fatal("no fsync after a write")
			}
			s.stopTimesOut(t)
			log.finish <- tt.fsync
			s.finishes(t)
			reps := w.waitFor(t, 1)
			if tt.fsync == nil {
				// The fsync did end: Stop's drain releases the reply as it would have.
				if reps[0].Result != protocol.ResultOK {
					t.Errorf("reply %+v, want ok: its fsync ended", reps[0])
				}
			} else {
				if reps[0].Result != protocol.ResultRedirect {
					t.Errorf("reply %+v after a failed fsync, want a redirect", reps[0])
				}
				if err := s.r.Err(); !strings.Contains(err.Error(), "disk on fire") {
					t.Errorf("Err() = %v, want the fsync's error too", err)
				}
			}
			goleak.VerifyNone(t, leaks)
		})
	}
}

// TestStopInTime: a Stop that does not time out reports nothing and leaves nothing
// running, and Done means the log is closed.
func TestStopInTime(t *testing.T) {
	log := newHungLog()
	s := startStuck(t, log, nil)
	do(t, s.r, put(1, 1, "a", "1"))
	s.r.Stop()
	select {
	case <-s.r.Done():
	default:
		t.Fatal("Done not closed after Stop")
	}
	if err := s.r.Err(); err != nil {
		t.Errorf("Err() = %v after a clean Stop", err)
	}
	if !log.closed.Load() {
		t.Error("log not closed after Stop")
	}
}
