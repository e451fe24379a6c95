package workloads

import (
	"errors"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/parliament-lab/parliament/transport"
)

func TestAWS5Matrix(t *testing.T) {
	m := AWS5()
	if got, want := strings.Join(m.Sites, ","), "CA,VA,OR,IE,JP"; got != want {
		t.Fatalf("sites %s, want %s", got, want)
	}
	if rtt, _ := m.RTT("VA", "IE"); rtt != 70.5 {
		t.Fatalf("VA-IE rtt %v, want 70.5", rtt)
	}
	if d, _ := m.OneWay("CA", "VA"); d != 29950*time.Microsecond {
		t.Fatalf("CA-VA one way %v", d)
	}
	// Round trip through String and ParseMatrix.
	back, err := ParseMatrix(strings.NewReader(m.String()))
	if err != nil || back.String() != m.String() {
		t.Fatalf("round trip: %v\n%s", err, back)
	}
}

func TestResolveWAN(t *testing.T) {
	m3, err := ResolveWAN("aws-3site")
	if err != nil || strings.Join(m3.Sites, ",") != "CA,VA,IE" || m3.RTTMillis[1][2] != 70.5 {
		t.Fatalf("aws-3site: %v %+v", err, m3)
	}
	none, err := ResolveWAN("none")
	if err != nil || none != nil {
		t.Fatalf("none: %v %v", none, err)
	}
	path := filepath.Join(t.TempDir(), "m.csv")
	os.WriteFile(path, []byte("# two sites\nsite,A,B\nA,0,10\nB,10,0\n"), 0o644)
	mf, err := ResolveWAN(path)
	if err != nil || mf.RTTMillis[0][1] != 10 {
		t.Fatalf("file: %v %+v", err, mf)
	}
	if _, err := ResolveWAN(filepath.Join(t.TempDir(), "missing.csv")); err == nil {
		t.Fatal("missing file accepted")
	}
}

func TestParseMatrixRejects(t *testing.T) {
	for name, in := range map[string]string{
		"asymmetric": "site,A,B\nA,0,10\nB,20,0\n",
		"negative":   "site,A,B\nA,0,-1\nB,-1,0\n",
		"short row":  "site,A,B\nA,0\nB,1,0\n",
		"missing":    "site,A,B\nA,0,1\n",
		"dup site":   "site,A,A\nA,0,1\nA,1,0\n",
		"empty":      "# nothing\n",
		"nan":        "site,A\nA,NaN\n",
	} {
		if _, err := ParseMatrix(strings.NewReader(in)); !errors.Is(err, ErrBadMatrix) {
			t.Errorf("%s: err %v, want ErrBadMatrix", name, err)
		}
	}
}

func TestForReplicas(t *testing.T) {
	m := AWS5()
	m3, _ := m.ForReplicas(3)
	if strings.Join(m3.Sites, ",") != "CA,VA,IE" {
		t.Fatalf("3 replicas on aws-5site: %v", m3.Sites)
	}
	m7, _ := m.ForReplicas(7)
	if strings.Join(m7.Sites, ",") != "CA,VA,OR,IE,JP,CA2,VA2" || m7.RTTMillis[0][5] != 0.1 || m7.RTTMillis[5][1] != 59.9 {
		t.Fatalf("7 replicas: %v %v", m7.Sites, m7.RTTMillis)
	}
	// A copy's name skips the matrix's own sites: A, A2, then A3 (not a second A2).
	ab := &Matrix{Sites: []string{"A", "A2"}, RTTMillis: [][]float64{{1, 5}, {5, 1}}}
	if m3, err := ab.ForReplicas(3); err != nil || strings.Join(m3.Sites, ",") != "A,A2,A3" || (*transport.Matrix)(m3).Validate() != nil {
		t.Fatalf("3 replicas on sites A, A2: %v (err %v)", m3, err)
	}
	if got := PlaceReplicas(nil, 3); strings.Join(got, ",") != "local,local,local" {
		t.Fatalf("no wan placement %v", got)
	}
}

func TestQuorumSizes(t *testing.T) {
	for _, c := range []struct{ n, fast, maj int }{{3, 2, 2}, {5, 3, 3}, {7, 5, 4}, {9, 6, 5}} {
		if FastQuorum(c.n) != c.fast || Majority(c.n) != c.maj {
			t.Errorf("n=%d: fast %d maj %d, want %d %d", c.n, FastQuorum(c.n), Majority(c.n), c.fast, c.maj)
		}
	}
}

// TestOptimalAWS5 checks the optimum against values worked out by hand from the matrix.
func TestOptimalAWS5(t *testing.T) {
	opt, err := Optimal(AWS5(), "CA")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]Optimum{
		// CA: others sorted OR 21.1, VA 59.9, JP 111.7, IE 141.2; fast quorum 3 = self + 2.
		"CA": {EPaxosFast: 0.1 + 59.9, EPaxosSlow: 0.1 + 2*59.9, MultiPaxos: 0.1 + 59.9},
		// VA: CA 59.9, IE 70.5, OR 72.5, JP 152.4.
		"VA": {EPaxosFast: 0.3 + 70.5, EPaxosSlow: 0.3 + 2*70.5, MultiPaxos: 59.9 + 59.9},
		// OR: CA 21.1, VA 72.5, JP 100.9, IE 127.3.
		"OR": {EPaxosFast: 0.3 + 72.5, EPaxosSlow: 0.3 + 2*72.5, MultiPaxos: 21.1 + 59.9},
		// IE: VA 70.5, OR 127.3, CA 141.2, JP 204.4.
		"IE": {EPaxosFast: 0.1 + 127.3, EPaxosSlow: 0.1 + 2*127.3, MultiPaxos: 141.2 + 59.9},
		// JP: OR 100.9, CA 111.7, VA 152.4, IE 204.4.
		"JP": {EPaxosFast: 0.1 + 111.7, EPaxosSlow: 0.1 + 2*111.7, MultiPaxos: 111.7 + 59.9},
	}
	for _, o := range opt {
		w := want[o.Site]
		for _, c := range []struct {
			name      string
			got, want float64
		}{{"fast", o.EPaxosFast, w.EPaxosFast}, {"slow", o.EPaxosSlow, w.EPaxosSlow}, {"mp", o.MultiPaxos, w.MultiPaxos}} {
			if math.Abs(c.got-c.want) > 1e-9 {
				t.Errorf("%s %s: %v, want %v", o.Site, c.name, c.got, c.want)
			}
		}
	}
	if o := opt[0]; o.For(MultiPaxos) != o.MultiPaxos || o.For(EPaxos) != o.EPaxosFast {
		t.Error("For picks the wrong field")
	}
	if _, err := Optimal(AWS5(), "XX"); err == nil {
		t.Error("unknown leader accepted")
	}
	// Three sites: fast quorum 2 = self + nearest.
	m3, _ := ResolveWAN(WANAWS3)
	opt3, _ := Optimal(m3, "VA")
	if got := opt3[2]; got.Site != "IE" || math.Abs(got.EPaxosFast-70.6) > 1e-9 || math.Abs(got.MultiPaxos-(70.5+59.9)) > 1e-9 {
		t.Errorf("aws-3site IE: %+v", got)
	}
}

func TestConflictGenerator(t *testing.T) {
	for _, pct := range []float64{0, 2, 25, 100} {
		g, err := NewGenerator(Spec{ConflictPct: pct}, 7, 1)
		if err != nil {
			t.Fatal(err)
		}
		const n = 20000
		hot := 0
		for range n {
			op := g.Next()
			isHot := string(op.Key) == HotKey
			if isHot != op.Hot {
				t.Fatalf("Hot flag %v for key %q", op.Hot, op.Key)
			}
			if isHot {
				hot++
			} else if !strings.HasPrefix(string(op.Key), "c7/") {
				t.Fatalf("private key %q not private to client 7", op.Key)
			}
			if op.Read || len(op.Value) != 16 {
				t.Fatalf("default should be 16-byte PUTs, got %+v", op)
			}
		}
		got := float64(hot) / n * 100
		if math.Abs(got-pct) > 1.5 {
			t.Errorf("conflict %v%%: measured %.2f%% hot", pct, got)
		}
	}
}

func TestPrivateKeysDistinctAcrossClients(t *testing.T) {
	a, _ := NewGenerator(Spec{PrivateKeys: 4}, 1, 1)
	b, _ := NewGenerator(Spec{PrivateKeys: 4}, 2, 1)
	seen := map[string]bool{}
	for range 8 {
		seen[string(a.Next().Key)] = true
	}
	if len(seen) != 4 {
		t.Fatalf("client cycles through %d keys, want 4", len(seen))
	}
	for range 8 {
		if k := string(b.Next().Key); seen[k] {
			t.Fatalf("clients share private key %q", k)
		}
	}
}

func TestReadRatioAndDeterminism(t *testing.T) {
	g1, _ := NewGenerator(Spec{Distribution: DistUniform, ReadPct: 30, Keys: 1000, ValueSize: 100}, 3, 42)
	g2, _ := NewGenerator(Spec{Distribution: DistUniform, ReadPct: 30, Keys: 1000, ValueSize: 100}, 3, 42)
	reads := 0
	for range 10000 {
		a, b := g1.Next(), g2.Next()
		if string(a.Key) != string(b.Key) || a.Read != b.Read {
			t.Fatal("same seed, different commands")
		}
		if a.Read {
			reads++
			if a.Value != nil {
				t.Fatal("read carries a value")
			}
		} else if len(a.Value) != 100 {
			t.Fatalf("value size %d", len(a.Value))
		}
	}
	if reads < 2800 || reads > 3200 {
		t.Errorf("reads %d of 10000, want ~3000", reads)
	}
}

func TestZipfSkew(t *testing.T) {
	g, err := NewGenerator(Spec{Distribution: DistZipf, Keys: 1000, Theta: 0.99}, 1, 5)
	if err != nil {
		t.Fatal(err)
	}
	counts := map[string]int{}
	const n = 50000
	for range n {
		counts[string(g.Next().Key)]++
	}
	// P(0) = 1/zeta(1000, 0.99) ≈ 0.133 for θ = 0.99.
	z := NewZipf(1000, 0.99)
	p0 := 1 / z.zetan
	if got := float64(counts["k0"]) / n; math.Abs(got-p0) > 0.01 {
		t.Errorf("P(k0) = %.3f, want %.3f", got, p0)
	}
	if counts["k0"] <= counts["k1"] || counts["k1"] <= counts["k10"] {
		t.Errorf("not skewed: k0 %d k1 %d k10 %d", counts["k0"], counts["k1"], counts["k10"])
	}
	if _, err := NewGenerator(Spec{Distribution: DistZipf, Theta: 1}, 1, 1); err == nil {
		t.Error("theta 1 accepted")
	}
}

func TestSpecValidate(t *testing.T) {
	for _, s := range []Spec{{Distribution: "x"}, {ConflictPct: 101}, {ReadPct: -1}, {ValueSize: 2 << 20}, {ValueSize: -1}, {Keys: -5}} {
		if err := s.Defaults().Validate(); err == nil {
			t.Errorf("%+v accepted", s)
		}
	}
	if (Loop{Outstanding: -1}).Validate() == nil || (Loop{Rate: -1}).Validate() == nil {
		t.Error("bad loop accepted")
	}
}

func TestPoissonArrivals(t *testing.T) {
	a := NewArrivals(1000, 1, 1)
	const n = 20000
	var last time.Duration
	for range n {
		next := a.Next()
		if next < last {
			t.Fatal("arrivals go back in time")
		}
		last = next
	}
	mean := last.Seconds() / n
	if math.Abs(mean-0.001) > 0.00005 {
		t.Errorf("mean inter-arrival %v s, want 0.001", mean)
	}
	if SplitRate(1000, 4) != 250 || SplitRate(1, 0) != 0 {
		t.Error("SplitRate")
	}
}
