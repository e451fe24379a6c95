package metrics

import (
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/parliament-lab/parliament/protocol"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestServeExposesEveryMetric(t *testing.T) {
	m := New("epaxos", 3)
	m.SetEngineStats(protocol.Stats{Proposed: 10, Committed: 7, FastPath: 6, SlowPath: 1, Recoveries: 2, Elections: 0})
	var wg sync.WaitGroup
	for range 4 { // concurrent use from several goroutines must be safe (run with -race)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 100 {
				m.ObserveCommit(3 * time.Millisecond)
				m.ObserveExec(4 * time.Millisecond)
				m.ObserveFsync(time.Millisecond, 5)
				m.SetQueueDepth(QueueExecutor, 9)
			}
		}()
	}
	wg.Wait()
	m.SetQueueDepth(QueueProposals, 2)

	srv, err := Serve("127.0.0.1:0", m)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := client.Get("http://" + srv.Addr().String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	text := string(body)
	for _, want := range []string{
		`parliament_proposed_total{protocol="epaxos",replica="3"} 10`,
		`parliament_commits_total{protocol="epaxos",replica="3"} 7`,
		`parliament_fast_path_total{protocol="epaxos",replica="3"} 6`,
		`parliament_slow_path_total{protocol="epaxos",replica="3"} 1`,
		`parliament_recoveries_total{protocol="epaxos",replica="3"} 2`,
		`parliament_elections_total{protocol="epaxos",replica="3"} 0`,
		`parliament_commit_latency_seconds_count{protocol="epaxos",replica="3"} 400`,
		`parliament_exec_latency_seconds_count{protocol="epaxos",replica="3"} 400`,
		`parliament_executed_total{protocol="epaxos",replica="3"} 400`,
		`parliament_fsyncs_total{protocol="epaxos",replica="3"} 400`,
		`parliament_fsync_records_total{protocol="epaxos",replica="3"} 2000`,
		`parliament_queue_depth{protocol="epaxos",queue="executor",replica="3"} 9`,
		`parliament_queue_depth{protocol="epaxos",queue="proposals",replica="3"} 2`,
		`go_goroutines`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	// 3 ms falls in the bucket le=0.0032 (100 µs * 2^5).
	if !strings.Contains(text, `parliament_commit_latency_seconds_bucket{protocol="epaxos",replica="3",le="0.0032"} 400`) {
		t.Errorf("commit latency not in the expected bucket:\n%s", grep(text, "commit_latency_seconds_bucket"))
	}
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	if err := srv.Close(); err != nil { // safe twice
		t.Fatal(err)
	}
}

func TestServeBadAddress(t *testing.T) {
	if _, err := Serve("127.0.0.1:-1", New("multipaxos", 1)); err == nil {
		t.Fatal("bad address accepted")
	}
}

func grep(text, sub string) string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
