// Package workloads describes what a benchmark asks of a cluster: which WAN the replicas
// sit in (a round-trip-time matrix between sites), where the clients are, which keys their
// commands touch (the EPaxos paper's conflict rate, or uniform / zipf key choice), how many
// of them read, how large the values are, and when commands are sent (closed loop with N
// outstanding per client, or open loop with Poisson arrivals). It also computes the
// theoretical optimum commit latency of each protocol at each site from a matrix.
//
// Everything here is deterministic given a seed and free of goroutines, so the bench
// harness, the simulator and the tests share one definition of a workload.
package workloads

import (
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/parliament-lab/parliament/transport"
)

// Names of the built-in WAN matrices accepted by ResolveWAN.
const (
	WANAWS5  = "aws-5site" // five AWS regions: CA, VA, OR, IE, JP (EPaxos paper, Figure 4)
	WANAWS3  = "aws-3site" // CA, VA, IE: the paper's N=3 deployment
	WANNone  = "none"      // no added delay (every RTT 0)
	siteNone = "local"
)

// Matrix holds symmetric round-trip times in milliseconds between named sites. Its fields
// match transport.Matrix one for one, so a *Matrix converts to a *transport.Matrix with a
// plain type conversion.
type Matrix struct {
	Sites     []string
	RTTMillis [][]float64 // RTTMillis[i][j]: round trip between Sites[i] and Sites[j]; the diagonal is the site-local RTT
}

// ErrBadMatrix is returned (wrapped) for a malformed matrix.
var ErrBadMatrix = errors.New("workloads: bad latency matrix")

// AWS5 returns the built-in 5-site AWS matrix (matrices/aws-5site.csv, embedded by the
// transport as its default matrix).
func AWS5() *Matrix { return (*Matrix)(transport.DefaultMatrix()) }

// ResolveWAN turns a --wan value into a matrix: "aws-5site", "aws-3site" (CA, VA, IE),
// "none" (nil matrix: no delay), or the path of a CSV file in the format of
// matrices/aws-5site.csv.
func ResolveWAN(spec string) (*Matrix, error) {
	switch spec {
	case WANAWS5, "":
		return AWS5(), nil
	case WANAWS3:
		return AWS5().Subset("CA", "VA", "IE")
	case WANNone:
		return nil, nil
	}
	return LoadMatrix(spec)
}

// LoadMatrix reads a CSV matrix file.
func LoadMatrix(path string) (*Matrix, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("workloads: wan %q is not aws-5site, aws-3site, none or a readable CSV file: %w", path, err)
	}
	defer f.Close()
	m, err := ParseMatrix(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return m, nil
}

// ParseMatrix reads the CSV format of matrices/aws-5site.csv ('#' comment lines, a header
// "site,A,B,...", one row per site with its RTTs in milliseconds). Parsing and validation
// (square, symmetric, non-negative, finite, known sites) are transport.ParseMatrix's: the
// WAN emulator and the workloads must read a file the same way.
func ParseMatrix(r io.Reader) (*Matrix, error) {
	tm, err := transport.ParseMatrix(r)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadMatrix, err)
	}
	return (*Matrix)(tm), nil
}

// Index returns the position of site in m.Sites, or -1.
func (m *Matrix) Index(site string) int {
	for i, s := range m.Sites {
		if s == site {
			return i
		}
	}
	return -1
}

// RTT returns the round trip between two sites in milliseconds.
func (m *Matrix) RTT(a, b string) (float64, error) {
	i, j := m.Index(a), m.Index(b)
	if i < 0 || j < 0 {
		return 0, fmt.Errorf("workloads: unknown site %q or %q (sites %v)", a, b, m.Sites)
	}
	return m.RTTMillis[i][j], nil
}

// OneWay returns half the round trip between two sites.
func (m *Matrix) OneWay(a, b string) (time.Duration, error) {
	rtt, err := m.RTT(a, b)
	if err != nil {
		return 0, err
	}
	return time.Duration(rtt / 2 * float64(time.Millisecond)), nil
}

// Subset returns the matrix restricted to sites, in the order given.
func (m *Matrix) Subset(sites ...string) (*Matrix, error) {
	out := &Matrix{Sites: append([]string(nil), sites...), RTTMillis: make([][]float64, len(sites))}
	for i, a := range sites {
		out.RTTMillis[i] = make([]float64, len(sites))
		for j, b := range sites {
			rtt, err := m.RTT(a, b)
			if err != nil {
				return nil, err
			}
			out.RTTMillis[i][j] = rtt
		}
	}
	return out, nil
}

// PlaceReplicas assigns n replicas to sites: replica i (1-based) goes to the i-th site of
// the matrix, wrapping around when n exceeds the number of sites. With a nil matrix (no
// WAN) every replica is at one site named "local".
func PlaceReplicas(m *Matrix, n int) []string {
	out := make([]string, n)
	for i := range out {
		if m == nil || len(m.Sites) == 0 {
			out[i] = siteNone
		} else {
			out[i] = m.Sites[i%len(m.Sites)]
		}
	}
	return out
}

// ForReplicas returns the matrix a cluster of n replicas should use: the matrix itself
// when it has n sites; for aws-5site and n = 3 the paper's N=3 subset (CA, VA, IE); for any
// other size the first n sites (or, when n exceeds the sites, the sites in PlaceReplicas
// order with repeats, each repeated site an independent copy with the local RTT between
// copies). A nil matrix stays nil.
func (m *Matrix) ForReplicas(n int) (*Matrix, error) {
	if m == nil {
		return nil, nil
	}
	if n == len(m.Sites) {
		return m, nil
	}
	if n == 3 && m.Index("CA") >= 0 && m.Index("VA") >= 0 && m.Index("IE") >= 0 {
		return m.Subset("CA", "VA", "IE")
	}
	if n < len(m.Sites) {
		return m.Subset(m.Sites[:n]...)
	}
	// More replicas than sites: name the copies SITE2, SITE3... (skipping names already
	// taken: a matrix may have sites A and A2 of its own).
	out := &Matrix{Sites: make([]string, n), RTTMillis: make([][]float64, n)}
	base := make([]int, n)
	taken := make(map[string]bool, n)
	for _, s := range m.Sites {
		taken[s] = true
	}
	for i := range n {
		base[i] = i % len(m.Sites)
		name := m.Sites[base[i]]
		if k := i / len(m.Sites); k > 0 {
			for k++; ; k++ {
				if name = fmt.Sprintf("%s%d", m.Sites[base[i]], k); !taken[name] {
					break
				}
			}
			taken[name] = true
		}
		out.Sites[i] = name
	}
	for i := range n {
		out.RTTMillis[i] = make([]float64, n)
		for j := range n {
			out.RTTMillis[i][j] = m.RTTMillis[base[i]][base[j]]
		}
	}
	return out, nil
}

// String formats the matrix as the CSV that ParseMatrix reads (transport.Matrix.String).
func (m *Matrix) String() string { return (*transport.Matrix)(m).String() }
