package workloads

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strconv"
)

// Key distributions accepted by Spec.Distribution.
const (
	DistConflict = "conflict" // EPaxos paper: c% of commands on one hot key, the rest on client-private keys
	DistUniform  = "uniform"  // every key of the key space equally likely
	DistZipf     = "zipf"     // zipf(θ) over the key space (YCSB's generator), key 0 hottest
)

// HotKey is the key shared by every client in the conflict distribution.
const HotKey = "hot"

// Spec describes the commands of one client.
type Spec struct {
	// Distribution is DistConflict (default), DistUniform or DistZipf.
	Distribution string
	// ConflictPct: with DistConflict, the percentage (0..100) of commands that target
	// HotKey; the others target keys private to their client, so they conflict with no other
	// client's commands (EPaxos paper §6.2: "c% of the commands target the same key").
	ConflictPct float64
	// PrivateKeys: with DistConflict, how many private keys each client cycles through
	// (default 1024). Cycling bounds the store's size while keeping a client's pipelined
	// commands apart from each other.
	PrivateKeys int
	// Keys is the key-space size for DistUniform and DistZipf (default 1<<20).
	Keys int
	// Theta is the zipf skew, θ > 0 and θ ≠ 1 (YCSB default 0.99).
	Theta float64
	// ReadPct is the percentage (0..100) of GETs; the rest are PUTs. Reads conflict with
	// writes on the same key, never with reads.
	ReadPct float64
	// ValueSize is the size of a PUT's value in bytes (default 16).
	ValueSize int
}

// Defaults fills zero fields with their documented defaults.
func (s Spec) Defaults() Spec {
	if s.Distribution == "" {
		s.Distribution = DistConflict
	}
	// Only zero fields: a negative one is an error that Validate reports, not a request
	// for the default.
	if s.PrivateKeys == 0 {
		s.PrivateKeys = 1024
	}
	if s.Keys == 0 {
		s.Keys = 1 << 20
	}
	if s.Theta == 0 {
		s.Theta = 0.99
	}
	if s.ValueSize == 0 {
		s.ValueSize = 16
	}
	return s
}

// Validate reports the first bad field.
func (s Spec) Validate() error {
	switch s.Distribution {
	case DistConflict, DistUniform, DistZipf:
	default:
		return fmt.Errorf("workloads: distribution %q: want conflict, uniform or zipf", s.Distribution)
	}
	if s.ConflictPct < 0 || s.ConflictPct > 100 {
		return fmt.Errorf("workloads: conflict %v%%: want 0..100", s.ConflictPct)
	}
	if s.ReadPct < 0 || s.ReadPct > 100 {
		return fmt.Errorf("workloads: read ratio %v%%: want 0..100", s.ReadPct)
	}
	if s.Distribution == DistZipf && (s.Theta <= 0 || s.Theta == 1) {
		return fmt.Errorf("workloads: zipf theta %v: want > 0 and != 1", s.Theta)
	}
	if s.ValueSize < 0 || s.ValueSize > 1<<20 {
		return fmt.Errorf("workloads: value size %d: want 1 byte to 1 MiB", s.ValueSize)
	}
	if s.Keys < 0 || s.PrivateKeys < 0 {
		return fmt.Errorf("workloads: key space %d (private keys %d): want >= 1", s.Keys, s.PrivateKeys)
	}
	return nil
}

// Op is what a generator asks a client to do next.
type Op struct {
	Read  bool
	Key   []byte
	Value []byte // nil for reads; shared between calls: copy before keeping
	Hot   bool   // DistConflict: the command targets HotKey
}

// Generator produces one client's commands. It is deterministic given its seed and not safe
// for concurrent use (one per client, like the HDR histograms).
type Generator struct {
	spec   Spec
	client uint64
	rng    *rand.Rand
	zipf   *Zipf
	next   int
	prefix []byte
	value  []byte
	key    []byte
}

// NewGenerator returns client's generator. Seeds of different clients should differ
// (derive them from the run's seed and the client ID).
func NewGenerator(spec Spec, client uint64, seed int64) (*Generator, error) {
	spec = spec.Defaults()
	if err := spec.Validate(); err != nil {
		return nil, err
	}
	g := &Generator{
		spec:   spec,
		client: client,
		rng:    rand.New(rand.NewPCG(uint64(seed), client)),
		prefix: []byte("c" + strconv.FormatUint(client, 10) + "/"),
		value:  make([]byte, spec.ValueSize),
	}
	for i := range g.value {
		g.value[i] = 'a' + byte(g.rng.IntN(26))
	}
	if spec.Distribution == DistZipf {
		g.zipf = NewZipf(uint64(spec.Keys), spec.Theta)
	}
	return g, nil
}

// Next returns the next operation. Key and Value are reused by the next call.
func (g *Generator) Next() Op {
	var op Op
	op.Read = g.spec.ReadPct > 0 && g.rng.Float64()*100 < g.spec.ReadPct
	switch g.spec.Distribution {
	case DistConflict:
		if g.spec.ConflictPct > 0 && g.rng.Float64()*100 < g.spec.ConflictPct {
			g.key = append(g.key[:0], HotKey...)
			op.Hot = true
		} else {
			g.key = append(append(g.key[:0], g.prefix...), 'k')
			g.key = strconv.AppendInt(g.key, int64(g.next), 10)
			g.next = (g.next + 1) % g.spec.PrivateKeys
		}
	case DistUniform:
		g.key = strconv.AppendUint(append(g.key[:0], 'k'), g.rng.Uint64N(uint64(g.spec.Keys)), 10)
	case DistZipf:
		g.key = strconv.AppendUint(append(g.key[:0], 'k'), g.zipf.Next(g.rng), 10)
	}
	op.Key = g.key
	if !op.Read {
		op.Value = g.value
	}
	return op
}

// Zipf draws integers in [0, n) with P(i) ∝ 1/(i+1)^θ, using the method of Gray et al.,
// "Quickly generating billion-record synthetic databases" (SIGMOD'94), as YCSB does; unlike
// math/rand's Zipf it accepts θ < 1 (YCSB's default is 0.99). Construction is O(n).
type Zipf struct {
	n                        uint64
	theta, alpha, zetan, eta float64
	halfPowTheta, zeta2theta float64
}

// NewZipf prepares a zipf(θ) generator over [0, n). θ must be positive and not 1.
func NewZipf(n uint64, theta float64) *Zipf {
	z := &Zipf{n: n, theta: theta}
	z.zeta2theta = zeta(2, theta)
	z.zetan = zeta(n, theta)
	z.alpha = 1 / (1 - theta)
	z.eta = (1 - math.Pow(2/float64(n), 1-theta)) / (1 - z.zeta2theta/z.zetan)
	z.halfPowTheta = 1 + math.Pow(0.5, theta)
	return z
}

func zeta(n uint64, theta float64) float64 {
	var s float64
	for i := uint64(1); i <= n; i++ {
		s += 1 / math.Pow(float64(i), theta)
	}
	return s
}

// Next draws one value.
func (z *Zipf) Next(rng *rand.Rand) uint64 {
	u := rng.Float64()
	uz := u * z.zetan
	if uz < 1 {
		return 0
	}
	if uz < z.halfPowTheta {
		return 1
	}
	v := uint64(float64(z.n) * math.Pow(z.eta*u-z.eta+1, z.alpha))
	if v >= z.n {
		v = z.n - 1
	}
	return v
}
