package plot

import (
	"image/color"
	"math"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
)

var color0 = color.Black

// whiskers draws, for each bar of a grouped bar chart, a vertical line from the bar's top
// (base) up to a higher value (tops: the p99) with a cap, at the bar's offset.
type whiskers struct {
	base  plotter.Values
	tops  plotter.XYs
	off   vg.Length
	style draw.LineStyle
	capW  vg.Length
}

func (w *whiskers) Plot(c draw.Canvas, p *plot.Plot) {
	trX, trY := p.Transforms(&c)
	for i, t := range w.tops {
		if t.Y <= 0 {
			continue
		}
		x := trX(t.X) + w.off
		y0, y1 := trY(w.base[i]), trY(t.Y)
		c.StrokeLine2(w.style, x, y0, x, y1)
		c.StrokeLine2(w.style, x-w.capW/2, y1, x+w.capW/2, y1)
	}
}

func (w *whiskers) DataRange() (xmin, xmax, ymin, ymax float64) {
	xmin, xmax, ymin, ymax = plotter.XYRange(w.tops)
	return xmin, xmax, 0, ymax
}

func (w *whiskers) Thumbnail(c *draw.Canvas) {
	x := (c.Min.X + c.Max.X) / 2
	c.StrokeLine2(w.style, x, c.Min.Y, x, c.Max.Y)
	c.StrokeLine2(w.style, x-w.capW/2, c.Max.Y, x+w.capW/2, c.Max.Y)
}

// dashes draws a short horizontal line at each point, shifted by off: the optimum marker.
type dashes struct {
	xys   plotter.XYs
	off   vg.Length
	width vg.Length
	style draw.LineStyle
}

func (d *dashes) Plot(c draw.Canvas, p *plot.Plot) {
	trX, trY := p.Transforms(&c)
	for _, pt := range d.xys {
		x, y := trX(pt.X)+d.off, trY(pt.Y)
		c.StrokeLine2(d.style, x-d.width/2, y, x+d.width/2, y)
	}
}

func (d *dashes) DataRange() (xmin, xmax, ymin, ymax float64) { return plotter.XYRange(d.xys) }

func (d *dashes) Thumbnail(c *draw.Canvas) {
	y := (c.Min.Y + c.Max.Y) / 2
	c.StrokeLine2(d.style, c.Min.X, y, c.Max.X, y)
}

// vline is a vertical line across the whole data area at x.
type vline struct {
	x     float64
	style draw.LineStyle
}

func (v *vline) Plot(c draw.Canvas, p *plot.Plot) {
	trX, _ := p.Transforms(&c)
	x := trX(v.x)
	c.StrokeLine2(v.style, x, c.Min.Y, x, c.Max.Y)
}

func (v *vline) DataRange() (xmin, xmax, ymin, ymax float64) {
	return v.x, v.x, math.Inf(1), math.Inf(-1)
}

func (v *vline) Thumbnail(c *draw.Canvas) {
	y := (c.Min.Y + c.Max.Y) / 2
	c.StrokeLine2(v.style, c.Min.X, y, c.Max.X, y)
}
