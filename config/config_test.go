package config

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/parliament-lab/parliament/protocol"
)

const good = `
cluster_id: 42
protocol: multipaxos
tick: 5ms
batch: 1000
window: 32
election_ticks: 20
heartbeat_ticks: 3
secret: s3cret
data_dir: /tmp/p
replicas:
  - {id: 1, address: "127.0.0.1:7000", site: CA}
  - {id: 2, address: "localhost:7001", site: VA, metrics: "127.0.0.1:9001"}
  - {id: 3, address: "[::1]:7002", site: my-lab, data_dir: /data/three}
`

func TestParseGood(t *testing.T) {
	c, err := Parse([]byte(good))
	if err != nil {
		t.Fatal(err)
	}
	if c.ClusterID != 42 || c.Protocol != MultiPaxos || c.Tick.D() != 5*time.Millisecond ||
		c.Batch != 1000 || c.Window != 32 || c.ElectionTicks != 20 || c.HeartbeatTicks != 3 || c.Secret != "s3cret" {
		t.Errorf("fields not decoded: %+v", c)
	}
	if !c.IsDurable() {
		t.Error("durable must default to true")
	}
	if got, want := c.DataDirFor(2), filepath.Join("/tmp/p", "2"); got != want {
		t.Errorf("DataDirFor(2) = %q, want %q", got, want)
	}
	if got := c.DataDirFor(3); got != "/data/three" {
		t.Errorf("DataDirFor(3) = %q, want the replica override", got)
	}
	if diff := cmp.Diff([]protocol.ReplicaID{1, 2, 3}, c.IDs()); diff != "" {
		t.Error(diff)
	}
	if c.Addresses()[3] != "[::1]:7002" || c.Sites()[2] != "VA" {
		t.Errorf("Addresses/Sites wrong: %v %v", c.Addresses(), c.Sites())
	}
}

func TestDefaults(t *testing.T) {
	c, err := Parse([]byte(`{cluster_id: 1, protocol: epaxos, replicas: [{id: 1, address: "a:1", site: CA}, {id: 3, address: "a:3", site: OR}, {id: 2, address: "a:2", site: VA}]}`))
	if err != nil {
		t.Fatal(err)
	}
	if c.Tick.D() != DefaultTick || !c.IsDurable() || c.DataDir != DefaultDataDir {
		t.Errorf("defaults not applied: tick=%v durable=%v data=%q", c.Tick, c.IsDurable(), c.DataDir)
	}
	c2, err := Parse([]byte(`{cluster_id: 1, protocol: multipaxos, durable: false, replicas: [{id: 1, address: "a:1", site: CA}]}`))
	if err != nil {
		t.Fatal(err)
	}
	if c2.IsDurable() {
		t.Error("durable: false ignored")
	}
}

// TestInvalid feeds one bad field at a time; each error must name the field, quote the
// value and be a single line.
func TestInvalid(t *testing.T) {
	const three = `replicas: [{id: 1, address: "127.0.0.1:7000", site: CA}, {id: 2, address: "127.0.0.1:7001", site: VA}, {id: 3, address: "127.0.0.1:7002", site: OR}]`
	tests := []struct {
		name string
		yaml string
		want []string // substrings of the error
	}{
		{"empty file", ``, []string{"empty", "parliament config"}},
		{"unknown field", "cluster_id: 1\nprotocol: epaxos\nheartbeat_tick: 3\n" + three, []string{"heartbeat_tick", "not found"}},
		{"unknown replica field", `{cluster_id: 1, protocol: multipaxos, replicas: [{id: 1, adress: "a:1", site: CA}]}`, []string{"adress"}},
		{"wrong type", "cluster_id: x\nprotocol: epaxos\n" + three, []string{"cluster_id", "line 1"}},
		{"bare integer duration", "cluster_id: 1\nprotocol: epaxos\ntick: 10\n" + three, []string{"tick", "unit", "10ms"}},
		{"bad duration", "cluster_id: 1\nprotocol: epaxos\ntick: fast\n" + three, []string{`"fast"`, "duration"}},
		{"two documents", "cluster_id: 1\nprotocol: epaxos\n" + three + "\n---\ncluster_id: 2\n", []string{"more than one"}},
		{"zero cluster id", "protocol: epaxos\n" + three, []string{"cluster_id", "nonzero"}},
		{"missing protocol", "cluster_id: 1\n" + three, []string{"protocol", "epaxos or"}},
		{"unknown protocol", "cluster_id: 1\nprotocol: raft\n" + three, []string{"protocol", `"raft"`, "epaxos or multipaxos"}},
		{"epaxos even", `{cluster_id: 1, protocol: epaxos, replicas: [{id: 1, address: "a:1", site: CA}, {id: 2, address: "a:2", site: CA}]}`, []string{"replicas", "2 replicas", "odd"}},
		{"epaxos one", `{cluster_id: 1, protocol: epaxos, replicas: [{id: 1, address: "a:1", site: CA}]}`, []string{"1 replicas", "at least 3"}},
		{"multipaxos none", `{cluster_id: 1, protocol: multipaxos}`, []string{"replicas", "at least one"}},
		{"id zero", `{cluster_id: 1, protocol: multipaxos, replicas: [{id: 0, address: "a:1", site: CA}]}`, []string{"replicas[0].id", "0", "1..1"}},
		{"id gap", `{cluster_id: 1, protocol: multipaxos, replicas: [{id: 1, address: "a:1", site: CA}, {id: 3, address: "a:3", site: CA}]}`, []string{"replicas[1].id", "3", "1..2"}},
		{"id duplicate", `{cluster_id: 1, protocol: multipaxos, replicas: [{id: 1, address: "a:1", site: CA}, {id: 1, address: "a:3", site: CA}]}`, []string{"replicas[1].id", "replicas[0]"}},
		{"address missing", `{cluster_id: 1, protocol: multipaxos, replicas: [{id: 1, site: CA}]}`, []string{"replicas[0].address", "missing", "host:port"}},
		{"address no port", `{cluster_id: 1, protocol: multipaxos, replicas: [{id: 1, address: "127.0.0.1", site: CA}]}`, []string{"replicas[0].address", `"127.0.0.1"`, "host:port"}},
		{"address bad port", `{cluster_id: 1, protocol: multipaxos, replicas: [{id: 1, address: "127.0.0.1:70000", site: CA}]}`, []string{"replicas[0].address", "70000", "1..65535"}},
		{"address port zero", `{cluster_id: 1, protocol: multipaxos, replicas: [{id: 1, address: "127.0.0.1:0", site: CA}]}`, []string{"replicas[0].address", "port"}},
		{"address bad host", `{cluster_id: 1, protocol: multipaxos, replicas: [{id: 1, address: "my_host!:7000", site: CA}]}`, []string{"replicas[0].address", "my_host!"}},
		{"address no host", `{cluster_id: 1, protocol: multipaxos, replicas: [{id: 1, address: ":7000", site: CA}]}`, []string{"replicas[0].address", "no host"}},
		{"address duplicate", `{cluster_id: 1, protocol: multipaxos, replicas: [{id: 1, address: "a:1", site: CA}, {id: 2, address: "a:1", site: CA}]}`, []string{"replicas[1].address", "replicas[0].address", "own port"}},
		{"site missing", `{cluster_id: 1, protocol: multipaxos, replicas: [{id: 1, address: "a:1"}]}`, []string{"replicas[0].site", "CA, VA, OR, IE, JP"}},
		{"metrics bad", `{cluster_id: 1, protocol: multipaxos, replicas: [{id: 1, address: "a:1", site: CA, metrics: "nope"}]}`, []string{"replicas[0].metrics", `"nope"`}},
		{"metrics clash", `{cluster_id: 1, protocol: multipaxos, replicas: [{id: 1, address: "a:1", site: CA}, {id: 2, address: "a:2", site: CA, metrics: "a:1"}]}`, []string{"replicas[1].metrics", "replicas[0].address"}},
		{"tick too small", "cluster_id: 1\nprotocol: epaxos\ntick: 10us\n" + three, []string{"tick", "10µs", "between"}},
		{"tick too large", "cluster_id: 1\nprotocol: epaxos\ntick: 1m\n" + three, []string{"tick", "1m0s", "between"}},
		{"negative batch", "cluster_id: 1\nprotocol: epaxos\nbatch: -1\n" + three, []string{"batch", "-1", "positive"}},
		{"negative window", "cluster_id: 1\nprotocol: multipaxos\nwindow: -5\n" + three, []string{"window", "-5"}},
		{"negative recovery", "cluster_id: 1\nprotocol: epaxos\nrecovery_ticks: -5\n" + three, []string{"recovery_ticks", "-5"}},
		{"negative truncate_bytes", "cluster_id: 1\nprotocol: epaxos\ntruncate_bytes: -1\n" + three, []string{"truncate_bytes", "-1"}},
		{"max_frame too small", "cluster_id: 1\nprotocol: epaxos\nmax_frame: 1000\n" + three, []string{"max_frame", "1000", "64 KiB"}},
		{"max_frame too large", "cluster_id: 1\nprotocol: epaxos\nmax_frame: 4294967296\n" + three, []string{"max_frame", "4294967296", "1 GiB"}},
		{"heartbeat not below election", "cluster_id: 1\nprotocol: multipaxos\nelection_ticks: 4\nheartbeat_ticks: 4\n" + three, []string{"heartbeat_ticks", "4", "election_ticks (4)"}},
		{"election one", "cluster_id: 1\nprotocol: multipaxos\nelection_ticks: 1\n" + three, []string{"election_ticks", "at least 2"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.yaml))
			if err == nil {
				t.Fatal("accepted, want an error")
			}
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("error %q does not wrap ErrInvalid", err)
			}
			msg := err.Error()
			if strings.Contains(msg, "\n") {
				t.Errorf("error is not one line: %q", msg)
			}
			for _, w := range tt.want {
				if !strings.Contains(msg, w) {
					t.Errorf("error %q does not mention %q", msg, w)
				}
			}
		})
	}
}

func TestGenerateRoundTrip(t *testing.T) {
	for _, tt := range []struct {
		proto string
		n     int
	}{{MultiPaxos, 3}, {EPaxos, 5}, {EPaxos, 7}} {
		c := Generate(tt.proto, tt.n, 7000, "")
		if err := c.Validate(); err != nil {
			t.Fatalf("%s n=%d: generated config invalid: %v", tt.proto, tt.n, err)
		}
		for i, r := range c.Replicas {
			if r.ID != protocol.ReplicaID(i+1) || r.Address != "127.0.0.1:"+itoa(7000+i) || r.Site != DefaultSites[i%5] {
				t.Errorf("replica %d = %+v", i, r)
			}
		}
		if got, want := c.DataDirFor(2), filepath.Join(DefaultDataDir, "2"); got != want {
			t.Errorf("DataDirFor(2) = %q, want %q", got, want)
		}
		b, err := c.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		back, err := Parse(b)
		if err != nil {
			t.Fatalf("generated file does not parse: %v\n%s", err, b)
		}
		if diff := cmp.Diff(c, back); diff != "" {
			t.Errorf("round trip changed the config:\n%s", diff)
		}
		if !strings.Contains(string(b), "tick: 10ms") {
			t.Errorf("tick not written as a duration string:\n%s", b)
		}
	}
	if a, b := Generate(EPaxos, 3, 1, "d"), Generate(EPaxos, 3, 1, "d"); a.ClusterID == b.ClusterID || a.ClusterID == 0 {
		t.Error("cluster IDs must be random and nonzero")
	}
	if err := Generate(EPaxos, 4, 7000, "").Validate(); err == nil {
		t.Error("4-replica epaxos accepted")
	}
	if err := Generate(MultiPaxos, 3, 65535, "").Validate(); err == nil {
		t.Error("port beyond 65535 accepted")
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "c.yaml")
	if err := os.WriteFile(p, []byte(good), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(p); err != nil {
		t.Fatal(err)
	}
	_, err := Load(filepath.Join(dir, "missing.yaml"))
	if err == nil || !strings.Contains(err.Error(), "missing.yaml") {
		t.Errorf("missing file: %v", err)
	}
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte("cluster_id: 1\nprotocol: paxos\n"), 0o600)
	if _, err := Load(bad); err == nil || !strings.Contains(err.Error(), "bad.yaml") {
		t.Errorf("bad file error must name the file: %v", err)
	}
}

func itoa(i int) string { return strconv.Itoa(i) }

// max_frame is read in bytes; left out it is 0 (the transport's 16 MiB).
func TestMaxFrame(t *testing.T) {
	const three = `replicas: [{id: 1, address: "127.0.0.1:7000", site: CA}, {id: 2, address: "127.0.0.1:7001", site: VA}, {id: 3, address: "127.0.0.1:7002", site: OR}]`
	cl, err := Parse([]byte("cluster_id: 1\nprotocol: epaxos\nmax_frame: 268435456\n" + three))
	if err != nil {
		t.Fatal(err)
	}
	if cl.MaxFrame != 256<<20 {
		t.Fatalf("max_frame = %d, want %d", cl.MaxFrame, 256<<20)
	}
	cl, err = Parse([]byte("cluster_id: 1\nprotocol: epaxos\n" + three))
	if err != nil || cl.MaxFrame != 0 {
		t.Fatalf("without max_frame: %v, MaxFrame %d; want 0", err, cl.MaxFrame)
	}
}
