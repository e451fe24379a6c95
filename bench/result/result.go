// Package result is the on-disk format of a benchmark: results.json (everything, read
// back by the plotter) and results.csv (one row per run and site, for spreadsheets). The
// schema is documented in docs/results.md; change both together. Fields are only ever
// added, so older results files stay readable.
package result

import (
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"time"
)

// File names inside a results directory.
const (
	JSONName = "results.json"
	CSVName  = "results.csv"
)

// File is the content of results.json.
type File struct {
	Meta    Meta      `json:"meta"`
	Runs    []Run     `json:"runs"`
	Summary []Summary `json:"summary,omitempty"`
}

// Meta stamps a results file with where, when and how it was made.
type Meta struct {
	Machine   string    `json:"machine"`   // host name
	CPUs      int       `json:"cpus"`      // runtime.NumCPU
	OS        string    `json:"os"`        // GOOS/GOARCH
	Go        string    `json:"go"`        // runtime.Version
	Commit    string    `json:"commit"`    // git rev-parse --short HEAD ("+dirty" when the tree has changes), "unknown" outside a repository
	Command   string    `json:"command"`   // the command line that produced the file
	Seed      int64     `json:"seed"`      // master seed; per-client seeds derive from it
	Started   time.Time `json:"started"`   // wall-clock start of the suite
	ElapsedS  float64   `json:"elapsed_s"` // wall-clock length of the suite
	Suite     string    `json:"suite"`     // "default" or "custom"
	Durable   bool      `json:"durable"`   // whether replicas fsynced their log (also per run)
	Emulation string    `json:"emulation"` // how the WAN was made: "in-process" (loopback TCP + delay emulator) or "external"
}

// Run is one benchmark run: one protocol, one configuration, one measurement window.
type Run struct {
	Name        string  `json:"name"`       // unique within the file, e.g. "latency/epaxos/c0"
	Experiment  string  `json:"experiment"` // "latency", "throughput", "sweep", "failure" or "custom"
	Protocol    string  `json:"protocol"`   // "epaxos" or "multipaxos"
	Replicas    int     `json:"replicas"`
	Conflict    float64 `json:"conflict"` // percent of commands on the hot key
	WAN         string  `json:"wan"`      // matrix name or file; "none"
	Leader      string  `json:"leader"`   // Multi-Paxos leader site ("" for EPaxos)
	Durable     bool    `json:"durable"`
	Compress    bool    `json:"compress,omitempty"` // s2 compression on the peer connections (in-process) or in the cluster file (external)
	Clients     int     `json:"clients"`            // per site
	Outstanding int     `json:"outstanding"`        // per client
	RateOps     float64 `json:"rate_ops"`           // open-loop target (total ops/s); 0 = closed loop
	Repeat      int     `json:"repeat"`             // 0-based repetition of the same configuration
	Seed        int64   `json:"seed"`
	DurationS   float64 `json:"duration_s"` // measured window (after warm-up)
	WarmupS     float64 `json:"warmup_s"`

	// External: the run benchmarked a running cluster through the client library
	// (parliament bench --config), which the bench did not start. It sees what its clients
	// see (latencies, throughput, errors, the timeline, Retries and Redirects) but neither
	// the replicas' counters (FastPathRatio, MsgsPerCmd, BytesPerCmd, Elections,
	// WarmupElections, LeaderEnd, Recoveries, Dropped) nor its own host's load (HostStall,
	// OtherCPU): those are 0 here and mean "not measured", printed "n/a" by the table and
	// left empty in results.csv. Files written before this field existed mark such runs
	// only with Meta.Emulation "external" (see File.IsExternal).
	External bool `json:"external,omitempty"`

	ThroughputOps float64 `json:"throughput_ops"`  // completed commands per second in the window
	FastPathRatio float64 `json:"fast_path_ratio"` // EPaxos: fast-path commits / all commits led (1 for Multi-Paxos by convention: no slow path)
	MsgsPerCmd    float64 `json:"msgs_per_cmd"`    // peer messages sent by all replicas per completed command
	BytesPerCmd   float64 `json:"bytes_per_cmd"`   // peer bytes sent per completed command (0 when unknown)
	Errors        int64   `json:"errors"`          // commands that failed or timed out
	Elections     uint64  `json:"elections"`       // Multi-Paxos leader elections won during the measured window (0 in a steady run)
	// WarmupElections: elections won during the warm-up (after the first leader was
	// agreed); LeaderEnd: the site of the leader every live replica followed when the
	// window ended ("" when they did not agree). A steady run has 0 and Leader.
	WarmupElections uint64 `json:"warmup_elections"`
	LeaderEnd       string `json:"leader_end,omitempty"`

	// Disturbances: events a steady run does not have. Each one means the run measured
	// more than the protocol on an idle machine (docs/results.md, "Disturbed runs");
	// Warnings says which, in words.
	// Retries and Redirects are counted by the clients, in the window, in-process and on
	// an external cluster alike (there from client.Stats, read when the window opens and
	// closes).
	Retries    int64  `json:"retries"`      // client resends after RetryTimeoutS without a reply (same client and seq)
	Redirects  int64  `json:"redirects"`    // redirect answers (no leader known, replica stopping) after which a client resent
	Recoveries uint64 `json:"recoveries"`   // Multi-Paxos campaigns (phase 1 started) or EPaxos explicit prepares started, in the window
	Dropped    uint64 `json:"dropped_msgs"` // peer messages dropped in the window by the TCP transports (full queue, peer down) or the WAN emulator
	// HostStall: how late a goroutine of the benchmark process that sleeps 5 ms at a time
	// woke up, during the window. On an idle machine about 1ms at p99; when other
	// processes saturate the cores every replica, link and client waits about as long.
	HostStall Percentiles `json:"host_stall_ms"`
	// OtherCPU: CPUs' worth of time that processes other than the benchmark used during
	// the window (Linux: /proc/stat minus the process's own rusage; 0 elsewhere). Near 0
	// on an idle machine; 1.5 on 2 cores means the replicas competed for the rest.
	OtherCPU float64  `json:"other_cpu"`
	Warnings []string `json:"warnings,omitempty"`
	// The timeouts the run used.
	RetryTimeoutS     float64 `json:"retry_timeout_s"`               // client resend timeout (in-process it doubles on each resend of a command; the client library of an external run keeps it)
	ElectionTimeoutMs float64 `json:"election_timeout_ms,omitempty"` // Multi-Paxos base election timeout (a follower waits 1-2x this)
	RecoveryTimeoutMs float64 `json:"recovery_timeout_ms,omitempty"` // EPaxos: how long an instance may stay uncommitted before recovery

	Fail *Failure `json:"fail,omitempty"` // the crash injected, if any

	// Timeline: completed commands per interval over the whole run (warm-up included),
	// t_s measured from the start of the load.
	TimelineStepS float64 `json:"timeline_step_s"`
	Timeline      []Point `json:"timeline"`

	Commit Percentiles `json:"commit_ms"` // all sites merged
	Exec   Percentiles `json:"exec_ms"`
	// CDFs of commit and execution latency, all sites merged (chart (e)).
	CommitCDF []CDFPoint `json:"commit_cdf,omitempty"`
	ExecCDF   []CDFPoint `json:"exec_cdf,omitempty"`

	Sites []Site `json:"sites"`
}

// Failure describes an injected replica crash.
type Failure struct {
	Site   string  `json:"site"`
	AtS    float64 `json:"at_s"`               // seconds after the load started
	GapS   float64 `json:"gap_s"`              // longest stretch after the crash with no command completed anywhere
	GapAtS float64 `json:"gap_at_s,omitempty"` // where that stretch began
	// GapBeforeS is the longest such stretch between the end of the warm-up and the crash:
	// the baseline that closed-loop clients produce without any failure (completions come
	// in waves of one round trip), to compare GapS with.
	GapBeforeS float64 `json:"gap_before_s"`
}

// Point is one interval of the timeline.
type Point struct {
	TS  float64 `json:"t_s"`
	Ops int64   `json:"ops"`
}

// CDFPoint: fraction P of commands took at most Ms milliseconds.
type CDFPoint struct {
	Ms float64 `json:"ms"`
	P  float64 `json:"p"`
}

// Percentiles of a latency distribution in milliseconds.
type Percentiles struct {
	P50  float64 `json:"p50"`
	P90  float64 `json:"p90"`
	P99  float64 `json:"p99"`
	P999 float64 `json:"p999"`
	Mean float64 `json:"mean"`
	Max  float64 `json:"max"`
}

// Site is what the clients at one site measured.
type Site struct {
	Site    string      `json:"site"`
	Ops     int64       `json:"ops"`
	Commit  Percentiles `json:"commit_ms"`
	Exec    Percentiles `json:"exec_ms"`
	Optimum float64     `json:"optimum_commit_ms"` // theoretical best commit latency for this protocol here (EPaxos: fast path); 0 without a WAN
	// OptimumSlow: EPaxos slow-path optimum (nearest majority twice); 0 for Multi-Paxos.
	OptimumSlow float64 `json:"optimum_slow_ms,omitempty"`
}

// Summary aggregates one metric of the repetitions of one configuration
// (github.com/montanaflynn/stats).
type Summary struct {
	Key    string  `json:"key"`    // configuration, e.g. "latency/epaxos/c0" (the run name without the repeat)
	Metric string  `json:"metric"` // e.g. "throughput_ops", "commit_p50_ms@CA"
	N      int     `json:"n"`
	Mean   float64 `json:"mean"`
	Stddev float64 `json:"stddev"`
	Min    float64 `json:"min"`
	Median float64 `json:"median"`
	Max    float64 `json:"max"`
}

// Write stores f as DIR/results.json and DIR/results.csv, creating DIR.
func Write(dir string, f *File) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	b, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, JSONName), append(b, '\n'), 0o644); err != nil {
		return err
	}
	cf, err := os.Create(filepath.Join(dir, CSVName))
	if err != nil {
		return err
	}
	if err := WriteCSV(cf, f); err != nil {
		cf.Close()
		return err
	}
	return cf.Close()
}

// Read loads DIR/results.json (or the file itself when path names a file).
func Read(path string) (*File, error) {
	if st, err := os.Stat(path); err == nil && st.IsDir() {
		path = filepath.Join(path, JSONName)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var f File
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("result: %s: %w", path, err)
	}
	return &f, nil
}

// CSVHeader is the first line of results.csv.
var CSVHeader = []string{
	"run", "experiment", "protocol", "replicas", "conflict", "wan", "leader", "durable",
	"clients", "outstanding", "rate_ops", "repeat", "duration_s", "throughput_ops",
	"fast_path_ratio", "msgs_per_cmd", "bytes_per_cmd", "errors", "site", "ops",
	"commit_p50_ms", "commit_p90_ms", "commit_p99_ms", "commit_p999_ms",
	"exec_p50_ms", "exec_p90_ms", "exec_p99_ms", "exec_p999_ms", "optimum_commit_ms",
	"elections", "retries", "redirects", "recoveries", "dropped_msgs", "host_stall_p99_ms", "host_stall_max_ms", "other_cpu",
	"external", "compress",
}

// IsExternal reports whether r, a run of f, benchmarked an external cluster, so that its
// replica and host counters were not measured (Run.External): r.External, or in a file
// written before that field existed, f.Meta.Emulation "external" (RunExternal writes
// files of external runs only).
func (f *File) IsExternal(r *Run) bool {
	return r.External || f.Meta.Emulation == "external"
}

// WriteCSV writes one row per (run, site); a run without sites gets one row with site "all".
// The cells of what an external run does not measure (Run.External) are empty.
func WriteCSV(w io.Writer, f *File) error {
	cw := csv.NewWriter(w)
	if err := cw.Write(CSVHeader); err != nil {
		return err
	}
	ff := func(v float64) string { return strconv.FormatFloat(v, 'f', -1, 64) }
	fu := func(v uint64) string { return strconv.FormatUint(v, 10) }
	for i := range f.Runs {
		r := &f.Runs[i]
		ext := f.IsExternal(r)
		// Replica and host counters: empty when not measured.
		rf, ru := ff, fu
		if ext {
			rf = func(float64) string { return "" }
			ru = func(uint64) string { return "" }
		}
		sites := r.Sites
		if len(sites) == 0 {
			sites = []Site{{Site: "all", Commit: r.Commit, Exec: r.Exec}}
		}
		for _, s := range sites {
			row := []string{
				r.Name, r.Experiment, r.Protocol, strconv.Itoa(r.Replicas), ff(r.Conflict), r.WAN, r.Leader,
				strconv.FormatBool(r.Durable), strconv.Itoa(r.Clients), strconv.Itoa(r.Outstanding), ff(r.RateOps),
				strconv.Itoa(r.Repeat), ff(r.DurationS), ff(r.ThroughputOps), rf(r.FastPathRatio),
				rf(r.MsgsPerCmd), rf(r.BytesPerCmd), strconv.FormatInt(r.Errors, 10), s.Site, strconv.FormatInt(s.Ops, 10),
				ff(s.Commit.P50), ff(s.Commit.P90), ff(s.Commit.P99), ff(s.Commit.P999),
				ff(s.Exec.P50), ff(s.Exec.P90), ff(s.Exec.P99), ff(s.Exec.P999), ff(s.Optimum),
				ru(r.Elections), strconv.FormatInt(r.Retries, 10), strconv.FormatInt(r.Redirects, 10),
				ru(r.Recoveries), ru(r.Dropped), rf(r.HostStall.P99), rf(r.HostStall.Max), rf(r.OtherCPU),
				strconv.FormatBool(ext), strconv.FormatBool(r.Compress),
			}
			if err := cw.Write(row); err != nil {
				return err
			}
		}
	}
	cw.Flush()
	return cw.Error()
}

// RunsOf returns the runs of one experiment, in file order.
func (f *File) RunsOf(experiment string) []Run {
	var out []Run
	for _, r := range f.Runs {
		if r.Experiment == experiment {
			out = append(out, r)
		}
	}
	return out
}
