// Package config reads, validates and generates the cluster file that every Parliament
// process (replica, client, benchmark) starts from: one YAML document listing the replicas
// (ID, address, site), the protocol and its knobs, durability and the shared secret.
//
// Decoding refuses unknown fields, so a typo ("heartbeat_tick") is an error instead of a
// silently ignored setting, and Validate names the bad field, the value and the fix.
package config

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/parliament-lab/parliament/protocol"
)

// Protocol names accepted in the protocol field.
const (
	EPaxos     = "epaxos"
	MultiPaxos = "multipaxos"
)

// Defaults applied by Parse (and Generate) to fields left out of the file.
const (
	DefaultTick    = 10 * time.Millisecond
	DefaultDataDir = "parliament-data"
)

// DefaultSites are the sites of the built-in 5-site WAN matrix
// (workloads/matrices/aws-5site.csv), in the order Generate assigns them.
var DefaultSites = []string{"CA", "VA", "OR", "IE", "JP"}

// ErrInvalid is wrapped by every validation error, so callers can tell a bad file from an
// unreadable one with errors.Is.
var ErrInvalid = errors.New("invalid cluster config")

// Cluster is the whole cluster file.
type Cluster struct {
	// ClusterID is checked in every handshake: replicas and clients of different clusters
	// refuse each other. Any nonzero 64-bit number.
	ClusterID uint64 `yaml:"cluster_id"`
	// Protocol is "epaxos" or "multipaxos".
	Protocol string `yaml:"protocol"`
	// Replicas lists every replica, IDs 1..N.
	Replicas []Replica `yaml:"replicas"`

	// Tick is the engines' logical clock period; every timeout counts ticks. Default 10ms.
	Tick Duration `yaml:"tick,omitempty"`
	// Batch caps the client commands in one instance (EPaxos) or slot (Multi-Paxos);
	// 0 = the engine default. Batching never waits: a batch is whatever is queued.
	Batch int `yaml:"batch,omitempty"`
	// Window is the number of Multi-Paxos slots in flight; 0 = the engine default.
	Window int `yaml:"window,omitempty"`
	// ElectionTicks and HeartbeatTicks are the Multi-Paxos leader timeouts;
	// 0 = the engine defaults. HeartbeatTicks must be below ElectionTicks.
	ElectionTicks  int `yaml:"election_ticks,omitempty"`
	HeartbeatTicks int `yaml:"heartbeat_ticks,omitempty"`
	// RecoveryTicks is how long an EPaxos replica waits on a stalled instance before
	// running recovery (explicit prepare); 0 = the engine default.
	RecoveryTicks int `yaml:"recovery_ticks,omitempty"`
	// Thrifty sends EPaxos PreAccept and Accept to the needed quorum only.
	Thrifty bool `yaml:"thrifty,omitempty"`
	// ReplyOnCommit answers blind writes (PUT) when they commit instead of after execution
	// (the EPaxos paper's "commit latency"). Reads and CAS always wait for execution.
	ReplyOnCommit bool `yaml:"reply_on_commit,omitempty"`
	// Durable makes replicas fsync their log before answering; default true.
	Durable *bool `yaml:"durable,omitempty"`
	// SnapshotEvery is the number of executed commands between state-machine snapshots
	// (each compacts the engine and may truncate the log); 0 = the runtime default
	// (100000); negative = never (memory then grows with the run).
	SnapshotEvery int `yaml:"snapshot_every,omitempty"`
	// TruncateBytes is how much the write-ahead log may grow before a snapshot also
	// truncates it and is written to a snapshot file; 0 = the runtime default (64 MiB).
	TruncateBytes int64 `yaml:"truncate_bytes,omitempty"`
	// MaxFrame is the largest message, in bytes, a replica sends to or accepts from a peer
	// or client; 0 = 16 MiB. It does not limit the state machine: a snapshot sent to a
	// lagging replica that does not fit one frame travels in chunks (docs/durability.md).
	MaxFrame int64 `yaml:"max_frame,omitempty"`
	// Compress asks for s2 compression on peer connections.
	Compress bool `yaml:"compress,omitempty"`
	// Secret, when set, is proved (HMAC) in every handshake.
	Secret string `yaml:"secret,omitempty"`
	// DataDir is the base data directory: replica N keeps its log in DataDir/N unless its
	// own data_dir says otherwise. Default "parliament-data".
	DataDir string `yaml:"data_dir,omitempty"`
}

// Replica is one entry of the replicas list.
type Replica struct {
	ID      protocol.ReplicaID `yaml:"id"`
	Address string             `yaml:"address"`
	// Site names where the replica runs: a site of the built-in WAN matrix (CA, VA, OR, IE,
	// JP) or any other name (then the WAN emulator needs a matrix that knows it).
	Site string `yaml:"site"`
	// DataDir overrides the cluster's DataDir/ID for this replica.
	DataDir string `yaml:"data_dir,omitempty"`
	// Metrics is an optional host:port where the replica serves /metrics.
	Metrics string `yaml:"metrics,omitempty"`
}

// Duration is a time.Duration written as a Go duration string ("10ms", "1s") in YAML.
type Duration time.Duration

// D returns d as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

func (d Duration) String() string { return time.Duration(d).String() }

// MarshalYAML writes the duration string.
func (d Duration) MarshalYAML() (any, error) { return time.Duration(d).String(), nil }

// UnmarshalYAML reads a duration string; a bare integer is refused because its unit would
// be a guess.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("line %d: want a duration like 10ms", n.Line)
	}
	v, err := time.ParseDuration(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: %q is not a duration; write it with a unit, like 10ms or 1s", n.Line, n.Value)
	}
	*d = Duration(v)
	return nil
}

// Load reads and validates the cluster file at path.
func Load(path string) (*Cluster, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	c, err := Parse(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

// Parse decodes a cluster file (unknown fields are errors), applies defaults and
// validates it.
func Parse(b []byte) (*Cluster, error) {
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	var root yaml.Node
	if err := dec.Decode(&root); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("%w: the file is empty; generate one with 'parliament config'", ErrInvalid)
		}
		return nil, fmt.Errorf("%w: %v", ErrInvalid, cleanYAMLError(err))
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err == nil {
		return nil, fmt.Errorf("%w: more than one YAML document; keep one cluster per file", ErrInvalid)
	}
	// Decode again from the text (not the node) so that KnownFields applies.
	var c Cluster
	strict := yaml.NewDecoder(bytes.NewReader(b))
	strict.KnownFields(true)
	if err := strict.Decode(&c); err != nil {
		msg := cleanYAMLError(err)
		if key := keyAtLine(&root, lineOf(msg)); key != "" {
			msg = "field " + key + ": " + msg
		}
		return nil, fmt.Errorf("%w: %s", ErrInvalid, msg)
	}
	c.SetDefaults()
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return &c, nil
}

// cleanYAMLError keeps yaml's message (which names the line and the unknown field) but
// drops its "yaml: unmarshal errors:\n  " prefix so the error stays on one line.
func cleanYAMLError(err error) string {
	var te *yaml.TypeError
	if errors.As(err, &te) && len(te.Errors) > 0 {
		s := te.Errors[0]
		if len(te.Errors) > 1 {
			s += fmt.Sprintf(" (and %d more)", len(te.Errors)-1)
		}
		return s
	}
	return err.Error()
}

var lineRE = regexp.MustCompile(`line (\d+)`)

// lineOf returns the first line number a yaml error message mentions, or 0.
func lineOf(msg string) int {
	m := lineRE.FindStringSubmatch(msg)
	if m == nil {
		return 0
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

// keyAtLine returns the mapping key whose value sits on line (yaml type errors name the
// line but not the field), or "" when none or several do (flow style on one line).
func keyAtLine(root *yaml.Node, line int) string {
	var keys []string
	var walk func(n *yaml.Node)
	walk = func(n *yaml.Node) {
		if n.Kind == yaml.MappingNode {
			for i := 0; i+1 < len(n.Content); i += 2 {
				if v := n.Content[i+1]; v.Line == line && v.Kind == yaml.ScalarNode {
					keys = append(keys, n.Content[i].Value)
				}
			}
		}
		for _, c := range n.Content {
			walk(c)
		}
	}
	if line > 0 {
		walk(root)
	}
	if len(keys) != 1 {
		return ""
	}
	return keys[0]
}

// SetDefaults fills fields left at their zero value with their defaults.
func (c *Cluster) SetDefaults() {
	if c.Tick == 0 {
		c.Tick = Duration(DefaultTick)
	}
	if c.Durable == nil {
		t := true
		c.Durable = &t
	}
	if c.DataDir == "" {
		c.DataDir = DefaultDataDir
	}
}

// IsDurable reports whether replicas fsync their log (default true).
func (c *Cluster) IsDurable() bool { return c.Durable == nil || *c.Durable }

// Lookup returns the replica with the given ID.
func (c *Cluster) Lookup(id protocol.ReplicaID) (Replica, bool) {
	for _, r := range c.Replicas {
		if r.ID == id {
			return r, true
		}
	}
	return Replica{}, false
}

// IDs returns every replica ID in ascending order (Validate guarantees 1..N).
func (c *Cluster) IDs() []protocol.ReplicaID {
	ids := make([]protocol.ReplicaID, len(c.Replicas))
	for i := range ids {
		ids[i] = protocol.ReplicaID(i + 1)
	}
	return ids
}

// Addresses maps every replica ID to its address.
func (c *Cluster) Addresses() map[protocol.ReplicaID]string {
	m := make(map[protocol.ReplicaID]string, len(c.Replicas))
	for _, r := range c.Replicas {
		m[r.ID] = r.Address
	}
	return m
}

// Sites maps every replica ID to its site.
func (c *Cluster) Sites() map[protocol.ReplicaID]string {
	m := make(map[protocol.ReplicaID]string, len(c.Replicas))
	for _, r := range c.Replicas {
		m[r.ID] = r.Site
	}
	return m
}

// DataDirFor returns the directory replica id keeps its data in.
func (c *Cluster) DataDirFor(id protocol.ReplicaID) string {
	if r, ok := c.Lookup(id); ok && r.DataDir != "" {
		return r.DataDir
	}
	base := c.DataDir
	if base == "" {
		base = DefaultDataDir
	}
	return filepath.Join(base, strconv.FormatUint(uint64(id), 10))
}

// Marshal writes c as YAML (the format Parse reads).
func (c *Cluster) Marshal() ([]byte, error) {
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(c); err != nil {
		return nil, err
	}
	if err := enc.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// Generate returns a loopback cluster of n replicas listening on 127.0.0.1:port+i-1,
// sites taken in order from the built-in 5-site matrix (cycling when n > 5), data in
// dataDir/N (dataDir "" = DefaultDataDir) and a random cluster ID. The caller validates
// (Validate explains a bad protocol, n or port).
func Generate(proto string, n int, port int, dataDir string) *Cluster {
	if dataDir == "" {
		dataDir = DefaultDataDir
	}
	c := &Cluster{ClusterID: RandomClusterID(), Protocol: proto, DataDir: dataDir}
	for i := 0; i < n; i++ {
		c.Replicas = append(c.Replicas, Replica{
			ID:      protocol.ReplicaID(i + 1),
			Address: "127.0.0.1:" + strconv.Itoa(port+i),
			Site:    DefaultSites[i%len(DefaultSites)],
		})
	}
	c.SetDefaults()
	return c
}

// RandomClusterID returns a nonzero random 64-bit cluster ID.
func RandomClusterID() uint64 {
	var b [8]byte
	for {
		if _, err := rand.Read(b[:]); err != nil {
			panic("config: crypto/rand failed: " + err.Error())
		}
		if id := binary.LittleEndian.Uint64(b[:]); id != 0 {
			return id
		}
	}
}
