package transport

import (
	"math"
	"strings"
	"testing"
)

// FuzzParseMatrix: any text either is refused with an error naming the matrix, or gives a
// matrix that passes Validate (square, symmetric, non-negative, finite, unique non-empty
// sites), answers RTT and OneWay for every pair of its sites with a non-negative
// symmetric duration, and reads back the same from the CSV it would be written as.
func FuzzParseMatrix(f *testing.F) {
	f.Add(aws5SiteCSV)
	f.Add("site,A\nA,0\n")
	f.Add("site,A,B\r\nB,1,0.5\r\nA,0.25,1\r\n")
	f.Add("  # comment\n\nsite , A , B\n A , 0 , 1e3 \nB,1000,0\n")
	f.Add("site,A,B\nA,0,1\nB,2,0\n")        // asymmetric
	f.Add("site,A,B\nA,0,1\n")               // missing row
	f.Add("site,A,B\nA,0,1\nA,0,1\nB,1,0\n") // duplicate row
	f.Add("site,A,A\nA,0,1\n")               // duplicate site
	f.Add("site,A,\nA,0,1\n")                // empty site
	f.Add("site,A,B\nA,0,x\nB,x,0\n")        // not a number
	f.Add("site,A,B\nA,0,-1\nB,-1,0\n")      // negative
	f.Add("site,A,B\nA,0,NaN\nB,NaN,0\n")    // not a number either
	f.Add("site,A,B\nA,0,+Inf\nB,+Inf,0\n")  // infinite
	f.Add("site,A,B\nA,0,0x1p4\nB,16,0\n")   // hex float
	f.Add("site,A,B\nA,0,1,2\nB,1,0\n")      // too many values
	f.Add("site,A,B\nC,0,1\nB,1,0\n")        // unknown site
	f.Add("city,A,B\nA,0,1\nB,1,0\n")        // bad header
	f.Add("site\n")                          // no site
	f.Add("# nothing\n")                     // no header
	// A line over bufio.Scanner's limit.
	f.Add("site,A\nA," + strings.Repeat("9", 70000) + "\n")
	f.Fuzz(func(t *testing.T, s string) {
		m, err := ParseMatrix(strings.NewReader(s))
		if err != nil {
			if m != nil || !strings.HasPrefix(err.Error(), "transport: matrix") {
				t.Fatalf("refusal returns matrix %v and error %q, want nil and an error naming the matrix", m, err)
			}
			return
		}
		if err := m.Validate(); err != nil {
			t.Fatalf("parsed matrix fails Validate: %v", err)
		}
		n := len(m.Sites)
		if n == 0 || len(m.RTTMillis) != n {
			t.Fatalf("%d sites, %d rows", n, len(m.RTTMillis))
		}
		for i, a := range m.Sites {
			if a == "" || a != strings.TrimSpace(a) || strings.ContainsAny(a, ",\n") {
				t.Fatalf("site %q: empty, untrimmed or holding a separator", a)
			}
			if k, ok := m.Index(a); !ok || k != i {
				t.Fatalf("Index(%q) = %d, %v; want %d", a, k, ok, i)
			}
			for j, b := range m.Sites {
				v := m.RTTMillis[i][j]
				if v < 0 || math.IsNaN(v) || math.IsInf(v, 0) || v != m.RTTMillis[j][i] {
					t.Fatalf("RTT %q-%q = %v, %q-%q = %v", a, b, v, b, a, m.RTTMillis[j][i])
				}
				ab, err1 := m.RTT(a, b)
				ba, err2 := m.RTT(b, a)
				ow, err3 := m.OneWay(a, b)
				if err1 != nil || err2 != nil || err3 != nil {
					t.Fatalf("RTT/OneWay %q-%q: %v, %v, %v", a, b, err1, err2, err3)
				}
				if ab < 0 || ab != ba || ow < 0 || ow > ab {
					t.Fatalf("RTT %q-%q = %v (entry %v ms), back %v, one way %v: want a non-negative symmetric duration", a, b, ab, v, ba, ow)
				}
			}
		}
		// Written back as CSV, it reads the same.
		back, err := ParseMatrix(strings.NewReader(m.String()))
		if err != nil {
			t.Fatalf("matrix written back does not parse: %v\n%s", err, m.String())
		}
		if strings.Join(back.Sites, ",") != strings.Join(m.Sites, ",") {
			t.Fatalf("sites read back %v, want %v", back.Sites, m.Sites)
		}
		for i := range m.RTTMillis {
			for j := range m.RTTMillis[i] {
				if back.RTTMillis[i][j] != m.RTTMillis[i][j] {
					t.Fatalf("RTT[%d][%d] read back %v, want %v", i, j, back.RTTMillis[i][j], m.RTTMillis[i][j])
				}
			}
		}
	})
}
