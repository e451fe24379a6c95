// Package plot draws the benchmark charts from a results file alone (package bench/result),
// as PNG and SVG with gonum.org/v1/plot:
//
//	(a) latency-cN      per-site median and p99 commit latency, EPaxos vs Multi-Paxos, with
//	                    the theoretical optimum marked (EPaxos paper, Figure 4)
//	(b) throughput      throughput vs conflict rate
//	(c) latency-tput    median (and p99) commit latency vs throughput, open-loop sweep
//	(d) failure         throughput over time through a replica crash (Figure 10)
//	(e) cdf-cN          CDF of commit vs execution latency
//
// Every chart carries a caption with the run's stamp (machine, CPUs, commit, date, seed),
// so a chart found on its own still says where it came from.
package plot

import (
	"fmt"
	"image/color"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
	"gonum.org/v1/plot/vg/vgsvg"

	"github.com/parliament-lab/parliament/bench/result"
)

// Chart size and resolution.
const (
	width  = 8 * vg.Inch
	height = 4.8 * vg.Inch
	dpi    = 120
)

var (
	protoColor = map[string]color.Color{
		"epaxos":     color.RGBA{R: 0x1f, G: 0x77, B: 0xb4, A: 0xff}, // blue
		"multipaxos": color.RGBA{R: 0xff, G: 0x7f, B: 0x0e, A: 0xff}, // orange
	}
	protoDark = map[string]color.Color{
		"epaxos":     color.RGBA{R: 0x0b, G: 0x3c, B: 0x5d, A: 0xff},
		"multipaxos": color.RGBA{R: 0x9c, G: 0x4a, B: 0x00, A: 0xff},
	}
	protoLabel = map[string]string{"epaxos": "EPaxos", "multipaxos": "Multi-Paxos"}
	protoOrder = []string{"epaxos", "multipaxos"}
	grey       = color.Gray{Y: 0x60}
)

func label(protocol string) string {
	if l, ok := protoLabel[protocol]; ok {
		return l
	}
	return protocol
}

func colorOf(protocol string) color.Color {
	if c, ok := protoColor[protocol]; ok {
		return c
	}
	return color.Black
}

// Caption returns the stamp printed under every chart.
func Caption(m result.Meta) string {
	dur := "durable log"
	if !m.Durable {
		dur = "no fsync (--durable=false)"
	}
	return fmt.Sprintf("%s, %d CPUs, %s, commit %s, %s UTC, seed %d, %s, %s WAN emulation",
		m.Machine, m.CPUs, m.Go, m.Commit, m.Started.UTC().Format("2006-01-02 15:04"), m.Seed, dur, m.Emulation)
}

// Disturbed returns a second caption line when some of runs were disturbed
// (result.Run.Warnings: other processes' CPU, elections without a failure, resends, ...),
// so that a chart made from such runs says so; "" when none was.
func Disturbed(runs []result.Run) string {
	n := 0
	for _, r := range runs {
		if len(r.Warnings) > 0 {
			n++
		}
	}
	if n == 0 {
		return ""
	}
	return fmt.Sprintf("WARNING: %d of the %d runs drawn here were disturbed (a loaded machine, elections, resends...): see \"warnings\" in results.json", n, len(runs))
}

// Chart is one produced chart: its base name (files are Name.png and Name.svg) and title.
type Chart struct {
	Name  string
	Title string
}

// All draws every chart the results support into dir and returns what it drew. A chart
// whose experiment is absent from the file is skipped.
func All(f *result.File, dir string) ([]Chart, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	caption := Caption(f.Meta)
	var charts []Chart
	emit := func(name string, runs []result.Run, p *plot.Plot, err error) error {
		if err != nil {
			return fmt.Errorf("plot %s: %w", name, err)
		}
		if p == nil {
			return nil
		}
		c := caption
		if d := Disturbed(runs); d != "" {
			c += "\n" + d
		}
		if err := save(p, c, filepath.Join(dir, name)); err != nil {
			return fmt.Errorf("plot %s: %w", name, err)
		}
		charts = append(charts, Chart{Name: name, Title: p.Title.Text})
		return nil
	}
	latency := f.RunsOf("latency")
	for _, c := range conflicts(latency) {
		runs := withConflict(latency, c)
		p, err := LatencyPerSite(runs)
		if err := emit(fmt.Sprintf("latency-c%s", pct(c)), runs, p, err); err != nil {
			return charts, err
		}
	}
	runs := f.RunsOf("throughput")
	p, err := ThroughputVsConflict(runs)
	if err := emit("throughput", runs, p, err); err != nil {
		return charts, err
	}
	runs = f.RunsOf("sweep")
	p, err = LatencyVsThroughput(runs)
	if err := emit("latency-tput", runs, p, err); err != nil {
		return charts, err
	}
	runs = f.RunsOf("failure")
	p, err = FailureTimeline(runs)
	if err := emit("failure", runs, p, err); err != nil {
		return charts, err
	}
	for _, c := range conflicts(latency) {
		runs := withConflict(latency, c)
		p, err := CDF(runs)
		if err := emit(fmt.Sprintf("cdf-c%s", pct(c)), runs, p, err); err != nil {
			return charts, err
		}
	}
	return charts, nil
}

func pct(c float64) string {
	return strings.TrimSuffix(strings.TrimSuffix(fmt.Sprintf("%.2f", c), "0"), ".0")
}

func conflicts(runs []result.Run) []float64 {
	seen := map[float64]bool{}
	var out []float64
	for _, r := range runs {
		if !seen[r.Conflict] {
			seen[r.Conflict] = true
			out = append(out, r.Conflict)
		}
	}
	sort.Float64s(out)
	return out
}

func withConflict(runs []result.Run, c float64) []result.Run {
	var out []result.Run
	for _, r := range runs {
		if r.Conflict == c {
			out = append(out, r)
		}
	}
	return out
}

// byProtocol groups runs by protocol in the canonical order (EPaxos first), keeping only
// repetition 0 of each configuration.
func byProtocol(runs []result.Run) [][]result.Run {
	groups := map[string][]result.Run{}
	var names []string
	for _, r := range runs {
		if r.Repeat != 0 {
			continue
		}
		if _, ok := groups[r.Protocol]; !ok {
			names = append(names, r.Protocol)
		}
		groups[r.Protocol] = append(groups[r.Protocol], r)
	}
	sort.SliceStable(names, func(i, j int) bool { return rank(names[i]) < rank(names[j]) })
	out := make([][]result.Run, 0, len(names))
	for _, n := range names {
		out = append(out, groups[n])
	}
	return out
}

func rank(p string) int {
	for i, q := range protoOrder {
		if p == q {
			return i
		}
	}
	return len(protoOrder)
}

func newPlot(title, x, y string) *plot.Plot {
	p := plot.New()
	p.Title.Text = title
	p.Title.TextStyle.Font.Size = vg.Points(13)
	p.X.Label.Text = x
	p.Y.Label.Text = y
	p.Legend.Top = true
	p.Legend.Left = true
	p.Legend.TextStyle.Font.Size = vg.Points(10)
	p.Legend.XOffs = vg.Points(6)
	p.Legend.YOffs = -vg.Points(4)
	p.Y.Tick.Marker = niceTicks{}
	p.X.Tick.Marker = niceTicks{}
	p.Add(plotter.NewGrid())
	return p
}

// save writes p with the caption underneath as base.png and base.svg.
func save(p *plot.Plot, caption, base string) error {
	png := vgimg.NewWith(vgimg.UseWH(width, height), vgimg.UseDPI(dpi))
	drawWithCaption(p, caption, png)
	f, err := os.Create(base + ".png")
	if err != nil {
		return err
	}
	if _, err := (vgimg.PngCanvas{Canvas: png}).WriteTo(f); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	svg := vgsvg.New(width, height)
	drawWithCaption(p, caption, svg)
	g, err := os.Create(base + ".svg")
	if err != nil {
		return err
	}
	if _, err := svg.WriteTo(g); err != nil {
		g.Close()
		return err
	}
	return g.Close()
}

func drawWithCaption(p *plot.Plot, caption string, c vg.CanvasSizer) {
	dc := draw.New(c)
	sty := p.X.Label.TextStyle
	sty.Font.Size = vg.Points(8)
	sty.Color = grey
	sty.XAlign = draw.XCenter
	sty.YAlign = draw.YBottom
	pad := vg.Points(4)
	h := sty.Height(caption) + 2*pad
	// A white background under the caption too.
	dc.FillPolygon(color.White, []vg.Point{{X: dc.Min.X, Y: dc.Min.Y}, {X: dc.Max.X, Y: dc.Min.Y}, {X: dc.Max.X, Y: dc.Max.Y}, {X: dc.Min.X, Y: dc.Max.Y}})
	p.Draw(draw.Crop(dc, vg.Points(4), -vg.Points(14), h, -vg.Points(6)))
	dc.FillText(sty, vg.Point{X: (dc.Min.X + dc.Max.X) / 2, Y: dc.Min.Y + pad}, caption)
}

// niceTicks puts about six major ticks at 1, 2 or 5 times a power of ten, labelled
// without trailing zeros, and four minor ticks between.
type niceTicks struct{}

func (niceTicks) Ticks(min, max float64) []plot.Tick {
	if !(max > min) {
		return []plot.Tick{{Value: min, Label: strconv.FormatFloat(min, 'g', 4, 64)}}
	}
	raw := (max - min) / 6
	mag := math.Pow(10, math.Floor(math.Log10(raw)))
	step := mag
	for _, m := range []float64{1, 2, 5, 10} {
		if m*mag >= raw {
			step = m * mag
			break
		}
	}
	prec := int(math.Max(0, -math.Floor(math.Log10(step))))
	var ticks []plot.Tick
	minor := step / 5
	for v := math.Ceil(min/minor) * minor; v <= max+minor/1e6; v += minor {
		v := math.Round(v/minor) * minor
		if math.Abs(math.Remainder(v, step)) < minor/1e3 {
			ticks = append(ticks, plot.Tick{Value: v, Label: strconv.FormatFloat(v, 'f', prec, 64)})
		} else {
			ticks = append(ticks, plot.Tick{Value: v})
		}
	}
	return ticks
}

// logTicks labels 1, 2 and 5 times each power of ten, with minor ticks at the other
// integer multiples, so a log axis spanning less than a decade still has labels.
type logTicks struct{}

func (logTicks) Ticks(min, max float64) []plot.Tick {
	if min <= 0 || !(max > min) {
		return niceTicks{}.Ticks(min, max)
	}
	var ticks []plot.Tick
	for e := math.Floor(math.Log10(min)); e <= math.Ceil(math.Log10(max)); e++ {
		mag := math.Pow(10, e)
		for m := 1.0; m < 10; m++ {
			v := m * mag
			if v < min*0.999 || v > max*1.001 {
				continue
			}
			t := plot.Tick{Value: v}
			if m == 1 || m == 2 || m == 5 {
				t.Label = strconv.FormatFloat(v, 'f', int(math.Max(0, -e)), 64)
			}
			ticks = append(ticks, t)
		}
	}
	return ticks
}
