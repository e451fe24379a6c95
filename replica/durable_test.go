package replica

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/parliament-lab/parliament/config"
	"github.com/parliament-lab/parliament/protocol"
	"github.com/parliament-lab/parliament/transport"
	"github.com/parliament-lab/parliament/wal"
	"github.com/parliament-lab/parliament/wire"
)

// diskCluster is a cluster on an in-memory network whose replicas keep their log and
// snapshots in per-replica directories, so that they can be stopped and started again.
type diskCluster struct {
	t     *testing.T
	cl    *config.Cluster
	net   *transport.MemNetwork
	dirs  map[protocol.ReplicaID]string
	rs    map[protocol.ReplicaID]*Replica
	every int
	// truncate is Options.TruncateBytes: 1 (every snapshot) unless a test says otherwise.
	truncate int64
	// newEngine overrides engine construction (small retention knobs).
	newEngine func(cl *config.Cluster, pc protocol.Config) (protocol.Engine, error)
}

func newDiskCluster(t *testing.T, proto string, every int) *diskCluster {
	cl := testCluster(t, proto, 3)
	base := t.TempDir()
	c := &diskCluster{t: t, cl: cl, net: transport.NewMemNetwork(), dirs: map[protocol.ReplicaID]string{},
		rs: map[protocol.ReplicaID]*Replica{}, every: every, truncate: 1}
	for _, id := range cl.IDs() {
		c.dirs[id] = filepath.Join(base, fmt.Sprint(id))
	}
	t.Cleanup(func() {
		for _, r := range c.rs {
			r.Stop()
		}
	})
	return c
}

func (c *diskCluster) start(id protocol.ReplicaID) *Replica {
	c.t.Helper()
	opts := Options{Cluster: c.cl, ID: id, Transport: c.net.Transport(id), DataDir: c.dirs[id], SnapshotEvery: c.every,
		TruncateBytes: c.truncate}
	if c.newEngine != nil {
		opts.NewEngine = func(pc protocol.Config) (protocol.Engine, error) { return c.newEngine(c.cl, pc) }
	}
	r, err := Start(opts)
	if err != nil {
		c.t.Fatalf("start replica %d: %v", id, err)
	}
	c.rs[id] = r
	return r
}

func (c *diskCluster) startAll() {
	for _, id := range c.cl.IDs() {
		c.start(id)
	}
}

func (c *diskCluster) stop(id protocol.ReplicaID) {
	if r := c.rs[id]; r != nil {
		r.Stop()
		delete(c.rs, id)
	}
}

// writeKeys writes n keys through replica at (client, seq from 1) and returns them.
func writeKeys(t *testing.T, r *Replica, client uint64, prefix string, n int) map[string]string {
	t.Helper()
	out := map[string]string{}
	for i := 0; i < n; i++ {
		k, v := fmt.Sprintf("%s-%d", prefix, i), fmt.Sprintf("v%d", i)
		if rep := do(t, r, put(client, uint64(i+1), k, v)); rep.Result != protocol.ResultOK {
			t.Fatalf("put %s: %v", k, rep.Result)
		}
		out[k] = v
	}
	return out
}

func readKeys(t *testing.T, r *Replica, client uint64, want map[string]string) {
	t.Helper()
	seq := uint64(0)
	for k, v := range want {
		seq++
		rep := do(t, r, get(client, seq, k))
		if rep.Result != protocol.ResultOK || string(rep.Value) != v {
			t.Fatalf("replica %d: get %s = %v %q, want %q", r.ID(), k, rep.Result, rep.Value, v)
		}
	}
}

func snapFiles(t *testing.T, dir string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, "snapshot-*.snap"))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func dirSize(t *testing.T, dir string) int64 {
	t.Helper()
	var n int64
	filepath.Walk(dir, func(_ string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() {
			n += fi.Size()
		}
		return nil
	})
	return n
}

// TestDurableRestart: every acknowledged write survives stopping every replica and
// starting them again from their data directories, with snapshots and log truncation on
// the way (one snapshot file per replica, the log restarted from it), and a retried write
// is not applied twice across the restart (the sessions are in the snapshot).
func TestDurableRestart(t *testing.T) {
	for _, proto := range []string{config.MultiPaxos, config.EPaxos} {
		t.Run(proto, func(t *testing.T) {
			c := newDiskCluster(t, proto, 20)
			c.startAll()
			r1 := c.rs[1]
			acked := writeKeys(t, r1, 1001, "a", 60)
			// Client 1002 writes x=first; client 1003 overwrites it.
			if rep := do(t, r1, put(1002, 1, "x", "first")); rep.Result != protocol.ResultOK {
				t.Fatal(rep.Result)
			}
			if rep := do(t, c.rs[2], put(1003, 1, "x", "second")); rep.Result != protocol.ResultOK {
				t.Fatal(rep.Result)
			}
			acked["x"] = "second"
			for _, id := range c.cl.IDs() {
				c.stop(id)
			}
			for _, id := range c.cl.IDs() {
				files := snapFiles(t, c.dirs[id])
				if len(files) != 1 {
					t.Fatalf("replica %d has snapshot files %v, want exactly one (older ones deleted)", id, files)
				}
			}
			c.startAll()
			for _, id := range c.cl.IDs() {
				if c.rs[id].Stats().SnapshotBytes == 0 {
					t.Errorf("replica %d restarted without its snapshot", id)
				}
			}
			// A retry of client 1002's first write (same client and seq) after the restart
			// is recognized as executed: x stays "second".
			if rep := do(t, c.rs[3], put(1002, 1, "x", "first")); rep.Result != protocol.ResultOK {
				t.Fatal(rep.Result)
			}
			for _, id := range c.cl.IDs() {
				readKeys(t, c.rs[id], 2000+uint64(id), acked)
			}
			more := writeKeys(t, c.rs[2], 1004, "b", 30)
			for _, id := range c.cl.IDs() {
				readKeys(t, c.rs[id], 3000+uint64(id), more)
				if st := c.rs[id].Stats(); st.Syncs == 0 || st.Records == 0 {
					t.Errorf("replica %d: %d fsyncs, %d records: the log is not written", id, st.Syncs, st.Records)
				}
			}
		})
	}
}

// TestTruncationBoundsDisk: with frequent snapshots, the data directory stays small while
// many more commands are written than it could hold without truncation.
func TestTruncationBoundsDisk(t *testing.T) {
	for _, proto := range []string{config.MultiPaxos, config.EPaxos} {
		t.Run(proto, func(t *testing.T) {
			c := newDiskCluster(t, proto, 50)
			c.startAll()
			r := c.rs[1]
			value := strings.Repeat("v", 1000)
			var sizes []int64
			const rounds = 10
			for round := 0; round < rounds; round++ {
				for i := 0; i < 100; i++ {
					seq := uint64(round*100 + i + 1)
					// 10 keys overwritten again and again: the state stays small.
					cmd := put(77, seq, fmt.Sprintf("k%d", i%10), value)
					if rep := do(t, r, cmd); rep.Result != protocol.ResultOK {
						t.Fatal(rep.Result)
					}
				}
				sizes = append(sizes, dirSize(t, c.dirs[2]))
			}
			written := int64(rounds * 100 * 1000)
			if last := sizes[len(sizes)-1]; last > written/3 {
				t.Fatalf("data dir of replica 2 grew to %d bytes after %d bytes of values (sizes %v): not truncated", last, written, sizes)
			}
			if st := c.rs[2].Stats(); st.Snapshots < rounds {
				t.Fatalf("replica 2 took %d snapshots, want >= %d", st.Snapshots, rounds)
			}
			t.Logf("data dir sizes after each 100 writes of 1 KB: %v", sizes)
		})
	}
}

// TestSnapshotCatchUp: a replica whose disk is wiped restarts empty and catches up by a
// snapshot transfer from a peer that no longer holds the old instances, then the log.
func TestSnapshotCatchUp(t *testing.T) {
	for _, proto := range []string{config.MultiPaxos, config.EPaxos} {
		t.Run(proto, func(t *testing.T) {
			c := newDiskCluster(t, proto, 20)
			// Tiny retention: peers forget executed instances at once, so the wiped
			// replica cannot catch up from their memory.
			c.newEngine = tinyRetention
			c.startAll()
			acked := writeKeys(t, c.rs[1], 1, "a", 80)
			c.stop(3)
			if err := os.RemoveAll(c.dirs[3]); err != nil {
				t.Fatal(err)
			}
			for k, v := range writeKeys(t, c.rs[1], 2, "b", 80) {
				acked[k] = v
			}
			r3 := c.start(3)
			// Writes through replica 3 make it ask for what it misses.
			for k, v := range writeKeys(t, r3, 3, "c", 10) {
				acked[k] = v
			}
			readKeys(t, r3, 4, acked)
			if st := r3.Stats(); st.Installed == 0 {
				t.Fatalf("replica 3 caught up without installing a snapshot (stats %+v)", st)
			}
			// The installed snapshot is durable: replica 3 restarts from it.
			c.stop(3)
			if len(snapFiles(t, c.dirs[3])) != 1 {
				t.Fatalf("replica 3 has snapshot files %v after installing one", snapFiles(t, c.dirs[3]))
			}
			c.stop(1) // the majority now needs replica 3
			r3 = c.start(3)
			readKeys(t, r3, 5, acked)
		})
	}
}

// TestCorruptLogRefusesStart: damage in the middle of the log stops Start with an error
// naming the segment file and the offset; a torn last record is cut off and the replica
// starts with every earlier record.
func TestCorruptLogRefusesStart(t *testing.T) {
	c := newDiskCluster(t, config.MultiPaxos, -1)
	c.startAll()
	writeKeys(t, c.rs[1], 1, "a", 20)
	for _, id := range c.cl.IDs() {
		c.stop(id)
	}
	dir := c.dirs[2]
	segs, _ := filepath.Glob(filepath.Join(dir, "*.wal"))
	if len(segs) != 1 {
		t.Fatalf("segments %v", segs)
	}
	b, err := os.ReadFile(segs[0])
	if err != nil {
		t.Fatal(err)
	}
	// Torn tail: half a frame header at the end.
	if err := os.WriteFile(segs[0], append(append([]byte(nil), b...), 9, 0), 0o644); err != nil {
		t.Fatal(err)
	}
	r := c.start(2)
	c.stop(2)
	_ = r
	// Flip a byte in the first record: valid records follow, so this is not a torn tail.
	bad := append([]byte(nil), b...)
	bad[10] ^= 0xff
	if err := os.WriteFile(segs[0], bad, 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = Start(Options{Cluster: c.cl, ID: 2, Transport: c.net.Transport(2), DataDir: dir})
	if err == nil {
		t.Fatal("Start succeeded on a log damaged in the middle")
	}
	if !errors.Is(err, wal.ErrCorrupt) || !strings.Contains(err.Error(), segs[0]) || !strings.Contains(err.Error(), "offset 0") {
		t.Fatalf("error %q: want wal.ErrCorrupt naming %s and offset 0", err, segs[0])
	}
	if strings.Contains(err.Error(), "\n") {
		t.Fatalf("error spans lines: %q", err)
	}
}

// TestMissingSnapshotRefusesStart: a log that starts from a snapshot whose file is gone
// cannot rebuild the state: Start says which snapshot is missing.
func TestMissingSnapshotRefusesStart(t *testing.T) {
	c := newDiskCluster(t, config.MultiPaxos, 10)
	c.startAll()
	writeKeys(t, c.rs[1], 1, "a", 30)
	for _, id := range c.cl.IDs() {
		c.stop(id)
	}
	files := snapFiles(t, c.dirs[1])
	if len(files) != 1 {
		t.Fatalf("snapshot files %v", files)
	}
	os.Remove(files[0])
	_, err := Start(Options{Cluster: c.cl, ID: 1, Transport: c.net.Transport(1), DataDir: c.dirs[1]})
	if err == nil || !strings.Contains(err.Error(), "no snapshot file") {
		t.Fatalf("Start = %v, want an error about the missing snapshot file", err)
	}
	// A corrupt one is named.
	c2 := newDiskCluster(t, config.MultiPaxos, 10)
	c2.startAll()
	writeKeys(t, c2.rs[1], 1, "a", 30)
	for _, id := range c2.cl.IDs() {
		c2.stop(id)
	}
	files = snapFiles(t, c2.dirs[1])
	b, _ := os.ReadFile(files[0])
	b[len(b)/2] ^= 1
	os.WriteFile(files[0], b, 0o644)
	_, err = Start(Options{Cluster: c2.cl, ID: 1, Transport: c2.net.Transport(1), DataDir: c2.dirs[1]})
	if err == nil || !errors.Is(err, ErrSnapshotCorrupt) || !strings.Contains(err.Error(), files[0]) {
		t.Fatalf("Start = %v, want ErrSnapshotCorrupt naming %s", err, files[0])
	}
}

func TestSnapshotFileRoundTrip(t *testing.T) {
	f := normFrontier([]protocol.InstanceID{{Replica: 3, Num: 5}, {Replica: 1, Num: 9}, {Replica: 2, Num: 0}, {Replica: 1, Num: 4}})
	if want := []protocol.InstanceID{{Replica: 1, Num: 9}, {Replica: 3, Num: 5}}; !sameFrontier(f, want) {
		t.Fatalf("normFrontier = %v, want %v", f, want)
	}
	b := encodeSnapshot(f, []byte("state"))
	gf, data, err := decodeSnapshot(b)
	if err != nil || !sameFrontier(gf, f) || string(data) != "state" {
		t.Fatalf("decode = %v %q %v", gf, data, err)
	}
	for i := range b {
		bad := append([]byte(nil), b...)
		bad[i] ^= 0x40
		if _, _, err := decodeSnapshot(bad); !errors.Is(err, ErrSnapshotCorrupt) {
			t.Fatalf("byte %d flipped: err %v, want ErrSnapshotCorrupt", i, err)
		}
	}
	if _, _, err := decodeSnapshot(b[:len(b)-1]); err == nil {
		t.Fatal("short file decoded")
	}
}

// TestExternalLogNotTruncated: a log passed in Options.Log (no DataDir, so no snapshot
// files) is never truncated to records that start from a snapshot: the replica can be
// rebuilt from it.
func TestExternalLogNotTruncated(t *testing.T) {
	cl := testCluster(t, config.MultiPaxos, 1)
	dir := t.TempDir()
	l, _, _, err := wal.Open(dir, wal.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	r, err := Start(Options{Cluster: cl, ID: 1, Log: l, SnapshotEvery: 5, Transport: transport.NewMemNetwork().Transport(1)})
	if err != nil {
		t.Fatal(err)
	}
	writeKeys(t, r, 1, "a", 30)
	if r.Stats().Snapshots == 0 {
		t.Fatal("no snapshot taken")
	}
	r.Stop()
	l2, recs, _, err := wal.Open(dir, wal.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer l2.Close()
	if f := lastSnapshotFrontier(recs); len(f) > 0 {
		t.Fatalf("the external log starts from a snapshot at %v", f)
	}
	r, err = Start(Options{Cluster: cl, ID: 1, Log: l2, Records: recs, Transport: transport.NewMemNetwork().Transport(1)})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Stop()
	readKeys(t, r, 2, map[string]string{"a-0": "v0", "a-29": "v29"})
}

// TestRestartBetweenTruncations: snapshots let the engines forget (Compact) without a
// log truncation (the log has not grown enough): no snapshot file is written, and a
// restart replays the whole log onto an empty store.
func TestRestartBetweenTruncations(t *testing.T) {
	for _, proto := range []string{config.MultiPaxos, config.EPaxos} {
		t.Run(proto, func(t *testing.T) {
			c := newDiskCluster(t, proto, 10)
			c.truncate = 1 << 40
			c.startAll()
			acked := writeKeys(t, c.rs[1], 1, "a", 50)
			for _, id := range c.cl.IDs() {
				if c.rs[id].Stats().Snapshots == 0 {
					t.Fatalf("replica %d took no snapshot", id)
				}
				c.stop(id)
				if files := snapFiles(t, c.dirs[id]); len(files) != 0 {
					t.Fatalf("replica %d wrote snapshot files %v without truncating", id, files)
				}
			}
			c.startAll()
			for _, id := range c.cl.IDs() {
				readKeys(t, c.rs[id], 10+uint64(id), acked)
			}
		})
	}
}

// A snapshot larger than max_frame is filled in and sent in chunks (chunk.go), each frame
// within max_frame, a window at a time; one that fits goes as one MsgSnapshot and cancels
// a transfer in chunks to the same peer.
func TestSnapshotLargerThanMaxFrame(t *testing.T) {
	var logs bytes.Buffer
	var out outbox
	r := &Replica{
		id:  1,
		cl:  &config.Cluster{MaxFrame: config.MinMaxFrame},
		log: slog.New(slog.NewTextHandler(&logs, nil)),
		tr:  sendOnly(out.send),
	}
	r.chunkOut = newChunkSender(1, r.maxFrame(), time.Millisecond, out.send, r.log)
	frontier := []protocol.InstanceID{{Replica: 1, Num: 7}}
	r.snap = snapshot{frontier: frontier, data: make([]byte, 10*config.MinMaxFrame)}
	m := protocol.Message{Type: protocol.MsgSnapshot, From: 1, To: 2, Deps: frontier}
	if !r.fillSnapshot(&m) || len(m.Data) != len(r.snap.data) {
		t.Fatalf("a %d-byte snapshot was not filled in", len(r.snap.data))
	}
	r.sendSnapshot(&m)
	sent := out.take()
	if len(sent) != chunkWindow {
		t.Fatalf("sent %d messages, want a window of %d chunks", len(sent), chunkWindow)
	}
	for _, c := range sent {
		if c.Type != protocol.MsgSnapshotChunk || !slices.Equal(c.Deps, frontier) {
			t.Fatalf("sent %v, want a chunk of the snapshot", c)
		}
		if n := len(wire.AppendMessageFrame(nil, &c)); n > config.MinMaxFrame {
			t.Fatalf("chunk frame of %d bytes over max_frame %d", n, config.MinMaxFrame)
		}
	}
	if strings.Contains(logs.String(), "raise max_frame") {
		t.Fatalf("still asks to raise max_frame:\n%s", logs.String())
	}
	r.snap = snapshot{frontier: []protocol.InstanceID{{Replica: 1, Num: 9}}, data: make([]byte, 1000)}
	m = protocol.Message{Type: protocol.MsgSnapshot, From: 1, To: 2, Deps: r.snap.frontier}
	if !r.fillSnapshot(&m) {
		t.Fatal("a snapshot that fits was not filled in")
	}
	r.sendSnapshot(&m)
	if sent := out.take(); len(sent) != 1 || sent[0].Type != protocol.MsgSnapshot || len(sent[0].Data) != 1000 {
		t.Fatalf("a snapshot that fits went as %v", sent)
	}
	if r.chunkOut.out[2] != nil {
		t.Fatal("the transfer in chunks of the older snapshot goes on")
	}
}

// sendOnly is a transport that only sends (to a function).
type sendOnly func(protocol.Message)

func (f sendOnly) Send(m protocol.Message)         { f(m) }
func (f sendOnly) Recv() <-chan []protocol.Message { return nil }
func (f sendOnly) Close() error                    { return nil }
