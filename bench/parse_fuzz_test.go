package bench

import (
	"strings"
	"testing"
)

// FuzzParseFail: a --fail value is either refused with an error quoting it, or gives a
// non-empty site and a positive time, and SITE@DURATION written back from them parses to
// the same.
func FuzzParseFail(f *testing.F) {
	for _, s := range []string{"CA@4s", "CA", "@4s", "CA@", "CA@-1s", "CA@x", "CA@0s", "a@b@1m30s", "VA@1.5h", "JP@9223372036854775807ns", "JP@9223372036854775808ns", "@", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		spec, err := ParseFail(s)
		if err != nil {
			if spec != nil || !strings.Contains(err.Error(), "--fail") {
				t.Fatalf("ParseFail(%q) = %+v, %v; want nil and an error about --fail", s, spec, err)
			}
			return
		}
		if spec.Site == "" || spec.At <= 0 || !strings.HasPrefix(s, spec.Site+"@") {
			t.Fatalf("ParseFail(%q) = %+v: want a non-empty site and a positive time", s, spec)
		}
		back, err := ParseFail(spec.Site + "@" + spec.At.String())
		if err != nil || *back != *spec {
			t.Fatalf("ParseFail(%q) = %+v, written back reads %+v, %v", s, spec, back, err)
		}
	})
}
