package prefixset

import (
	"math/rand/v2"
	"slices"
	"testing"
)

// Against a map, over random insertion orders of 1..300 with repeats: Add reports new
// exactly once per number, Has and Len agree, and the representation stays canonical (no
// element of Above at or next to the prefix, Above sorted without repeats).
func TestAgainstMap(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for round := range 200 {
		var s Set
		ref := map[uint64]bool{}
		for range 600 {
			n := 1 + rng.Uint64N(300)
			if round%2 == 0 { // half the rounds mostly in order, like sequence numbers
				n = min(uint64(len(ref))+1+rng.Uint64N(4), 300)
			}
			if got, want := s.Add(n), !ref[n]; got != want {
				t.Fatalf("Add(%d) = %v, want %v", n, got, want)
			}
			ref[n] = true
			if len(s.Above) > 0 && s.Above[0] <= s.Prefix+1 || !slices.IsSorted(s.Above) || len(slices.Compact(slices.Clone(s.Above))) != len(s.Above) {
				t.Fatalf("not canonical: prefix %d above %v", s.Prefix, s.Above)
			}
		}
		for n := uint64(1); n <= 301; n++ {
			if s.Has(n) != ref[n] {
				t.Fatalf("Has(%d) = %v, want %v", n, s.Has(n), ref[n])
			}
		}
		if s.Len() != len(ref) {
			t.Fatalf("Len = %d, want %d", s.Len(), len(ref))
		}
		c := s.Clone()
		c.Add(1000)
		if s.Has(1000) || !c.Has(1000) || c.Len() != s.Len()+1 {
			t.Fatalf("the clone shares memory or lost elements")
		}
	}
}
