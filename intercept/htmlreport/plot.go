package htmlreport

import (
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/tcopy-tun/tcopy-tun/intercept"
)

// plot is one SVG chart: the cumulative distribution of the response
// times of each side (the capture, the baseline, the target), on a
// logarithmic time axis. The template draws it from these coordinates
// (plot.go computes them, page.html only places them).
type plot struct {
	ID                       string
	W, H                     int
	Left, Right, Top, Bottom float64
	XTicks, YTicks           []tick
	Lines                    []plotLine
	Empty                    bool
	Title                    string
	// Where the labels go, computed so the template does no arithmetic.
	AreaW, AreaH, TickY, YLabX, LegX, LegLineX, LegTextX, MidX, MidY float64
}

type tick struct {
	Pos   float64 // x or y, in the SVG's coordinates
	Label string
}

// plotLine is one side's step curve and its legend entry.
type plotLine struct {
	Side    string // "captured", "baseline", "target"
	Label   string
	Points  string // SVG polyline points
	Legend  string
	LegendY float64
	// LegendY2 is the legend's second line, SwatchY its colour stroke.
	LegendY2, SwatchY float64
}

// side is one distribution to draw.
type side struct {
	name, label string
	stats       intercept.LatencyStats
}

func sides(rt intercept.ResponseTime) []side {
	return []side{
		{"captured", "capture", rt.Captured},
		{"baseline", "baseline", rt.Baseline},
		{"target", "target", rt.Replayed},
	}
}

const (
	plotW = 640
	plotH = 260
)

// cdfPlot draws the distributions of rt's sides that have measurements.
func cdfPlot(id, title string, rt intercept.ResponseTime) *plot {
	p := &plot{ID: id, Title: title, W: plotW, H: plotH, Left: 58, Right: plotW - 190, Top: 12, Bottom: plotH - 34}
	p.AreaW, p.AreaH = p.Right-p.Left, p.Bottom-p.Top
	p.TickY, p.YLabX = p.Bottom+16, p.Left-6
	p.LegX, p.LegLineX, p.LegTextX = p.Right+14, p.Right+34, p.Right+40
	p.MidX, p.MidY = (p.Left+p.Right)/2, (p.Top+p.Bottom)/2
	lo, hi := math.Inf(1), 0.0
	var drawn []side
	for _, s := range sides(rt) {
		if s.stats.Count == 0 || len(s.stats.Histogram) == 0 {
			continue
		}
		drawn = append(drawn, s)
		lo = min(lo, s.stats.Histogram[0].UpperUS)
		hi = max(hi, s.stats.Histogram[len(s.stats.Histogram)-1].UpperUS)
	}
	if len(drawn) == 0 {
		p.Empty = true
		return p
	}
	// A little room left of the fastest answer; at least 1 µs, and the
	// axis spans at least one decade so that a single value still reads.
	lo = max(lo/1.5, 1)
	hi = max(hi*1.1, lo*10)
	llo, lhi := math.Log10(lo), math.Log10(hi)
	x := func(us float64) float64 {
		us = min(max(us, lo), hi)
		return p.Left + (math.Log10(us)-llo)/(lhi-llo)*(p.Right-p.Left)
	}
	y := func(f float64) float64 { return p.Bottom - f*(p.Bottom-p.Top) }
	p.XTicks = timeTicks(lo, hi, x)
	for _, f := range []float64{0, 0.25, 0.5, 0.75, 0.9, 0.99, 1} {
		if f == 0.99 {
			continue // too close to 1 to label on this height
		}
		p.YTicks = append(p.YTicks, tick{Pos: round1(y(f)), Label: strconv.FormatFloat(f, 'f', -1, 64)})
	}
	for i, s := range drawn {
		var pts []string
		pt := func(px, py float64) { pts = append(pts, fmt.Sprintf("%.1f,%.1f", px, py)) }
		pt(p.Left, y(0))
		var cum int64
		prev := 0.0
		for _, b := range s.stats.Histogram {
			cum += b.Count
			f := float64(cum) / float64(s.stats.Count)
			bx := x(b.UpperUS)
			pt(bx, y(prev))
			pt(bx, y(f))
			prev = f
		}
		pt(p.Right, y(prev))
		st := s.stats
		p.Lines = append(p.Lines, plotLine{
			Side: s.name, Label: s.label, Points: strings.Join(pts, " "),
			Legend:  fmt.Sprintf("n=%d p50 %s p99 %s", st.Count, fmtUS(st.P50US), fmtUS(st.P99US)),
			LegendY: p.Top + 14 + float64(i)*38,
		})
		l := &p.Lines[len(p.Lines)-1]
		l.LegendY2, l.SwatchY = l.LegendY+15, l.LegendY-4
	}
	return p
}

// timeTicks are the axis labels: each power of ten in the range, and 2 and
// 5 times it when the range spans less than three decades.
func timeTicks(lo, hi float64, x func(float64) float64) []tick {
	var out []tick
	fine := math.Log10(hi)-math.Log10(lo) < 3
	for e := math.Floor(math.Log10(lo)); e <= math.Ceil(math.Log10(hi)); e++ {
		for _, m := range []float64{1, 2, 5} {
			if m != 1 && !fine {
				continue
			}
			v := m * math.Pow(10, e)
			if v < lo || v > hi {
				continue
			}
			out = append(out, tick{Pos: round1(x(v)), Label: fmtUS(v)})
		}
	}
	return out
}

func round1(v float64) float64 { return math.Round(v*10) / 10 }

// fmtUS writes a time in microseconds with a unit that keeps it short:
// "850µs", "12.5ms", "1.2s".
func fmtUS(us float64) string {
	trim := func(v float64, unit string) string {
		s := strconv.FormatFloat(v, 'f', 1, 64)
		if v >= 100 {
			s = strconv.FormatFloat(v, 'f', 0, 64)
		}
		return strings.TrimSuffix(s, ".0") + unit
	}
	switch {
	case us <= 0:
		return "0"
	case us < 1000:
		return trim(us, "µs")
	case us < 1e6:
		return trim(us/1e3, "ms")
	}
	return trim(us/1e6, "s")
}
