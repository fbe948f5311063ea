package main

import (
	"bufio"
	"bytes"
	"context"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
)

// microResult is one `go test -bench` line.
type microResult struct {
	Pkg    string
	Name   string
	NsOp   float64
	Allocs float64 // -1 when not reported
	// Metrics are the benchmark's own (b.ReportMetric), by unit.
	Metrics map[string]float64
}

var microPkgs = []string{"./internal/httpapi/", "./internal/password/", "./internal/apitoken/", "./internal/milter/"}

var metricRe = regexp.MustCompile(`\s([0-9.]+) ([a-z0-9]+-ms)\b`)

var benchLineRe = regexp.MustCompile(`^(Benchmark\S+?)(?:-\d+)?\s+\d+\s+([0-9.]+) ns/op(?:.*?\s([0-9.]+) allocs/op)?`)

// runMicro runs the packages' benchmarks and parses what it can; a package
// that fails to build or run is reported in notes and skipped.
func runMicro(ctx context.Context, quick bool) ([]microResult, []string) {
	args := []string{"test", "-run", "^$", "-bench", ".", "-benchmem"}
	if quick {
		args = append(args, "-benchtime", "200ms")
	}
	args = append(args, microPkgs...)
	out, err := exec.CommandContext(ctx, "go", args...).CombinedOutput()
	res, notes := parseMicro(out)
	if err != nil {
		notes = append(notes, "go test -bench: "+err.Error()+" (figures of packages that ran are kept)")
	}
	return res, notes
}

func parseMicro(out []byte) ([]microResult, []string) {
	var res []microResult
	var notes []string
	var pending []microResult
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		line := sc.Text()
		if m := benchLineRe.FindStringSubmatch(line); m != nil {
			ns, _ := strconv.ParseFloat(m[2], 64)
			al := -1.0
			if m[3] != "" {
				al, _ = strconv.ParseFloat(m[3], 64)
			}
			r := microResult{Name: m[1], NsOp: ns, Allocs: al, Metrics: map[string]float64{}}
			for _, mm := range metricRe.FindAllStringSubmatch(line, -1) {
				r.Metrics[mm[2]], _ = strconv.ParseFloat(mm[1], 64)
			}
			pending = append(pending, r)
			continue
		}
		f := strings.Fields(line)
		if len(f) >= 2 && (f[0] == "ok" || f[0] == "PASS" || f[0] == "FAIL") && strings.Contains(line, "github.com/") {
			pkg := f[1]
			pkg = pkg[strings.LastIndex(pkg, "/internal/")+1:]
			for i := range pending {
				pending[i].Pkg = pkg
			}
			res = append(res, pending...)
			pending = nil
			if f[0] == "FAIL" {
				notes = append(notes, "benchmarks failed in "+pkg)
			}
		}
		if strings.HasPrefix(line, "# ") || strings.Contains(line, "[setup failed]") || strings.Contains(line, "[build failed]") {
			notes = append(notes, strings.TrimSpace(line))
		}
	}
	res = append(res, pending...)
	return res, notes
}
