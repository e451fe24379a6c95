package workloads

import (
	"errors"
	"math"
	"os"
	"strings"
	"testing"

	"github.com/parliament-lab/parliament/transport"
)

// FuzzParseMatrix: any text either is refused with an error wrapping ErrBadMatrix, or gives
// a matrix that is valid as a transport.Matrix, answers RTT and OneWay for every pair of
// its sites with non-negative symmetric values, and reads back the same from String.
func FuzzParseMatrix(f *testing.F) {
	if b, err := os.ReadFile("matrices/aws-5site.csv"); err == nil {
		f.Add(string(b))
	} else {
		f.Fatal(err)
	}
	f.Add(AWS5().String())
	f.Add("# two sites\nsite,A,B\nA,0,10\nB,10,0\n")
	f.Add("site,A,B\nA,0,10\nB,20,0\n") // asymmetric
	f.Add("site,A,B\nA,0\nB,1,0\n")     // short row
	f.Add("site,A,A\nA,0,1\nA,1,0\n")   // duplicate site
	f.Add("site,A\nA,NaN\n")            // not a number
	f.Add("site,A\nA,1e308\n")          // huge
	f.Add("site,A\nA,-0\n")             // negative zero
	f.Fuzz(func(t *testing.T, s string) {
		m, err := ParseMatrix(strings.NewReader(s))
		if err != nil {
			if m != nil || !errors.Is(err, ErrBadMatrix) {
				t.Fatalf("refusal returns matrix %v and error %v, want nil and ErrBadMatrix", m, err)
			}
			return
		}
		if err := (*transport.Matrix)(m).Validate(); err != nil {
			t.Fatalf("parsed matrix fails transport Validate: %v", err)
		}
		for i, a := range m.Sites {
			if m.Index(a) != i {
				t.Fatalf("Index(%q) = %d, want %d", a, m.Index(a), i)
			}
			for _, b := range m.Sites {
				ab, err1 := m.RTT(a, b)
				ba, err2 := m.RTT(b, a)
				ow, err3 := m.OneWay(a, b)
				if err1 != nil || err2 != nil || err3 != nil {
					t.Fatalf("RTT/OneWay %q-%q: %v, %v, %v", a, b, err1, err2, err3)
				}
				if ab < 0 || math.IsNaN(ab) || math.IsInf(ab, 0) || ab != ba || ow < 0 {
					t.Fatalf("RTT %q-%q = %v ms, back %v ms, one way %v: want a non-negative finite symmetric value", a, b, ab, ba, ow)
				}
			}
		}
		back, err := ParseMatrix(strings.NewReader(m.String()))
		if err != nil {
			t.Fatalf("String does not parse back: %v\n%s", err, m)
		}
		if back.String() != m.String() {
			t.Fatalf("String read back differs:\n%s\nwant\n%s", back, m)
		}
	})
}
