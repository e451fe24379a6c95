// Package bench runs Parliament's benchmarks: it starts a cluster (in-process replicas on
// loopback TCP behind the WAN emulator, or an external cluster from a config file), drives
// it with the clients and workloads of package workloads, measures commit and execution
// latency per site with HDR histograms, throughput over time, fast-path ratio and message
// counts, and writes results.json / results.csv (package bench/result) for the plotter.
package bench

import (
	"time"

	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"

	"github.com/parliament-lab/parliament/bench/result"
)

// Latency histograms record microseconds from 1 µs to 10 minutes with 3 significant
// digits (0.1% error), which covers a loopback round trip and a stalled election alike.
const (
	histLowest  = 1
	histHighest = int64(10 * time.Minute / time.Microsecond)
	histDigits  = 3
)

// Latency is an HDR histogram of durations. Like the histogram it wraps it is not safe for
// concurrent use: each client owns one, and the harness merges them after the run.
type Latency struct {
	h *hdrhistogram.Histogram
}

// NewLatency returns an empty histogram.
func NewLatency() *Latency {
	return &Latency{h: hdrhistogram.New(histLowest, histHighest, histDigits)}
}

// Record adds one observation; values beyond the range are clamped to it.
func (l *Latency) Record(d time.Duration) {
	us := d.Microseconds()
	if us < histLowest {
		us = histLowest
	}
	if us > histHighest {
		us = histHighest
	}
	_ = l.h.RecordValue(us) // in range by construction
}

// Merge adds every observation of o to l.
func (l *Latency) Merge(o *Latency) { l.h.Merge(o.h) }

// Count returns the number of observations.
func (l *Latency) Count() int64 { return l.h.TotalCount() }

// Reset forgets every observation (end of warm-up).
func (l *Latency) Reset() { l.h.Reset() }

func usToMs(v float64) float64 { return v / 1000 }

// Percentiles returns p50, p90, p99, p99.9, mean and max in milliseconds (all 0 when empty).
func (l *Latency) Percentiles() result.Percentiles {
	if l.h.TotalCount() == 0 {
		return result.Percentiles{}
	}
	return result.Percentiles{
		P50:  usToMs(float64(l.h.ValueAtQuantile(50))),
		P90:  usToMs(float64(l.h.ValueAtQuantile(90))),
		P99:  usToMs(float64(l.h.ValueAtQuantile(99))),
		P999: usToMs(float64(l.h.ValueAtQuantile(99.9))),
		Mean: usToMs(l.h.Mean()),
		Max:  usToMs(float64(l.h.Max())),
	}
}

// CDF returns the cumulative distribution at the histogram's own resolution, thinned to at
// most maxPoints points (the last point, P = 1, is always kept).
func (l *Latency) CDF(maxPoints int) []result.CDFPoint {
	total := l.h.TotalCount()
	if total == 0 {
		return nil
	}
	var pts []result.CDFPoint
	var cum int64
	for _, b := range l.h.Distribution() {
		if b.Count == 0 {
			continue
		}
		cum += b.Count
		pts = append(pts, result.CDFPoint{Ms: usToMs(float64(b.To)), P: float64(cum) / float64(total)})
	}
	if maxPoints > 1 && len(pts) > maxPoints {
		thin := make([]result.CDFPoint, 0, maxPoints)
		step := float64(len(pts)-1) / float64(maxPoints-1)
		for i := range maxPoints {
			thin = append(thin, pts[int(float64(i)*step+0.5)])
		}
		thin[len(thin)-1] = pts[len(pts)-1]
		pts = thin
	}
	return pts
}
