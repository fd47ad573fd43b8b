// Package plots draws comparison figures of runs, each as PNG and SVG,
// with gonum/plot: energy efficiency against throughput (point size =
// model size, colour = backend), J/token bars with 95% CIs, box plots of
// J/token over cycles, and a concurrency × precision heat map.
package plots

import (
	"fmt"
	"image/color"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strconv"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/palette"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"

	"github.com/llm-energy-measure/lem/analytics"
)

// Files lists the figures Write produces, without extension.
var Files = []string{"efficiency-vs-throughput", "j-per-token-bars", "j-per-token-cycles", "heatmap-concurrency-precision"}

// palette of backend colours, stable by sorted backend name.
var colours = []color.Color{
	color.RGBA{31, 119, 180, 255}, color.RGBA{255, 127, 14, 255}, color.RGBA{44, 160, 44, 255},
	color.RGBA{214, 39, 40, 255}, color.RGBA{148, 103, 189, 255}, color.RGBA{140, 86, 75, 255}, color.RGBA{127, 127, 127, 255},
}

// Write draws every figure of the comparison into dir as .png and .svg.
func Write(dir string, cs []analytics.Comparison) ([]string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	backends := map[string]color.Color{}
	var names []string
	for _, c := range cs {
		if _, ok := backends[c.Result.Backend]; !ok {
			backends[c.Result.Backend] = nil
			names = append(names, c.Result.Backend)
		}
	}
	sort.Strings(names)
	for i, b := range names {
		backends[b] = colours[i%len(colours)]
	}
	var written []string
	save := func(p *plot.Plot, name string, w vg.Length) error {
		for _, ext := range []string{".png", ".svg"} {
			path := filepath.Join(dir, name+ext)
			if err := p.Save(w, 10*vg.Centimeter, path); err != nil {
				return fmt.Errorf("%s: %w", path, err)
			}
			written = append(written, path)
		}
		return nil
	}

	// 1. Efficiency vs throughput.
	p := plot.New()
	p.Title.Text = "Energy efficiency vs throughput (size: model parameters; colour: backend)"
	p.X.Label.Text = "throughput (output tokens/s)"
	p.Y.Label.Text = "tokens per joule"
	for _, b := range names {
		var pts plotter.XYs
		var sizes []float64
		for _, c := range cs {
			if c.Result.Backend != b {
				continue
			}
			x, y := c.Result.Summary["throughput_tok_s"].Mean, c.Result.Summary["tokens_per_j"].Mean
			if math.IsNaN(x) || math.IsNaN(y) {
				continue
			}
			pts = append(pts, plotter.XY{X: x, Y: y})
			sizes = append(sizes, c.ModelSizeB)
		}
		if len(pts) == 0 {
			continue
		}
		s, err := plotter.NewScatter(pts)
		if err != nil {
			return nil, err
		}
		col := backends[b]
		s.GlyphStyleFunc = func(i int) draw.GlyphStyle {
			r := vg.Points(4 + 3*math.Sqrt(math.Max(sizes[i], 0.1)))
			return draw.GlyphStyle{Color: col, Radius: r, Shape: draw.CircleGlyph{}}
		}
		p.Add(s)
		p.Legend.Add(b, s)
	}
	p.Add(plotter.NewGrid())
	if err := save(p, Files[0], 16*vg.Centimeter); err != nil {
		return nil, err
	}

	// 2. J/token per run with 95% CI.
	p = plot.New()
	p.Title.Text = "J per output token (mean ± 95% CI over cycles)"
	p.Y.Label.Text = "J / token"
	var vals plotter.Values
	var errs plotter.YErrors
	var labels []string
	for _, c := range cs {
		s := c.Result.Summary["j_per_token"]
		vals = append(vals, nanZero(s.Mean))
		ci := nanZero(s.CI95)
		errs = append(errs, struct{ Low, High float64 }{ci, ci})
		labels = append(labels, c.Result.RunID)
	}
	bars, err := plotter.NewBarChart(vals, vg.Points(18))
	if err != nil {
		return nil, err
	}
	bars.Color = colours[0]
	p.Add(bars)
	eb, err := plotter.NewYErrorBars(struct {
		plotter.XYer
		plotter.YErrorer
	}{indexXY(vals), errs})
	if err != nil {
		return nil, err
	}
	p.Add(eb)
	p.NominalX(labels...)
	p.X.Tick.Label.Rotation = math.Pi / 6
	p.X.Tick.Label.XAlign = draw.XRight
	if err := save(p, Files[1], vg.Length(math.Max(16, 2.5*float64(len(cs))))*vg.Centimeter); err != nil {
		return nil, err
	}

	// 3. Box plots of J/token over cycles.
	p = plot.New()
	p.Title.Text = "J per output token over cycles"
	p.Y.Label.Text = "J / token"
	for i, c := range cs {
		v := analytics.CycleValues(c.Result, "j_per_token")
		if len(v) == 0 {
			v = []float64{0}
		}
		bp, err := plotter.NewBoxPlot(vg.Points(20), float64(i), plotter.Values(v))
		if err != nil {
			return nil, err
		}
		p.Add(bp)
	}
	p.NominalX(labels...)
	p.X.Tick.Label.Rotation = math.Pi / 6
	p.X.Tick.Label.XAlign = draw.XRight
	if err := save(p, Files[2], vg.Length(math.Max(16, 2.5*float64(len(cs))))*vg.Centimeter); err != nil {
		return nil, err
	}

	// 4. Concurrency × precision heat map of J/token.
	g := newGrid(cs)
	p = plot.New()
	p.Title.Text = "J per output token by concurrency and precision"
	p.X.Label.Text = "concurrency (requests in flight)"
	p.Y.Label.Text = "precision"
	pal := palette.Heat(16, 1)
	hm := plotter.NewHeatMap(g, pal)
	p.Add(hm)
	p.NominalX(g.xs...)
	p.NominalY(g.ys...)
	if err := save(p, Files[3], 16*vg.Centimeter); err != nil {
		return nil, err
	}
	return written, nil
}

func nanZero(v float64) float64 {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return 0
	}
	return v
}

type indexXY plotter.Values

func (v indexXY) Len() int                    { return len(v) }
func (v indexXY) XY(i int) (float64, float64) { return float64(i), v[i] }

// grid is the heat map's cells: mean J/token of the comparisons with that
// concurrency and precision (NaN where none).
type grid struct {
	xs, ys []string
	z      [][]float64
}

func newGrid(cs []analytics.Comparison) *grid {
	xset, yset := map[string]bool{}, map[string]bool{}
	for _, c := range cs {
		xset[label(c.Concurrency)], yset[c.Precision] = true, true
	}
	g := &grid{}
	for x := range xset {
		g.xs = append(g.xs, x)
	}
	sort.Slice(g.xs, func(i, j int) bool {
		a, ea := strconv.Atoi(g.xs[i])
		b, eb := strconv.Atoi(g.xs[j])
		if ea == nil && eb == nil {
			return a < b
		}
		return g.xs[i] < g.xs[j]
	})
	for y := range yset {
		g.ys = append(g.ys, y)
	}
	sort.Strings(g.ys)
	sum := make([][]float64, len(g.xs))
	n := make([][]int, len(g.xs))
	for i := range sum {
		sum[i], n[i] = make([]float64, len(g.ys)), make([]int, len(g.ys))
	}
	for _, c := range cs {
		i, j := index(g.xs, label(c.Concurrency)), index(g.ys, c.Precision)
		if v := c.Result.Summary["j_per_token"].Mean; !math.IsNaN(v) {
			sum[i][j] += v
			n[i][j]++
		}
	}
	g.z = make([][]float64, len(g.xs))
	for i := range g.z {
		g.z[i] = make([]float64, len(g.ys))
		for j := range g.z[i] {
			g.z[i][j] = math.NaN()
			if n[i][j] > 0 {
				g.z[i][j] = sum[i][j] / float64(n[i][j])
			}
		}
	}
	return g
}

func label(s string) string {
	if s == "" {
		return "open loop"
	}
	return s
}

func index(xs []string, x string) int {
	for i, v := range xs {
		if v == x {
			return i
		}
	}
	return -1
}

func (g *grid) Dims() (c, r int)   { return len(g.xs), len(g.ys) }
func (g *grid) Z(c, r int) float64 { return g.z[c][r] }
func (g *grid) X(c int) float64    { return float64(c) }
func (g *grid) Y(r int) float64    { return float64(r) }
