package plot

import (
	"fmt"
	"image/png"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/parliament-lab/parliament/bench/result"
)

// synthetic returns a results file with every experiment, shaped like a real run.
func synthetic() *result.File {
	f := &result.File{Meta: result.Meta{Machine: "testhost", CPUs: 2, Go: "go1.26", Commit: "abc1234", Seed: 1,
		Started: time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC), Durable: false, Emulation: "in-process"}}
	sites := []string{"CA", "VA", "OR", "IE", "JP"}
	opt := map[string][2]float64{"CA": {60, 60}, "VA": {70.8, 119.8}, "OR": {72.8, 81}, "IE": {127.4, 201.1}, "JP": {111.8, 171.6}}
	rng := rand.New(rand.NewPCG(1, 2))
	cdf := func(base float64) []result.CDFPoint {
		var pts []result.CDFPoint
		for i := 1; i <= 50; i++ {
			pts = append(pts, result.CDFPoint{Ms: base * (1 + float64(i)/25), P: float64(i) / 50})
		}
		return pts
	}
	for _, c := range []float64{0, 100} {
		for pi, proto := range []string{"epaxos", "multipaxos"} {
			r := result.Run{Name: "latency/" + proto, Experiment: "latency", Protocol: proto, Replicas: 5, Conflict: c, WAN: "aws-5site",
				Clients: 1, Outstanding: 1, CommitCDF: cdf(60), ExecCDF: cdf(70)}
			if proto == "multipaxos" {
				r.Leader = "CA"
			}
			for _, s := range sites {
				o := opt[s][pi]
				m := o * (1.02 + c/200)
				r.Sites = append(r.Sites, result.Site{Site: s, Ops: 100, Optimum: o, Commit: result.Percentiles{P50: m, P99: m * 1.3}})
			}
			f.Runs = append(f.Runs, r)
		}
	}
	for _, proto := range []string{"epaxos", "multipaxos"} {
		for _, c := range []float64{0, 2, 25, 100} {
			tp := 20000.0
			if proto == "epaxos" {
				tp = 30000 * (1 - c/150)
			}
			f.Runs = append(f.Runs, result.Run{Experiment: "throughput", Protocol: proto, Replicas: 5, Conflict: c, WAN: "none", Clients: 4, Outstanding: 16, ThroughputOps: tp})
		}
		for i, rate := range []float64{1000, 2000, 4000, 8000} {
			f.Runs = append(f.Runs, result.Run{Experiment: "sweep", Protocol: proto, Replicas: 5, WAN: "aws-5site", RateOps: rate, ThroughputOps: rate * 0.99,
				Commit: result.Percentiles{P50: 80 + 10*math.Pow(2, float64(i)), P99: 120 + 40*math.Pow(2, float64(i))}})
		}
		r := result.Run{Experiment: "failure", Protocol: proto, Replicas: 5, WAN: "aws-5site", TimelineStepS: 0.1,
			Fail: &result.Failure{Site: "CA", AtS: 3, GapS: map[string]float64{"epaxos": 0.1, "multipaxos": 1.2}[proto]}}
		for i := range 80 {
			ts := float64(i) / 10
			ops := int64(900 + rng.IntN(200))
			if proto == "multipaxos" && ts >= 3 && ts < 4.2 {
				ops = 0
			}
			r.Timeline = append(r.Timeline, result.Point{TS: ts, Ops: ops})
		}
		f.Runs = append(f.Runs, r)
	}
	return f
}

func TestAllCharts(t *testing.T) {
	dir := t.TempDir()
	if out := os.Getenv("PLOT_OUT"); out != "" { // to look at the charts: PLOT_OUT=/tmp/charts go test ./bench/plot
		dir = out
	}
	charts, err := All(synthetic(), dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, c := range charts {
		names = append(names, c.Name)
	}
	if got, want := strings.Join(names, " "), "latency-c0 latency-c100 throughput latency-tput failure cdf-c0 cdf-c100"; got != want {
		t.Fatalf("charts %q, want %q", got, want)
	}
	for _, c := range charts {
		f, err := os.Open(filepath.Join(dir, c.Name+".png"))
		if err != nil {
			t.Fatal(err)
		}
		img, err := png.Decode(f)
		f.Close()
		if err != nil {
			t.Fatalf("%s.png: %v", c.Name, err)
		}
		if b := img.Bounds(); b.Dx() != 960 || b.Dy() != 576 {
			t.Errorf("%s.png is %v", c.Name, b)
		}
		svg, err := os.ReadFile(filepath.Join(dir, c.Name+".svg"))
		if err != nil || !strings.Contains(string(svg), "<svg") {
			t.Fatalf("%s.svg: %v", c.Name, err)
		}
		if c.Title == "" {
			t.Errorf("%s has no title", c.Name)
		}
	}
}

func TestSkipsMissingExperiments(t *testing.T) {
	f := synthetic()
	f.Runs = f.RunsOf("throughput")
	charts, err := All(f, t.TempDir())
	if err != nil || len(charts) != 1 || charts[0].Name != "throughput" {
		t.Fatalf("charts %+v err %v", charts, err)
	}
}

func TestCaption(t *testing.T) {
	c := Caption(synthetic().Meta)
	for _, want := range []string{"testhost", "2 CPUs", "commit abc1234", "2026-05-01 12:00", "seed 1", "no fsync"} {
		if !strings.Contains(c, want) {
			t.Errorf("caption %q lacks %q", c, want)
		}
	}
}

func TestDisturbedRunsAreFlagged(t *testing.T) {
	runs := synthetic().RunsOf("latency")
	if d := Disturbed(runs); d != "" {
		t.Fatalf("clean runs flagged: %q", d)
	}
	runs[0].Warnings = []string{"other processes used 1.9 CPUs"}
	if d := Disturbed(runs); !strings.Contains(d, fmt.Sprintf("1 of the %d runs", len(runs))) {
		t.Fatalf("disturbed run not flagged: %q", d)
	}
	f := synthetic()
	f.Runs[0].Warnings = []string{"x"}
	if _, err := All(f, t.TempDir()); err != nil {
		t.Fatal(err)
	}
}
