// Package prefixset is a set of positive integers kept as a contiguous prefix 1..Prefix
// plus the sorted numbers above it. Sets of numbers that are filled in almost in order (a
// client's executed sequence numbers, a row's executed instances) stay a few words long,
// whatever their size, and are cheap to copy and to serialize.
package prefixset

import "slices"

// Set is the set {1..Prefix} ∪ Above. The zero value is the empty set.
type Set struct {
	Prefix uint64   // 1..Prefix are in the set
	Above  []uint64 // the others, sorted, each above Prefix+1
}

// Has reports whether n is in the set.
func (s *Set) Has(n uint64) bool {
	if n <= s.Prefix {
		return true
	}
	_, ok := slices.BinarySearch(s.Above, n)
	return ok
}

// Add inserts n (> 0) and reports whether it was new. When n extends the prefix, the
// numbers of Above it joins are folded into the prefix.
func (s *Set) Add(n uint64) bool {
	if n <= s.Prefix {
		return false
	}
	if n == s.Prefix+1 {
		s.Prefix = n
		i := 0
		for i < len(s.Above) && s.Above[i] == s.Prefix+1 {
			s.Prefix++
			i++
		}
		if i > 0 {
			s.Above = append(s.Above[:0], s.Above[i:]...)
		}
		return true
	}
	i, found := slices.BinarySearch(s.Above, n)
	if found {
		return false
	}
	s.Above = slices.Insert(s.Above, i, n)
	return true
}

// Len returns the number of elements.
func (s *Set) Len() int { return int(s.Prefix) + len(s.Above) }

// Clone returns a copy sharing no memory with s.
func (s *Set) Clone() *Set { return &Set{Prefix: s.Prefix, Above: slices.Clone(s.Above)} }
