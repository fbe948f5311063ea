package main

import (
	"image"
	"image/color"
	"image/png"
	"math"
	"os"
	"path/filepath"
	"time"
)

// series is one line of a panel.
type series struct {
	c    color.RGBA
	x, y []float64
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
// (green); right, API creates/s against concurrency (blue) with pgbench tps
// at the bench concurrency (red dot). Tick marks are at powers of ten on log
// axes and at fifths of the range on linear ones.
func writePlot(path string, r *results) error {
	const w, h = 1000, 420
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			img.Set(x, y, white)
		}
	}
	var first, deep, get series
	first.c, deep.c, get.c = blue, red, green
	for _, p := range r.Reads {
		x := math.Log10(float64(p.Size))
		first.x, first.y = append(first.x, x), append(first.y, logMs(p.FirstP99))
		deep.x, deep.y = append(deep.x, x), append(deep.y, logMs(p.DeepP99))
		get.x, get.y = append(get.x, x), append(get.y, logMs(p.GetP99))
	}
	panel(img, image.Rect(50, 30, 480, 380), []series{first, deep, get}, true)
	var api series
	api.c = blue
	for _, l := range r.Sweep {
		api.x, api.y = append(api.x, float64(l.Concurrency)), append(api.y, l.RPS)
	}
	pg := series{c: red}
	if r.Pgbench.TPS > 0 {
		pg.x, pg.y = []float64{float64(r.Concurrency)}, []float64{r.Pgbench.TPS}
	}
	panel(img, image.Rect(560, 30, 970, 380), []series{api, pg}, false)
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

func panel(img *image.RGBA, box image.Rectangle, ss []series, logAxes bool) {
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
	}
	for _, v := range yt {
		line(img, box.Min.X, py(v), box.Max.X, py(v), grey)
		line(img, box.Min.X-6, py(v), box.Min.X, py(v), black)
	}
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
