// Package plots draws comparison figures of runs, each as PNG and SVG,
// with gonum/plot: energy efficiency against throughput (point size =
// model size, colour = backend, 95% CIs both ways, every point labelled),
// J/token bars with 95% CIs, box plots of J/token over cycles, and a load ×
// precision heat map (values in the cells, a colour bar, a perceptually
// uniform colour map). Figures that show simulated data say so across the
// plot. A run without a value is drawn as "no data", never as 0.
package plots

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
	"gonum.org/v1/plot/font"
	"gonum.org/v1/plot/palette/moreland"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/text"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
	"gonum.org/v1/plot/vg/vgsvg"

	"github.com/llm-energy-measure/lem/analytics"
)

// Files lists the figures Write produces, without extension.
var Files = []string{"efficiency-vs-throughput", "j-per-token-bars", "j-per-token-cycles", "heatmap-load-precision"}

// colours of backends (Tableau 10, distinguishable in print), stable by
// sorted backend name.
var colours = []color.Color{
	color.RGBA{31, 119, 180, 255}, color.RGBA{255, 127, 14, 255}, color.RGBA{44, 160, 44, 255},
	color.RGBA{214, 39, 40, 255}, color.RGBA{148, 103, 189, 255}, color.RGBA{140, 86, 75, 255}, color.RGBA{127, 127, 127, 255},
}

const figHeight = 11 * vg.Centimeter

// Write draws every figure of the comparison into dir as .png and .svg.
func Write(dir string, cs []analytics.Comparison) ([]string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	backends := map[string]color.Color{}
	var names []string
	simulated := false
	for _, c := range cs {
		if _, ok := backends[c.Result.Backend]; !ok {
			backends[c.Result.Backend] = nil
			names = append(names, c.Result.Backend)
		}
		simulated = simulated || c.Result.Simulated
	}
	sort.Strings(names)
	for i, b := range names {
		backends[b] = colours[i%len(colours)]
	}
	var written []string
	save := func(name string, w vg.Length, drawFn func(draw.Canvas)) error {
		for _, ext := range []string{".png", ".svg"} {
			path := filepath.Join(dir, name+ext)
			if err := render(path, w, figHeight, drawFn); err != nil {
				return fmt.Errorf("%s: %w", path, err)
			}
			written = append(written, path)
		}
		return nil
	}
	plain := func(p *plot.Plot) func(draw.Canvas) {
		if simulated {
			p.Add(watermark{})
		}
		return func(c draw.Canvas) { p.Draw(c) }
	}
	wide := vg.Length(math.Max(16, 2.5*float64(len(cs)))) * vg.Centimeter

	p, err := efficiency(cs, names, backends)
	if err != nil {
		return nil, err
	}
	if err := save(Files[0], 18*vg.Centimeter, plain(p)); err != nil {
		return nil, err
	}
	if p, err = bars(cs, names, backends); err != nil {
		return nil, err
	}
	if err := save(Files[1], wide, plain(p)); err != nil {
		return nil, err
	}
	if p, err = boxes(cs, names, backends); err != nil {
		return nil, err
	}
	if err := save(Files[2], wide, plain(p)); err != nil {
		return nil, err
	}
	hm, bar := heatmap(cs)
	if simulated {
		hm.Add(watermark{})
	}
	barW := 3.2 * vg.Centimeter
	if err := save(Files[3], 18*vg.Centimeter, func(c draw.Canvas) {
		w := c.Max.X - c.Min.X
		hm.Draw(draw.Crop(c, 0, -barW, 0, 0))
		bar.Draw(draw.Crop(c, w-barW, 0, 0, 0))
	}); err != nil {
		return nil, err
	}
	return written, nil
}

// render draws into a PNG or an SVG file, by path's extension.
func render(path string, w, h vg.Length, drawFn func(draw.Canvas)) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if strings.HasSuffix(path, ".svg") {
		c := vgsvg.New(w, h)
		drawFn(draw.New(c))
		_, err = c.WriteTo(f)
	} else {
		c := vgimg.PngCanvas{Canvas: vgimg.NewWith(vgimg.UseWH(w, h), vgimg.UseDPI(150))}
		drawFn(draw.New(c))
		_, err = c.WriteTo(f)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// stat returns a run's metric and its 95% half-width (0 when unknown:
// fewer than three cycles state no interval).
func stat(c analytics.Comparison, m string) (mean, ci float64, ok bool) {
	s := c.Result.Summary[m]
	if s.N == 0 || math.IsNaN(s.Mean) || math.IsInf(s.Mean, 0) {
		return math.NaN(), 0, false
	}
	ci = s.CI95
	if math.IsNaN(ci) || math.IsInf(ci, 0) {
		ci = 0
	}
	return s.Mean, ci, true
}

// efficiency: tokens per joule against throughput, one colour per
// backend (filled markers, in the legend too), marker area by model size,
// 95% CIs both ways, each point labelled with its run.
func efficiency(cs []analytics.Comparison, names []string, backends map[string]color.Color) (*plot.Plot, error) {
	p := plot.New()
	p.Title.Text = "Energy efficiency vs throughput (mean ± 95% CI over cycles; marker area: model size)"
	p.X.Label.Text = "throughput (output tokens/s)"
	p.Y.Label.Text = "output tokens per joule"
	p.Legend.Top = true
	var xs, ys []float64
	missing := 0
	for _, b := range names {
		var pts plotter.XYs
		var xe plotter.XErrors
		var ye plotter.YErrors
		var sizes []float64
		var labels []string
		for _, c := range cs {
			if c.Result.Backend != b {
				continue
			}
			x, xci, okx := stat(c, "throughput_tok_s")
			y, yci, oky := stat(c, "tokens_per_j")
			if !okx || !oky {
				missing++
				continue
			}
			pts = append(pts, plotter.XY{X: x, Y: y})
			xe = append(xe, struct{ Low, High float64 }{xci, xci})
			ye = append(ye, struct{ Low, High float64 }{yci, yci})
			sizes = append(sizes, c.ModelSizeB)
			labels = append(labels, c.Result.RunID)
			xs = append(xs, x-xci, x+xci)
			ys = append(ys, y-yci, y+yci)
		}
		if len(pts) == 0 {
			continue
		}
		col := backends[b]
		s, err := plotter.NewScatter(pts)
		if err != nil {
			return nil, err
		}
		s.GlyphStyle = draw.GlyphStyle{Color: col, Radius: vg.Points(5), Shape: draw.CircleGlyph{}}
		s.GlyphStyleFunc = func(i int) draw.GlyphStyle {
			return draw.GlyphStyle{Color: col, Radius: vg.Points(3 + 2.5*math.Sqrt(math.Max(sizes[i], 0.5))), Shape: draw.CircleGlyph{}}
		}
		data := struct {
			plotter.XYs
			plotter.XErrors
			plotter.YErrors
		}{pts, xe, ye}
		exb, err := plotter.NewXErrorBars(data)
		if err != nil {
			return nil, err
		}
		eyb, err := plotter.NewYErrorBars(data)
		if err != nil {
			return nil, err
		}
		exb.LineStyle.Color, eyb.LineStyle.Color = col, col
		lb, err := plotter.NewLabels(plotter.XYLabels{XYs: pts, Labels: labels})
		if err != nil {
			return nil, err
		}
		for i := range lb.TextStyle {
			lb.TextStyle[i].XAlign = draw.XLeft
		}
		lb.Offset = vg.Point{X: vg.Points(13), Y: vg.Points(3)}
		p.Add(exb, eyb, s, lb)
		p.Legend.Add(b, s)
	}
	p.Add(plotter.NewGrid())
	pad(&p.X, xs, 0.08, 0.22)
	pad(&p.Y, ys, 0.1, 0.3)
	if missing > 0 {
		p.Title.Text += fmt.Sprintf("\n%d run(s) without energy or throughput not shown", missing)
	}
	return p, nil
}

// pad sets an axis to the data's range widened by lo and hi of its span
// (so markers, intervals and labels are not clipped), from 0 when the
// data are all positive and close to it.
func pad(a *plot.Axis, vs []float64, lo, hi float64) {
	if len(vs) == 0 {
		return
	}
	mn, mx := vs[0], vs[0]
	for _, v := range vs {
		mn, mx = math.Min(mn, v), math.Max(mx, v)
	}
	span := mx - mn
	if span == 0 {
		span = math.Max(math.Abs(mx), 1)
	}
	a.Min, a.Max = mn-lo*span, mx+hi*span
	if mn >= 0 && a.Min < 0 {
		a.Min = 0
	}
}

// bars: J/token per run, coloured by backend, with its 95% CI and its
// value written above; a run without J/token says "no data".
func bars(cs []analytics.Comparison, names []string, backends map[string]color.Color) (*plot.Plot, error) {
	p := plot.New()
	p.Title.Text = "J per output token (mean ± 95% CI over cycles; no interval under 3 cycles)"
	p.Y.Label.Text = "J per output token"
	var labels []string
	var top []float64
	var notes plotter.XYLabels
	inLegend := map[string]bool{}
	for i, c := range cs {
		labels = append(labels, c.Result.RunID)
		m, ci, ok := stat(c, "j_per_token")
		if !ok {
			notes.XYs = append(notes.XYs, plotter.XY{X: float64(i), Y: 0})
			notes.Labels = append(notes.Labels, "no data")
			continue
		}
		b, err := plotter.NewBarChart(plotter.Values{m}, vg.Points(22))
		if err != nil {
			return nil, err
		}
		b.XMin = float64(i)
		b.Color = backends[c.Result.Backend]
		b.LineStyle.Width = 0
		p.Add(b)
		if !inLegend[c.Result.Backend] {
			inLegend[c.Result.Backend] = true
			p.Legend.Add(c.Result.Backend, b)
		}
		if ci > 0 {
			eb, err := plotter.NewYErrorBars(struct {
				plotter.XYs
				plotter.YErrors
			}{plotter.XYs{{X: float64(i), Y: m}}, plotter.YErrors{{Low: ci, High: ci}}})
			if err != nil {
				return nil, err
			}
			p.Add(eb)
		}
		notes.XYs = append(notes.XYs, plotter.XY{X: float64(i), Y: m + ci})
		v := analytics.MeanCI(m, ci)
		if ci == 0 {
			v = analytics.FormatStat(c.Result.Summary["j_per_token"])
		}
		notes.Labels = append(notes.Labels, v)
		top = append(top, m+ci)
	}
	if err := addCentred(p, notes, vg.Points(4)); err != nil {
		return nil, err
	}
	p.NominalX(labels...)
	p.X.Tick.Label.Rotation = math.Pi / 6
	p.X.Tick.Label.XAlign = draw.XRight
	p.X.Min, p.X.Max = -0.7, float64(len(cs))-0.3
	pad(&p.Y, append(top, 0), 0, 0.15)
	p.Legend.Top = true
	p.Add(plotter.NewGrid())
	return p, nil
}

// boxes: J/token of each cycle per run (box: quartiles; whiskers: 1.5
// IQR), coloured by backend; a run without values says "no data".
func boxes(cs []analytics.Comparison, names []string, backends map[string]color.Color) (*plot.Plot, error) {
	p := plot.New()
	p.Title.Text = "J per output token over cycles (box: quartiles; whiskers: 1.5 IQR; points: outliers)"
	p.Y.Label.Text = "J per output token"
	var labels []string
	var all []float64
	var notes plotter.XYLabels
	for i, c := range cs {
		labels = append(labels, fmt.Sprintf("%s (n=%d)", c.Result.RunID, len(analytics.CycleValues(c.Result, "j_per_token"))))
		v := analytics.CycleValues(c.Result, "j_per_token")
		if len(v) == 0 {
			notes.XYs = append(notes.XYs, plotter.XY{X: float64(i), Y: 0})
			notes.Labels = append(notes.Labels, "no data")
			continue
		}
		bp, err := plotter.NewBoxPlot(vg.Points(22), float64(i), plotter.Values(v))
		if err != nil {
			return nil, err
		}
		bp.FillColor = lighten(backends[c.Result.Backend])
		p.Add(bp)
		all = append(all, v...)
	}
	if len(notes.Labels) > 0 {
		if err := addCentred(p, notes, 0); err != nil {
			return nil, err
		}
		all = append(all, 0)
	}
	p.NominalX(labels...)
	p.X.Tick.Label.Rotation = math.Pi / 6
	p.X.Tick.Label.XAlign = draw.XRight
	p.X.Min, p.X.Max = -0.7, float64(len(cs))-0.3
	pad(&p.Y, all, 0.1, 0.1)
	p.Add(plotter.NewGrid())
	return p, nil
}

// addCentred adds labels centred on their points, raised by dy (none
// when there are no labels).
func addCentred(p *plot.Plot, labels plotter.XYLabels, dy vg.Length) error {
	if len(labels.Labels) == 0 {
		return nil
	}
	lb, err := plotter.NewLabels(labels)
	if err != nil {
		return err
	}
	for i := range lb.TextStyle {
		lb.TextStyle[i].XAlign = draw.XCenter
	}
	lb.Offset = vg.Point{Y: dy}
	p.Add(lb)
	return nil
}

func lighten(c color.Color) color.Color {
	r, g, b, _ := c.RGBA()
	mix := func(v uint32) uint8 { return uint8((float64(v>>8) + 2*255) / 3) }
	return color.RGBA{mix(r), mix(g), mix(b), 255}
}

// heatmap: mean J/token by load and precision, on a perceptually uniform
// colour map (Moreland's extended Kindlmann: luminance rises with the
// value, so it reads in grey too), the value in each cell, and a colour
// bar; cells without runs stay blank.
func heatmap(cs []analytics.Comparison) (*plot.Plot, *plot.Plot) {
	g := newGrid(cs)
	cmap := moreland.ExtendedKindlmann()
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, col := range g.z {
		for _, v := range col {
			if !math.IsNaN(v) {
				lo, hi = math.Min(lo, v), math.Max(hi, v)
			}
		}
	}
	if math.IsInf(lo, 0) {
		lo, hi = 0, 1
	}
	if hi == lo {
		lo, hi = lo*0.9, hi*1.1+1e-9
	}
	// The map's ends are black and white, which read as empty cells: keep
	// the data inside its middle.
	span := hi - lo
	lo, hi = math.Max(0, lo-0.2*span), hi+0.2*span
	cmap.SetMin(lo)
	cmap.SetMax(hi)
	p := plot.New()
	p.Title.Text = "Mean J per output token by load and precision"
	p.X.Label.Text = "load (closed loop: requests in flight; open loop: arrival process and rate)"
	p.Y.Label.Text = "precision"
	hm := plotter.NewHeatMap(g, cmap.Palette(255))
	hm.Min, hm.Max = lo, hi
	hm.NaN = color.Transparent
	p.Add(hm)
	var cells plotter.XYLabels
	var styles []text.Style
	for i := range g.xs {
		for j := range g.ys {
			v := g.z[i][j]
			if math.IsNaN(v) {
				continue
			}
			cells.XYs = append(cells.XYs, plotter.XY{X: float64(i), Y: float64(j)})
			cells.Labels = append(cells.Labels, fmt.Sprintf("%s J\n(%d run%s)", sigFig(v, 3), g.n[i][j], plural(g.n[i][j])))
			fg := color.Color(color.White)
			if c, err := cmap.At(v); err == nil && luminance(c) > 0.45 {
				fg = color.Black
			}
			styles = append(styles, text.Style{Color: fg, Font: font.From(plot.DefaultFont, 10), XAlign: draw.XCenter,
				YAlign: draw.YCenter, Handler: plot.DefaultTextHandler})
		}
	}
	if len(cells.Labels) > 0 {
		if lb, err := plotter.NewLabels(cells); err == nil {
			lb.TextStyle = styles
			p.Add(lb)
		}
	}
	p.NominalX(g.xs...)
	p.NominalY(g.ys...)
	p.X.Min, p.X.Max = -0.5, float64(len(g.xs))-0.5
	p.Y.Min, p.Y.Max = -0.5, float64(len(g.ys))-0.5

	bar := plot.New()
	cb := &plotter.ColorBar{ColorMap: cmap, Vertical: true}
	bar.Add(cb)
	bar.HideX()
	bar.Y.Padding = 0
	bar.Y.Label.Text = "J per output token"
	bar.Title.Text = " "
	return p, bar
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}

// luminance is the relative luminance of c (0 black, 1 white).
func luminance(c color.Color) float64 {
	r, g, b, _ := c.RGBA()
	return (0.2126*float64(r) + 0.7152*float64(g) + 0.0722*float64(b)) / 65535
}

func sigFig(v float64, n int) string {
	s := strconv.FormatFloat(v, 'f', max(0, n-1-int(math.Floor(math.Log10(math.Abs(v))))), 64)
	if v == 0 {
		return "0"
	}
	return s
}

// watermark writes "SIMULATED — not a measurement" across the data area.
type watermark struct{}

func (watermark) Plot(c draw.Canvas, _ *plot.Plot) {
	const msg = "SIMULATED — not a measurement"
	dx, dy := float64(c.Max.X-c.Min.X), float64(c.Max.Y-c.Min.Y)
	sty := text.Style{Color: color.NRGBA{200, 30, 30, 70}, Font: font.From(plot.DefaultFont, 30), XAlign: draw.XCenter,
		YAlign: draw.YCenter, Rotation: math.Atan2(dy, dx), Handler: plot.DefaultTextHandler}
	// At most 85% of the diagonal, so it is never cut at the edges.
	if w, diag := float64(sty.Width(msg)), math.Hypot(dx, dy); w > 0.85*diag {
		sty.Font.Size = vg.Length(float64(sty.Font.Size) * 0.85 * diag / w)
	}
	c.FillText(sty, c.Center(), msg)
}

// grid is the heat map's cells: mean J/token of the comparisons with that
// load and precision (NaN where none), and how many runs each averages.
type grid struct {
	xs, ys []string
	z      [][]float64
	n      [][]int
}

func newGrid(cs []analytics.Comparison) *grid {
	xset, yset := map[string]bool{}, map[string]bool{}
	for _, c := range cs {
		xset[label(c.Load)], yset[c.Precision] = true, true
	}
	g := &grid{}
	for x := range xset {
		g.xs = append(g.xs, x)
	}
	// Closed loops by their number in flight, then open loops by name.
	lead := func(s string) (float64, bool) {
		f, err := strconv.ParseFloat(strings.Fields(s + " ")[0], 64)
		return f, err == nil
	}
	sort.Slice(g.xs, func(i, j int) bool {
		a, ea := lead(g.xs[i])
		b, eb := lead(g.xs[j])
		if ea && eb {
			return a < b
		}
		if ea != eb {
			return ea
		}
		return g.xs[i] < g.xs[j]
	})
	for y := range yset {
		g.ys = append(g.ys, y)
	}
	sort.Strings(g.ys)
	sum := make([][]float64, len(g.xs))
	g.n = make([][]int, len(g.xs))
	for i := range sum {
		sum[i], g.n[i] = make([]float64, len(g.ys)), make([]int, len(g.ys))
	}
	for _, c := range cs {
		i, j := index(g.xs, label(c.Load)), index(g.ys, c.Precision)
		if v := c.Result.Summary["j_per_token"].Mean; !math.IsNaN(v) && c.Result.Summary["j_per_token"].N > 0 {
			sum[i][j] += v
			g.n[i][j]++
		}
	}
	g.z = make([][]float64, len(g.xs))
	for i := range g.z {
		g.z[i] = make([]float64, len(g.ys))
		for j := range g.z[i] {
			g.z[i][j] = math.NaN()
			if g.n[i][j] > 0 {
				g.z[i][j] = sum[i][j] / float64(g.n[i][j])
			}
		}
	}
	return g
}

func label(s string) string {
	if s == "" {
		return "unknown"
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
