package transport

import (
	"bytes"
	"os"
	"strings"
	"testing"
	"time"
)

func TestEmbeddedMatrixMatchesWorkloads(t *testing.T) {
	want, err := os.ReadFile("../workloads/matrices/aws-5site.csv")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal([]byte(aws5SiteCSV), want) {
		t.Fatal("transport/aws-5site.csv differs from workloads/matrices/aws-5site.csv: copy it again")
	}
}

func TestDefaultMatrix(t *testing.T) {
	m := DefaultMatrix()
	if got := strings.Join(m.Sites, ","); got != "CA,VA,OR,IE,JP" {
		t.Fatalf("sites = %s", got)
	}
	for _, tc := range []struct {
		a, b string
		want time.Duration
	}{
		{"CA", "VA", 29950 * time.Microsecond},
		{"VA", "CA", 29950 * time.Microsecond},
		{"IE", "JP", 102200 * time.Microsecond},
		{"CA", "CA", 50 * time.Microsecond},
	} {
		got, err := m.OneWay(tc.a, tc.b)
		if err != nil || got != tc.want {
			t.Errorf("OneWay(%s,%s) = %v, %v; want %v", tc.a, tc.b, got, err, tc.want)
		}
	}
	if _, err := m.OneWay("CA", "MARS"); err == nil || !strings.Contains(err.Error(), `unknown site "MARS"`) {
		t.Errorf("OneWay to an unknown site: err = %v", err)
	}
	// Each call returns a copy: scribbling on it does not change the next one.
	m.RTTMillis[0][1] = -1
	if DefaultMatrix().RTTMillis[0][1] != 59.9 {
		t.Fatal("DefaultMatrix shares memory between calls")
	}
}

func TestSubset(t *testing.T) {
	m := ThreeSiteMatrix()
	if got := strings.Join(m.Sites, ","); got != "CA,VA,IE" {
		t.Fatalf("sites = %s", got)
	}
	want := [][]float64{{0.1, 59.9, 141.2}, {59.9, 0.3, 70.5}, {141.2, 70.5, 0.1}}
	for i := range want {
		for j := range want[i] {
			if m.RTTMillis[i][j] != want[i][j] {
				t.Fatalf("RTT[%d][%d] = %v, want %v", i, j, m.RTTMillis[i][j], want[i][j])
			}
		}
	}
	if err := m.Validate(); err != nil {
		t.Fatal(err)
	}
	if _, err := DefaultMatrix().Subset("CA", "XX"); err == nil || !strings.Contains(err.Error(), `unknown site "XX"`) {
		t.Fatalf("subset with unknown site: %v", err)
	}
	if _, err := DefaultMatrix().Subset("CA", "CA"); err == nil {
		t.Fatal("subset with a duplicate site accepted")
	}
}

func TestParseMatrixErrors(t *testing.T) {
	for _, tc := range []struct {
		name, csv, want string
	}{
		{"no header", "# only a comment\n", "no header"},
		{"bad header", "city,A,B\nA,0,1\nB,1,0\n", `header must start with "site"`},
		{"duplicate header site", "site,A,A\nA,0,1\n", `site "A" appears twice`},
		{"unknown row", "site,A,B\nA,0,1\nC,1,0\n", `line 3: unknown site "C"`},
		{"duplicate row", "site,A,B\nA,0,1\nA,0,1\nB,1,0\n", `line 3: row "A" already given on line 2`},
		{"missing row", "site,A,B\nA,0,1\n", `missing row for site "B"`},
		{"short row", "site,A,B\nA,0\nB,1,0\n", `line 2: row "A" has 1 values, want 2`},
		{"long row", "site,A,B\nA,0,1,2\nB,1,0\n", `row "A" has 3 values, want 2`},
		{"non-numeric", "site,A,B\nA,0,fast\nB,1,0\n", `line 2: row "A" column "B": "fast" is not a number`},
		{"negative", "site,A,B\nA,0,1\nB,-1,0\n", `line 3: row "B" column "A": RTT -1 must be a non-negative`},
		{"infinite", "site,A,B\nA,0,+Inf\nB,1,0\n", `row "A" column "B": RTT +Inf`},
		{"NaN", "site,A,B\nA,0,NaN\nB,1,0\n", `row "A" column "B": RTT NaN`},
		// Found by FuzzParseMatrix: past a time.Duration, RTT returned a negative duration.
		{"too large", "site,A\nA,9227000000000\n", `row "A" column "A": RTT 9227000000000 must be a non-negative finite number of milliseconds below 9223372036854`},
		{"asymmetric", "site,A,B\nA,0,10\nB,12,0\n", `asymmetric: row "A" column "B" is 10 but row "B" column "A" is 12`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseMatrix(strings.NewReader(tc.csv))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v; want it to contain %q", err, tc.want)
			}
		})
	}
}

func TestParseMatrixLenient(t *testing.T) {
	// Comments anywhere, blank lines, spaces, rows in another order than the header.
	m, err := ParseMatrix(strings.NewReader("# c\n\nsite, A, B\n# between\nB, 4, 0.5\nA, 0, 4\n"))
	if err != nil {
		t.Fatal(err)
	}
	if d, _ := m.OneWay("A", "B"); d != 2*time.Millisecond {
		t.Fatalf("OneWay(A,B) = %v", d)
	}
	if d, _ := m.OneWay("B", "B"); d != 250*time.Microsecond {
		t.Fatalf("OneWay(B,B) = %v", d)
	}
}

func TestLoadMatrix(t *testing.T) {
	m, err := LoadMatrix("../workloads/matrices/aws-5site.csv")
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Sites) != 5 {
		t.Fatalf("sites = %v", m.Sites)
	}
	if _, err := LoadMatrix("testdata/does-not-exist.csv"); err == nil {
		t.Fatal("missing file accepted")
	}
}
