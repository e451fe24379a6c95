package transport

import (
	"bufio"
	_ "embed"
	"fmt"
	"io"
	"math"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Matrix is a symmetric matrix of round-trip times between sites, in milliseconds.
// RTTMillis[i][j] is the RTT between Sites[i] and Sites[j]; the diagonal is the RTT inside
// one site.
type Matrix struct {
	Sites     []string
	RTTMillis [][]float64
}

// The built-in 5-site AWS matrix. go:embed cannot reach ../workloads, so this is an
// identical copy of workloads/matrices/aws-5site.csv (a test keeps them equal).
//
//go:embed aws-5site.csv
var aws5SiteCSV string

var defaultMatrix = sync.OnceValue(func() *Matrix {
	m, err := ParseMatrix(strings.NewReader(aws5SiteCSV))
	if err != nil {
		panic("transport: embedded aws-5site.csv: " + err.Error())
	}
	return m
})

// DefaultMatrix returns (a copy of) the built-in 5-site AWS matrix: CA, VA, OR, IE, JP,
// the sites of the EPaxos paper, measured by the fantoch project.
func DefaultMatrix() *Matrix { return defaultMatrix().clone() }

// ThreeSiteMatrix returns the CA, VA, IE subset of DefaultMatrix (a 3-replica WAN).
func ThreeSiteMatrix() *Matrix {
	m, err := DefaultMatrix().Subset("CA", "VA", "IE")
	if err != nil {
		panic("transport: 3-site subset: " + err.Error())
	}
	return m
}

// LoadMatrix reads a matrix CSV file (see ParseMatrix).
func LoadMatrix(path string) (*Matrix, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("transport: matrix: %w", err)
	}
	defer f.Close()
	m, err := ParseMatrix(f)
	if err != nil {
		return nil, fmt.Errorf("%w (file %s)", err, path)
	}
	return m, nil
}

// ParseMatrix reads a latency matrix in CSV:
//
//	# comment lines start with '#'; blank lines are ignored
//	site,CA,VA
//	CA,0.1,59.9
//	VA,59.9,0.3
//
// The header names the sites; then one row per site (any order) with its RTT in
// milliseconds to every site of the header. Unknown or duplicate sites, missing rows,
// wrong column counts, non-numeric, negative, non-finite or too large values (see rttOK)
// and asymmetric entries are refused with an error naming the line, row and column.
func ParseMatrix(r io.Reader) (*Matrix, error) {
	sc := bufio.NewScanner(r)
	var (
		m      *Matrix
		index  map[string]int
		seen   []int // line number of each site's row, 0 = missing
		lineNo int
	)
	for sc.Scan() {
		lineNo++
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		cells := strings.Split(line, ",")
		for i := range cells {
			cells[i] = strings.TrimSpace(cells[i])
		}
		if m == nil {
			if !strings.EqualFold(cells[0], "site") {
				return nil, fmt.Errorf("transport: matrix line %d: header must start with \"site\", got %q", lineNo, cells[0])
			}
			if len(cells) < 2 {
				return nil, fmt.Errorf("transport: matrix line %d: header names no site", lineNo)
			}
			m = &Matrix{Sites: cells[1:]}
			index = make(map[string]int, len(m.Sites))
			for i, s := range m.Sites {
				if s == "" {
					return nil, fmt.Errorf("transport: matrix line %d: header column %d is empty", lineNo, i+2)
				}
				if _, dup := index[s]; dup {
					return nil, fmt.Errorf("transport: matrix line %d: site %q appears twice in the header", lineNo, s)
				}
				index[s] = i
			}
			m.RTTMillis = make([][]float64, len(m.Sites))
			seen = make([]int, len(m.Sites))
			continue
		}
		row, ok := index[cells[0]]
		if !ok {
			return nil, fmt.Errorf("transport: matrix line %d: unknown site %q (header has %s)", lineNo, cells[0], strings.Join(m.Sites, ","))
		}
		if seen[row] != 0 {
			return nil, fmt.Errorf("transport: matrix line %d: row %q already given on line %d", lineNo, cells[0], seen[row])
		}
		if len(cells) != len(m.Sites)+1 {
			return nil, fmt.Errorf("transport: matrix line %d: row %q has %d values, want %d", lineNo, cells[0], len(cells)-1, len(m.Sites))
		}
		seen[row] = lineNo
		vals := make([]float64, len(m.Sites))
		for j, c := range cells[1:] {
			v, err := strconv.ParseFloat(c, 64)
			if err != nil {
				return nil, fmt.Errorf("transport: matrix line %d: row %q column %q: %q is not a number", lineNo, cells[0], m.Sites[j], c)
			}
			if !rttOK(v) {
				return nil, fmt.Errorf("transport: matrix line %d: row %q column %q: RTT %v must be a non-negative finite number of milliseconds below %d", lineNo, cells[0], m.Sites[j], c, maxRTTMillis)
			}
			vals[j] = v
		}
		m.RTTMillis[row] = vals
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("transport: matrix: %w", err)
	}
	if m == nil {
		return nil, fmt.Errorf("transport: matrix: no header line (\"site,A,B,...\")")
	}
	for i, s := range m.Sites {
		if seen[i] == 0 {
			return nil, fmt.Errorf("transport: matrix: missing row for site %q", s)
		}
	}
	if err := m.Validate(); err != nil {
		return nil, err
	}
	return m, nil
}

// String formats the matrix as the CSV that ParseMatrix reads: a header of the sites, then
// one row per site; every RTT in the shortest form that reads back exactly.
func (m *Matrix) String() string {
	var b strings.Builder
	b.WriteString("site," + strings.Join(m.Sites, ",") + "\n")
	for i, s := range m.Sites {
		b.WriteString(s)
		for _, v := range m.RTTMillis[i] {
			b.WriteString("," + strconv.FormatFloat(v, 'f', -1, 64))
		}
		b.WriteString("\n")
	}
	return b.String()
}

// maxRTTMillis is the whole milliseconds in the longest time.Duration (about 292 years).
const maxRTTMillis = math.MaxInt64 / int64(time.Millisecond)

// rttOK reports whether v milliseconds is a usable RTT: non-negative, finite, and within a
// time.Duration (a larger value would convert to a negative duration).
func rttOK(v float64) bool { return v >= 0 && v*float64(time.Millisecond) < math.MaxInt64 }

// Validate checks that m is square, non-negative, finite and symmetric, with unique sites
// and every RTT within a time.Duration.
func (m *Matrix) Validate() error {
	n := len(m.Sites)
	if n == 0 {
		return fmt.Errorf("transport: matrix: no sites")
	}
	if len(m.RTTMillis) != n {
		return fmt.Errorf("transport: matrix: %d rows for %d sites", len(m.RTTMillis), n)
	}
	seen := make(map[string]bool, n)
	for i, s := range m.Sites {
		if seen[s] {
			return fmt.Errorf("transport: matrix: site %q appears twice", s)
		}
		seen[s] = true
		if len(m.RTTMillis[i]) != n {
			return fmt.Errorf("transport: matrix: row %q has %d values, want %d", s, len(m.RTTMillis[i]), n)
		}
	}
	for i := range n {
		for j := range n {
			v := m.RTTMillis[i][j]
			if !rttOK(v) {
				return fmt.Errorf("transport: matrix: row %q column %q: RTT %v must be a non-negative finite number of milliseconds below %d", m.Sites[i], m.Sites[j], v, maxRTTMillis)
			}
			if j > i && v != m.RTTMillis[j][i] {
				return fmt.Errorf("transport: matrix: asymmetric: row %q column %q is %v but row %q column %q is %v",
					m.Sites[i], m.Sites[j], v, m.Sites[j], m.Sites[i], m.RTTMillis[j][i])
			}
		}
	}
	return nil
}

// Index returns the position of site in m.Sites.
func (m *Matrix) Index(site string) (int, bool) {
	for i, s := range m.Sites {
		if s == site {
			return i, true
		}
	}
	return 0, false
}

// RTT returns the round-trip time between sites a and b.
func (m *Matrix) RTT(a, b string) (time.Duration, error) {
	i, ok := m.Index(a)
	if !ok {
		return 0, fmt.Errorf("transport: matrix: unknown site %q (have %s)", a, strings.Join(m.Sites, ","))
	}
	j, ok := m.Index(b)
	if !ok {
		return 0, fmt.Errorf("transport: matrix: unknown site %q (have %s)", b, strings.Join(m.Sites, ","))
	}
	return millis(m.RTTMillis[i][j]), nil
}

// OneWay returns the one-way delay between sites a and b: half their RTT.
func (m *Matrix) OneWay(a, b string) (time.Duration, error) {
	rtt, err := m.RTT(a, b)
	return rtt / 2, err
}

// Subset returns the matrix restricted to sites, in the order given.
func (m *Matrix) Subset(sites ...string) (*Matrix, error) {
	if len(sites) == 0 {
		return nil, fmt.Errorf("transport: matrix subset: no sites")
	}
	idx := make([]int, len(sites))
	seen := make(map[string]bool, len(sites))
	for k, s := range sites {
		i, ok := m.Index(s)
		if !ok {
			return nil, fmt.Errorf("transport: matrix subset: unknown site %q (have %s)", s, strings.Join(m.Sites, ","))
		}
		if seen[s] {
			return nil, fmt.Errorf("transport: matrix subset: site %q given twice", s)
		}
		seen[s] = true
		idx[k] = i
	}
	out := &Matrix{Sites: append([]string(nil), sites...), RTTMillis: make([][]float64, len(sites))}
	for a, i := range idx {
		out.RTTMillis[a] = make([]float64, len(sites))
		for b, j := range idx {
			out.RTTMillis[a][b] = m.RTTMillis[i][j]
		}
	}
	return out, nil
}

func (m *Matrix) clone() *Matrix {
	c := &Matrix{Sites: append([]string(nil), m.Sites...), RTTMillis: make([][]float64, len(m.RTTMillis))}
	for i, row := range m.RTTMillis {
		c.RTTMillis[i] = append([]float64(nil), row...)
	}
	return c
}

func millis(ms float64) time.Duration {
	return time.Duration(math.Round(ms * float64(time.Millisecond)))
}
