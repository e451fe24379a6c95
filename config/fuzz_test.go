package config

import (
	"errors"
	"os"
	"regexp"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/parliament-lab/parliament/protocol"
)

// FuzzParse: any bytes either are refused with an error wrapping ErrInvalid, or give a
// cluster with its defaults set that passes Validate, whose replicas are exactly 1..N
// with distinct addresses, and that Marshal writes as a file Parse reads back equal.
func FuzzParse(f *testing.F) {
	// The examples: the documentation's, the scripts' test file, the tests' own.
	doc, err := os.ReadFile("../docs/config.md")
	if err != nil {
		f.Fatal(err)
	}
	for _, m := range regexp.MustCompile("(?s)```yaml\n(.*?)```").FindAllSubmatch(doc, -1) {
		f.Add(m[1])
	}
	if b, err := os.ReadFile("../scripts/testdata/cluster.yaml"); err == nil {
		f.Add(b)
	} else {
		f.Fatal(err)
	}
	f.Add([]byte(good))
	for _, n := range []int{1, 3, 5} {
		b, err := Generate(MultiPaxos, n, 7000, "").Marshal()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(`{cluster_id: 1, protocol: epaxos, replicas: [{id: 1, address: "a:1", site: CA}, {id: 3, address: "a:3", site: OR}, {id: 2, address: "a:2", site: VA}]}`))
	// Unknown field.
	f.Add([]byte("cluster_id: 1\nprotocol: multipaxos\nheartbeat_tick: 3\nreplicas: [{id: 1, address: 'h:1', site: A}]\n"))
	// Duration without unit.
	f.Add([]byte("cluster_id: 1\nprotocol: multipaxos\ntick: 10\nreplicas: [{id: 1, address: 'h:1', site: A}]\n"))
	// Not a number.
	f.Add([]byte("cluster_id: 1\nprotocol: multipaxos\nbatch: x\nreplicas: [{id: 1, address: 'h:1', site: A}]\n"))
	// Aliases.
	f.Add([]byte("a: &a [x]\nb: &b [*a, *a, *a, *a]\nc: [*b, *b, *b, *b]\n"))
	// Two documents.
	f.Add([]byte("cluster_id: 1\n---\ncluster_id: 2\n"))
	f.Add([]byte(""))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := Parse(b)
		if err != nil {
			if c != nil || !errors.Is(err, ErrInvalid) {
				t.Fatalf("refusal returns %+v and error %v, want nil and an error wrapping ErrInvalid", c, err)
			}
			return
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("parsed cluster fails Validate: %v", err)
		}
		if c.Durable == nil || c.DataDir == "" || c.Tick.D() < MinTick || c.Tick.D() > MaxTick {
			t.Fatalf("defaults not applied: durable %v, data_dir %q, tick %v", c.Durable, c.DataDir, c.Tick)
		}
		n := len(c.Replicas)
		ids := c.IDs()
		if len(ids) != n || len(c.Addresses()) != n || len(c.Sites()) != n {
			t.Fatalf("%d replicas, %d IDs, %d addresses, %d sites", n, len(ids), len(c.Addresses()), len(c.Sites()))
		}
		addrs := make(map[string]bool, n)
		for i, id := range ids {
			r, ok := c.Lookup(id)
			if id != protocol.ReplicaID(i+1) || !ok || r.ID != id {
				t.Fatalf("IDs()[%d] = %d, Lookup = %+v, %v", i, id, r, ok)
			}
			if addrs[r.Address] || CheckAddress(r.Address) != nil || c.DataDirFor(id) == "" {
				t.Fatalf("replica %d: address %q repeated or unusable, data dir %q", id, r.Address, c.DataDirFor(id))
			}
			addrs[r.Address] = true
		}
		out, err := c.Marshal()
		if err != nil {
			t.Fatalf("Marshal: %v", err)
		}
		back, err := Parse(out)
		if err != nil {
			t.Fatalf("Marshal's output does not parse: %v\n%s", err, out)
		}
		if diff := cmp.Diff(c, back); diff != "" {
			t.Fatalf("Marshal's output reads back different (-parsed +read back):\n%s\n%s", diff, out)
		}
	})
}
