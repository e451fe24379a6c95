package sim

import (
	"slices"
	"strings"
	"testing"
)

// FuzzParseFaults: a --faults value is either refused with an error naming the unknown
// fault, or every comma-separated part is a fault name, "all", "none" or empty, and the
// canonical String reads back the same faults.
func FuzzParseFaults(f *testing.F) {
	for _, s := range []string{"all", "none", "", "loss,crash", "crash, loss", "loss,dup,reorder,delay,partition,crash,skew", "loss,bogus", ",,", "all,none", "ALL", "loss ,\tskew"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		faults, err := ParseFaults(s)
		known := true
		for _, part := range strings.Split(s, ",") {
			part = strings.TrimSpace(part)
			known = known && (part == "" || part == "all" || part == "none" || slices.Contains(FaultNames(), part))
		}
		if err != nil {
			if known || faults != (Faults{}) || !strings.HasPrefix(err.Error(), "sim: unknown fault") {
				t.Fatalf("ParseFaults(%q) = %+v, %v; want a refusal naming an unknown fault", s, faults, err)
			}
			return
		}
		if !known {
			t.Fatalf("ParseFaults(%q) accepted an unknown fault: %+v", s, faults)
		}
		back, err := ParseFaults(faults.String())
		if err != nil || back != faults {
			t.Fatalf("ParseFaults(%q) = %+v, whose String %q reads back as %+v, %v", s, faults, faults.String(), back, err)
		}
	})
}

// FuzzParseCompaction: a --compaction value is exactly one of the names String gives, or
// refused with an error naming it.
func FuzzParseCompaction(f *testing.F) {
	for _, s := range []string{"swarm", "off", "on", "", "ON", " on", "compaction(3)"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		c, err := ParseCompaction(s)
		if err != nil {
			if s == "swarm" || s == "off" || s == "on" || !strings.HasPrefix(err.Error(), "sim: unknown compaction") {
				t.Fatalf("ParseCompaction(%q) error %v", s, err)
			}
			return
		}
		if c.String() != s {
			t.Fatalf("ParseCompaction(%q) = %v, want the compaction named %q", s, c, s)
		}
	})
}
