package plot

import (
	"fmt"
	"math"
	"sort"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"

	"github.com/parliament-lab/parliament/bench/result"
)

// LatencyPerSite is chart (a): for each site a bar per protocol at the median commit
// latency, a whisker up to the p99, and a black dash at that protocol's theoretical
// optimum (EPaxos paper, Figure 4). Returns nil when runs is empty.
func LatencyPerSite(runs []result.Run) (*plot.Plot, error) {
	groups := byProtocol(runs)
	if len(groups) == 0 {
		return nil, nil
	}
	first := groups[0][0]
	var sites []string
	for _, s := range first.Sites {
		sites = append(sites, s.Site)
	}
	title := fmt.Sprintf("Commit latency per site, %d replicas, %s, %s%% conflict", first.Replicas, wanText(first.WAN), pct(first.Conflict))
	if first.Leader != "" || hasProtocol(groups, "multipaxos") {
		if l := leaderOf(groups); l != "" {
			title += ", Multi-Paxos leader " + l
		}
	}
	p := newPlot(title, "Client site", "Commit latency (ms)")
	p.NominalX(sites...)
	barW := vg.Points(22)
	n := len(groups)
	optShown := false
	for gi, g := range groups {
		r := g[0]
		med := make(plotter.Values, len(sites))
		p99 := make(plotter.XYs, len(sites))
		opt := make(plotter.XYs, 0, len(sites))
		for i, name := range sites {
			s := siteOf(r, name)
			med[i] = s.Commit.P50
			p99[i] = plotter.XY{X: float64(i), Y: s.Commit.P99}
			if s.Optimum > 0 {
				opt = append(opt, plotter.XY{X: float64(i), Y: s.Optimum})
			}
		}
		bars, err := plotter.NewBarChart(med, barW)
		if err != nil {
			return nil, err
		}
		off := (vg.Length(gi) - vg.Length(n-1)/2) * (barW + vg.Points(2))
		bars.Offset = off
		bars.Color = colorOf(r.Protocol)
		bars.LineStyle.Width = 0
		w := &whiskers{base: med, tops: p99, off: off, style: draw.LineStyle{Color: protoDark[r.Protocol], Width: vg.Points(1.2)}, capW: barW / 3}
		p.Add(bars, w)
		p.Legend.Add(label(r.Protocol)+" median", bars)
		p.Legend.Add(label(r.Protocol)+" p99", w)
		if len(opt) > 0 {
			d := &dashes{xys: opt, off: off, width: barW + vg.Points(4), style: draw.LineStyle{Color: color0, Width: vg.Points(2.5)}}
			p.Add(d)
			if !optShown {
				p.Legend.Add("optimum (from RTT matrix)", d)
				optShown = true
			}
		}
	}
	p.Y.Min = 0
	// Head room above the tallest whisker for the legend, which sits top left.
	p.Y.Max = maxY(groups, sites) * 1.55
	p.X.Min, p.X.Max = -0.6, float64(len(sites))-0.4
	return p, nil
}

func maxY(groups [][]result.Run, sites []string) float64 {
	m := 1.0
	for _, g := range groups {
		for _, name := range sites {
			s := siteOf(g[0], name)
			m = math.Max(m, math.Max(s.Commit.P99, math.Max(s.Commit.P50, s.Optimum)))
		}
	}
	return m
}

// wanText names a WAN for a title.
func wanText(w string) string {
	switch w {
	case "", "none":
		return "no WAN delay"
	}
	return w + " WAN"
}

func hasProtocol(groups [][]result.Run, proto string) bool {
	for _, g := range groups {
		if g[0].Protocol == proto {
			return true
		}
	}
	return false
}

func leaderOf(groups [][]result.Run) string {
	for _, g := range groups {
		if g[0].Protocol == "multipaxos" {
			return g[0].Leader
		}
	}
	return ""
}

func siteOf(r result.Run, name string) result.Site {
	for _, s := range r.Sites {
		if s.Site == name {
			return s
		}
	}
	return result.Site{Site: name}
}

// ThroughputVsConflict is chart (b): throughput (kops/s) against the conflict rate, one
// line per protocol.
func ThroughputVsConflict(runs []result.Run) (*plot.Plot, error) {
	groups := byProtocol(runs)
	if len(groups) == 0 {
		return nil, nil
	}
	first := groups[0][0]
	p := newPlot(fmt.Sprintf("Throughput vs conflict rate, %d replicas, %s, %d clients x %d outstanding per site",
		first.Replicas, wanText(first.WAN), first.Clients, first.Outstanding), "Conflict rate (%)", "Throughput (kops/s)")
	for _, g := range groups {
		sort.Slice(g, func(i, j int) bool { return g[i].Conflict < g[j].Conflict })
		xys := make(plotter.XYs, len(g))
		for i, r := range g {
			xys[i] = plotter.XY{X: r.Conflict, Y: r.ThroughputOps / 1000}
		}
		if err := addLine(p, xys, g[0].Protocol, label(g[0].Protocol), false); err != nil {
			return nil, err
		}
	}
	p.Y.Min = 0
	p.X.Min = 0
	p.Legend.Top = false
	if _, _, _, ymax := plotDataMax(groups); ymax > 0 {
		p.Y.Max = ymax * 1.1
	}
	return p, nil
}

func plotDataMax(groups [][]result.Run) (xmin, xmax, ymin, ymax float64) {
	for _, g := range groups {
		for _, r := range g {
			ymax = math.Max(ymax, r.ThroughputOps/1000)
		}
	}
	return 0, 0, 0, ymax
}

// LatencyVsThroughput is chart (c): median and p99 commit latency against achieved
// throughput in an open-loop sweep of offered load, one pair of lines per protocol.
func LatencyVsThroughput(runs []result.Run) (*plot.Plot, error) {
	groups := byProtocol(runs)
	if len(groups) == 0 {
		return nil, nil
	}
	first := groups[0][0]
	p := newPlot(fmt.Sprintf("Latency vs throughput (open loop, Poisson arrivals), %d replicas, %s, %s%% conflict",
		first.Replicas, wanText(first.WAN), pct(first.Conflict)), "Throughput (kops/s)", "Commit latency (ms, log scale)")
	p.Y.Scale = plot.LogScale{}
	p.Y.Tick.Marker = logTicks{}
	top := 0.0
	for _, g := range groups {
		sort.Slice(g, func(i, j int) bool { return g[i].RateOps < g[j].RateOps })
		med := make(plotter.XYs, 0, len(g))
		tail := make(plotter.XYs, 0, len(g))
		for _, r := range g {
			if r.Commit.P50 <= 0 {
				continue
			}
			med = append(med, plotter.XY{X: r.ThroughputOps / 1000, Y: r.Commit.P50})
			tail = append(tail, plotter.XY{X: r.ThroughputOps / 1000, Y: math.Max(r.Commit.P99, r.Commit.P50)})
			top = math.Max(top, math.Max(r.Commit.P99, r.Commit.P50))
		}
		if len(med) == 0 {
			continue
		}
		if err := addLine(p, med, g[0].Protocol, label(g[0].Protocol)+" median", false); err != nil {
			return nil, err
		}
		if err := addLine(p, tail, g[0].Protocol, label(g[0].Protocol)+" p99", true); err != nil {
			return nil, err
		}
	}
	p.X.Min = 0
	if top > 0 {
		p.Y.Max = top * 3 // head room (log scale) for the legend
	}
	return p, nil
}

// FailureTimeline is chart (d): completed commands per second over time for each
// protocol, with the crash marked (EPaxos paper, Figure 10).
func FailureTimeline(runs []result.Run) (*plot.Plot, error) {
	groups := byProtocol(runs)
	if len(groups) == 0 {
		return nil, nil
	}
	first := groups[0][0]
	title := fmt.Sprintf("Throughput through a replica crash, %d replicas, %s", first.Replicas, wanText(first.WAN))
	if first.Fail != nil {
		title = fmt.Sprintf("Throughput through a crash of the %s replica at t=%.1fs, %d replicas, %s",
			first.Fail.Site, first.Fail.AtS, first.Replicas, wanText(first.WAN))
	}
	p := newPlot(title, "Time since load start (s)", "Throughput (kops/s)")
	var crashAt, peak float64
	for _, g := range groups {
		r := g[0]
		step := r.TimelineStepS
		if step <= 0 {
			step = 1
		}
		xys := make(plotter.XYs, len(r.Timeline))
		for i, pt := range r.Timeline {
			xys[i] = plotter.XY{X: pt.TS, Y: float64(pt.Ops) / step / 1000}
			peak = math.Max(peak, xys[i].Y)
		}
		name := label(r.Protocol)
		if r.Fail != nil {
			crashAt = r.Fail.AtS
			name += fmt.Sprintf(" (longest gap %.2fs)", r.Fail.GapS)
		}
		if len(xys) == 0 {
			continue
		}
		l, err := plotter.NewLine(xys)
		if err != nil {
			return nil, err
		}
		l.LineStyle = draw.LineStyle{Color: colorOf(r.Protocol), Width: vg.Points(1.5)}
		l.StepStyle = plotter.PostStep
		p.Add(l)
		p.Legend.Add(name, l)
	}
	if crashAt > 0 {
		v := &vline{x: crashAt, style: draw.LineStyle{Color: color0, Width: vg.Points(1), Dashes: []vg.Length{vg.Points(4), vg.Points(3)}}}
		p.Add(v)
		p.Legend.Add("replica crash", v)
	}
	p.Y.Min = 0
	p.Y.Max = math.Max(peak, 0.001) * 1.35 // head room for the legend, top right
	p.Legend.Left = false
	return p, nil
}

// CDF is chart (e): the cumulative distribution of commit latency (solid) and execution
// latency (dashed) for each protocol; the gap between the two is time spent waiting for
// dependencies to commit and execute.
func CDF(runs []result.Run) (*plot.Plot, error) {
	groups := byProtocol(runs)
	if len(groups) == 0 {
		return nil, nil
	}
	first := groups[0][0]
	p := newPlot(fmt.Sprintf("Commit vs execution latency, all sites, %d replicas, %s, %s%% conflict",
		first.Replicas, wanText(first.WAN), pct(first.Conflict)), "Latency (ms)", "Fraction of commands")
	drawn := false
	var xmax float64
	for _, g := range groups {
		r := g[0]
		for _, c := range []struct {
			pts    []result.CDFPoint
			name   string
			dashed bool
		}{{r.CommitCDF, " commit", false}, {r.ExecCDF, " execution", true}} {
			if len(c.pts) == 0 {
				continue
			}
			xys := make(plotter.XYs, len(c.pts))
			tail := 0.0
			for i, pt := range c.pts {
				xys[i] = plotter.XY{X: pt.Ms, Y: pt.P}
				if tail == 0 && pt.P >= 0.999 {
					tail = pt.Ms
				}
			}
			xmax = math.Max(xmax, tail)
			l, err := plotter.NewLine(xys)
			if err != nil {
				return nil, err
			}
			l.LineStyle = draw.LineStyle{Color: colorOf(r.Protocol), Width: vg.Points(1.5)}
			if c.dashed {
				l.LineStyle.Dashes = []vg.Length{vg.Points(5), vg.Points(3)}
			}
			p.Add(l)
			p.Legend.Add(label(r.Protocol)+c.name, l)
			drawn = true
		}
	}
	if !drawn {
		return nil, nil
	}
	p.Y.Min, p.Y.Max = 0, 1
	p.X.Min = 0
	if xmax > 0 {
		p.X.Max = xmax * 1.05 // the axis ends at the p99.9; the rest of the tail is in results.json
		p.X.Label.Text = "Latency (ms; axis cut at the p99.9)"
	}
	p.Legend.Top = false
	p.Legend.Left = false
	return p, nil
}

func addLine(p *plot.Plot, xys plotter.XYs, protocol, name string, dashed bool) error {
	l, s, err := plotter.NewLinePoints(xys)
	if err != nil {
		return err
	}
	l.LineStyle = draw.LineStyle{Color: colorOf(protocol), Width: vg.Points(1.5)}
	s.GlyphStyle = draw.GlyphStyle{Color: colorOf(protocol), Radius: vg.Points(2.5), Shape: draw.CircleGlyph{}}
	if dashed {
		l.LineStyle.Dashes = []vg.Length{vg.Points(5), vg.Points(3)}
		s.GlyphStyle.Shape = draw.TriangleGlyph{}
	}
	p.Add(l, s)
	p.Legend.Add(name, l, s)
	return nil
}
