package replica

import (
	"bytes"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/parliament-lab/parliament/config"
	"github.com/parliament-lab/parliament/epaxos"
	"github.com/parliament-lab/parliament/internal/testnet"
	"github.com/parliament-lab/parliament/multipaxos"
	"github.com/parliament-lab/parliament/protocol"
)

// tinyRetention builds the cluster's engine with retention 1: peers forget executed
// instances at once, so a replica that lost them can only catch up by a snapshot.
func tinyRetention(cl *config.Cluster, pc protocol.Config) (protocol.Engine, error) {
	if cl.Protocol == config.MultiPaxos {
		mc := multipaxos.DefaultConfig()
		mc.Config = pc
		mc.RetainCmds = 1
		return multipaxos.New(mc)
	}
	ec := epaxos.DefaultConfig()
	ec.Config = pc
	ec.RetainInstances = 1
	ec.LatencyRank = LatencyRank(cl, pc.ID)
	return epaxos.New(ec)
}

// TestChunkedSnapshotCatchUp: three replicas on loopback TCP with the smallest max_frame
// (64 KiB). One is stopped and its data directory wiped while about 1 MiB of values is
// written; the other two restart from their disks (snapshot files and truncated logs),
// and the wiped one, started empty, can only catch up by a snapshot 16 times larger than
// a frame, which travels in chunks and is installed, after which the replica holds
// exactly what the others hold.
func TestChunkedSnapshotCatchUp(t *testing.T) {
	for _, proto := range []string{config.MultiPaxos, config.EPaxos} {
		t.Run(proto, func(t *testing.T) {
			if _, ok := engines[proto]; !ok {
				t.Skip("engine not built in")
			}
			cl := testCluster(t, proto, 3)
			cl.MaxFrame = config.MinMaxFrame
			if err := cl.Validate(); err != nil {
				t.Fatal(err)
			}
			freePorts(t, cl)
			logs := &testnet.Buffer{}
			logger := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
			base := t.TempDir()
			dir := func(id protocol.ReplicaID) string { return filepath.Join(base, fmt.Sprint(id)) }
			rs := map[protocol.ReplicaID]*Replica{}
			start := func(id protocol.ReplicaID) *Replica {
				t.Helper()
				r, err := Start(Options{Cluster: cl, ID: id, DataDir: dir(id), NoSync: true, SnapshotEvery: 20,
					TruncateBytes: 1, Logger: logger,
					NewEngine: func(pc protocol.Config) (protocol.Engine, error) { return tinyRetention(cl, pc) }})
				if err != nil {
					t.Fatalf("start replica %d: %v", id, err)
				}
				rs[id] = r
				return r
			}
			stop := func(id protocol.ReplicaID) {
				if r := rs[id]; r != nil {
					r.Stop()
					delete(rs, id)
				}
			}
			t.Cleanup(func() {
				for id := range rs {
					stop(id)
				}
				if t.Failed() {
					t.Logf("replica logs:\n%s", logs.String())
				}
			})
			for _, id := range cl.IDs() {
				start(id)
			}
			acked := map[string]string{}
			writeBig := func(r *Replica, client uint64, prefix string, n int) {
				t.Helper()
				for i := range n {
					k := fmt.Sprintf("%s-%d", prefix, i)
					v := fmt.Sprintf("%s=%d:", k, i) + strings.Repeat(string(rune('a'+i%26)), 4096)
					if rep := do(t, r, put(client, uint64(i+1), k, v)); rep.Result != protocol.ResultOK {
						t.Fatalf("put %s: %v", k, rep.Result)
					}
					acked[k] = v
				}
			}
			writeBig(rs[1], 1, "a", 32)
			stop(3)
			if err := os.RemoveAll(dir(3)); err != nil {
				t.Fatal(err)
			}
			writeBig(rs[1], 2, "b", 224) // ~1 MiB of values in all
			// Restart the others from their disks: what their transports queued for
			// replica 3 while it was down goes with them, so replica 3 has to ask.
			for _, id := range []protocol.ReplicaID{1, 2} {
				stop(id)
				start(id)
			}
			r3 := start(3)
			// Writes through replica 3 make it ask for what it misses.
			for k, v := range writeKeys(t, r3, 3, "c", 5) {
				acked[k] = v
			}
			readKeys(t, r3, 4, acked)
			st := r3.Stats()
			if st.Installed == 0 || st.ChunksRecv == 0 {
				t.Fatalf("replica 3 caught up without installing a snapshot in chunks (stats %+v)", st)
			}
			if st.SnapshotBytes < 8*config.MinMaxFrame {
				t.Fatalf("installed snapshot of %d bytes: want several times max_frame %d", st.SnapshotBytes, config.MinMaxFrame)
			}
			var sent uint64
			for _, id := range []protocol.ReplicaID{1, 2} {
				sent += rs[id].Stats().ChunksSent
			}
			if sent < st.SnapshotBytes/config.MinMaxFrame {
				t.Fatalf("peers sent %d chunks for a %d-byte snapshot", sent, st.SnapshotBytes)
			}
			if strings.Contains(logs.String(), "larger than max_frame") {
				t.Fatalf("a snapshot was refused for its size")
			}
			t.Logf("replica 3 installed %d snapshot(s), %d bytes, from %d chunks received (%d sent)",
				st.Installed, st.SnapshotBytes, st.ChunksRecv, sent)
			// Same contents: stop everything (a store is read after Stop) and compare.
			r1 := rs[1]
			for _, id := range cl.IDs() {
				stop(id)
			}
			s1, s3 := r1.Store(), r3.Store()
			if s1.Len() != s3.Len() || s3.Len() != len(acked) {
				t.Fatalf("replica 3 holds %d keys, replica 1 %d, acknowledged %d", s3.Len(), s1.Len(), len(acked))
			}
			for k, v := range acked {
				got, ok := s3.Get([]byte(k))
				if !ok || string(got) != v {
					t.Fatalf("replica 3: %s = %.20q (%v), want %.20q", k, got, ok, v)
				}
				if got1, _ := s1.Get([]byte(k)); !bytes.Equal(got1, got) {
					t.Fatalf("replicas 1 and 3 differ at %s", k)
				}
			}
		})
	}
}
