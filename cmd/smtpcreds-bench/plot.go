package main

import (
	"fmt"
	"image"
	"image/color"
	"image/png"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"golang.org/x/image/font"
	"golang.org/x/image/font/basicfont"
	"golang.org/x/image/math/fixed"
)

// series is one line of a panel.
type series struct {
	c     color.RGBA
	label string
	x, y  []float64
}

var (
	white = color.RGBA{255, 255, 255, 255}
	black = color.RGBA{0, 0, 0, 255}
	grey  = color.RGBA{210, 210, 210, 255}
	red   = color.RGBA{200, 30, 30, 255}
	blue  = color.RGBA{30, 60, 200, 255}
	green = color.RGBA{20, 150, 40, 255}
)

// writePlot draws two panels: left, p99 latency (ms, log scale) against data
// size (log scale) for list page 1 (blue), deepest page (red) and get
// (green); right, API creates/s against concurrency (blue, passwd-file) with
// pgbench tps (red dot) and the API with the dovecot-sql target (green dot)
// at the bench concurrency. Tick marks are at powers of ten on log
// axes and at fifths of the range on linear ones.
func writePlot(path string, r *results) error {
	const w, h = 1000, 440
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			img.Set(x, y, white)
		}
	}
	first := series{c: blue, label: "list, first page"}
	deep := series{c: red, label: "list, deepest page"}
	get := series{c: green, label: "get one"}
	for _, p := range r.Reads {
		x := math.Log10(float64(p.Size))
		first.x, first.y = append(first.x, x), append(first.y, logMs(p.FirstP99))
		deep.x, deep.y = append(deep.x, x), append(deep.y, logMs(p.DeepP99))
		get.x, get.y = append(get.x, x), append(get.y, logMs(p.GetP99))
	}
	panel(img, image.Rect(60, 40, 480, 370), []series{first, deep, get}, true,
		"read p99 latency against credentials in the domain", "credentials (log)", "ms (log)", sizeLabel, msLabel)
	api := series{c: blue, label: "API creates/s"}
	for _, l := range r.Sweep {
		api.x, api.y = append(api.x, float64(l.Concurrency)), append(api.y, l.RPS)
	}
	pg := series{c: red, label: "pgbench, same SQL (tps)"}
	if r.Pgbench.TPS > 0 {
		pg.x, pg.y = []float64{float64(r.Concurrency)}, []float64{r.Pgbench.TPS}
	}
	sql := series{c: green, label: "API creates/s, dovecot-sql"}
	if r.SQL != nil && r.SQL.API.Requests > 0 {
		sql.x, sql.y = []float64{float64(r.Concurrency)}, []float64{r.SQL.API.RPS}
	}
	panel(img, image.Rect(570, 40, 970, 370), []series{api, pg, sql}, false,
		"create throughput against concurrency", "concurrent clients", "per second", intLabel, intLabel)
	text(img, 10, h-12, fmt.Sprintf("smtpcreds make bench, %s, %d cores, PostgreSQL %s", r.Date.UTC().Format("2006-01-02"), r.Cores, r.PGVersion), black)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := png.Encode(f, img); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func logMs(d time.Duration) float64 { return math.Log10(math.Max(ms(d), 0.01)) }

// Tick labels: log axes hold log10 of the value.
func sizeLabel(v float64) string {
	n := math.Pow(10, v)
	switch {
	case n >= 1e6:
		return strconv.FormatFloat(n/1e6, 'f', -1, 64) + "M"
	case n >= 1e3:
		return strconv.FormatFloat(n/1e3, 'f', -1, 64) + "k"
	}
	return strconv.FormatFloat(n, 'f', -1, 64)
}

func msLabel(v float64) string { return strconv.FormatFloat(math.Pow(10, v), 'f', -1, 64) }

func intLabel(v float64) string { return strconv.Itoa(int(math.Round(v))) }

// text draws s with its baseline's left end at (x, y).
func text(img *image.RGBA, x, y int, s string, c color.RGBA) {
	d := font.Drawer{Dst: img, Src: image.NewUniform(c), Face: basicfont.Face7x13, Dot: fixed.P(x, y)}
	d.DrawString(s)
}

func textWidth(s string) int { return font.MeasureString(basicfont.Face7x13, s).Round() }

// panel draws the series in box with grid, ticks, tick labels, a title,
// axis names and a legend.
func panel(img *image.RGBA, box image.Rectangle, ss []series, logAxes bool, title, xName, yName string, xLabel, yLabel func(float64) string) {
	minX, maxX, minY, maxY := math.Inf(1), math.Inf(-1), math.Inf(1), math.Inf(-1)
	for _, s := range ss {
		for i := range s.x {
			minX, maxX = math.Min(minX, s.x[i]), math.Max(maxX, s.x[i])
			minY, maxY = math.Min(minY, s.y[i]), math.Max(maxY, s.y[i])
		}
	}
	if math.IsInf(minX, 0) {
		minX, maxX, minY, maxY = 0, 1, 0, 1
	}
	if logAxes {
		minX, maxX = math.Floor(minX), math.Ceil(maxX)
		minY, maxY = math.Floor(minY), math.Ceil(maxY)
	} else {
		minX, minY = 0, 0
		maxY *= 1.1
	}
	if maxX <= minX {
		maxX = minX + 1
	}
	if maxY <= minY {
		maxY = minY + 1
	}
	px := func(x float64) int {
		return box.Min.X + int((x-minX)/(maxX-minX)*float64(box.Dx()))
	}
	py := func(y float64) int {
		return box.Max.Y - int((y-minY)/(maxY-minY)*float64(box.Dy()))
	}
	// Grid and ticks.
	var xt, yt []float64
	if logAxes {
		for v := minX; v <= maxX; v++ {
			xt = append(xt, v)
		}
		for v := minY; v <= maxY; v++ {
			yt = append(yt, v)
		}
	} else {
		for i := 0; i <= 5; i++ {
			xt = append(xt, minX+(maxX-minX)*float64(i)/5)
			yt = append(yt, minY+(maxY-minY)*float64(i)/5)
		}
	}
	for _, v := range xt {
		line(img, px(v), box.Min.Y, px(v), box.Max.Y, grey)
		line(img, px(v), box.Max.Y, px(v), box.Max.Y+6, black)
		l := xLabel(v)
		text(img, px(v)-textWidth(l)/2, box.Max.Y+19, l, black)
	}
	for _, v := range yt {
		line(img, box.Min.X, py(v), box.Max.X, py(v), grey)
		line(img, box.Min.X-6, py(v), box.Min.X, py(v), black)
		l := yLabel(v)
		text(img, box.Min.X-9-textWidth(l), py(v)+4, l, black)
	}
	text(img, box.Min.X, box.Min.Y-22, title, black)
	text(img, box.Max.X-textWidth(xName), box.Max.Y+34, xName, black)
	text(img, box.Min.X, box.Min.Y-6, yName, black)
	line(img, box.Min.X, box.Max.Y, box.Max.X, box.Max.Y, black)
	line(img, box.Min.X, box.Min.Y, box.Min.X, box.Max.Y, black)
	for _, s := range ss {
		for i := range s.x {
			x, y := px(s.x[i]), py(s.y[i])
			for dx := -3; dx <= 3; dx++ {
				for dy := -3; dy <= 3; dy++ {
					img.Set(x+dx, y+dy, s.c)
				}
			}
			if i > 0 {
				for o := -1; o <= 1; o++ {
					line(img, px(s.x[i-1]), py(s.y[i-1])+o, x, y+o, s.c)
				}
			}
		}
	}
	// Legend, on white, in the top left corner (lines rise to the right).
	lx := box.Min.X + 8
	for y := box.Min.Y + 2; y < box.Min.Y+8+16*len(ss); y++ {
		line(img, lx-4, y, lx+186, y, white)
	}
	for i, s := range ss {
		y := box.Min.Y + 14 + 16*i
		for dy := -4; dy <= 0; dy++ {
			line(img, lx, y+dy, lx+15, y+dy, s.c)
		}
		text(img, lx+22, y, s.label, black)
	}
}

// line draws with Bresenham's algorithm.
func line(img *image.RGBA, x0, y0, x1, y1 int, c color.RGBA) {
	dx, dy := abs(x1-x0), -abs(y1-y0)
	sx, sy := 1, 1
	if x0 > x1 {
		sx = -1
	}
	if y0 > y1 {
		sy = -1
	}
	err := dx + dy
	for {
		img.Set(x0, y0, c)
		if x0 == x1 && y0 == y1 {
			return
		}
		e2 := 2 * err
		if e2 >= dy {
			err += dy
			x0 += sx
		}
		if e2 <= dx {
			err += dx
			y0 += sy
		}
	}
}

func abs(v int) int {
	if v < 0 {
		return -v
	}
	return v
}
