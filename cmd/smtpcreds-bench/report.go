package main

import (
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"
)

const (
	changesHeader = "## Changes and what they bought"
	dataMarker    = "<!-- bench-data "
)

// figure is one compared number: higher says whether bigger is better.
type figure struct {
	Key    string  `json:"key"`
	Value  float64 `json:"value"`
	Higher bool    `json:"higher"`
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func mark(ok bool) string {
	if ok {
		return "met"
	}
	return "**not met**"
}

func render(r *results, prev []byte) string {
	var b strings.Builder
	var figs []figure
	add := func(key string, v float64, higher bool) { figs = append(figs, figure{key, v, higher}) }

	fmt.Fprintf(&b, "# smtpcreds benchmark results\n\n")
	fmt.Fprintf(&b, "Written by `go run ./cmd/smtpcreds-bench` (`make bench`); overwritten on every run.\n\n")
	mode := "full"
	if r.Quick {
		mode = "quick (smoke sizes, not comparable with a full run)"
	}
	fmt.Fprintf(&b, "| machine | |\n|---|---|\n| date | %s |\n| cores | %d |\n| PostgreSQL | %s (durable: fsync on) |\n| synchronous_commit | %s |\n| run | %s, %s per create run, concurrency %d |\n| sync target | passwd-file `<dir>/%s` (each write fsynced), the default; then dovecot-sql (Dovecot reads a view of the database), in the rows that say so, measured after the reads (the database then also holds their domain of credentials) |\n\n",
		r.Date.Format("2006-01-02 15:04 MST"), r.Cores, r.PGVersion, r.SyncCommit, mode, r.Duration, r.Concurrency, r.Layout)

	b.WriteString("## Headline\n\n| figure | measured | budget | |\n|---|---|---|---|\n")
	headCreates(&b, add, &r.createRun, r.Concurrency, "passwd-file, the default", "")
	if r.SQL != nil {
		headCreates(&b, add, r.SQL, r.Concurrency, "dovecot-sql", "_sql")
	}
	// VmHWM only grows: the last run's is the peak of the whole bench,
	// including the server's worker syncing what pgbench created.
	peak := r.API.PeakRSSMB
	for _, l := range r.Sweep {
		peak = max(peak, l.PeakRSSMB)
	}
	fmt.Fprintf(&b, "| server peak RSS under the create load (VmHWM after the create runs) | %.1f MB | < 150 MB | %s |\n", peak, mark(peak > 0 && peak < 150))
	add("peak_rss_mb", peak, false)
	memoryHeadline(&b, r.Memory, add)
	spreadHeadline(&b, r.Spread, r.Concurrency, add)
	idleHeadline(&b, r.Idle, add)
	dovecotHeadline(&b, r.Dovecot, add)
	if len(r.Reads) >= 2 {
		lo, hi := r.Reads[0], r.Reads[len(r.Reads)-1]
		for _, g := range []struct {
			name   string
			lo, hi time.Duration
		}{{"list first page", lo.FirstP99, hi.FirstP99}, {"list deepest page", lo.DeepP99, hi.DeepP99}, {"get", lo.GetP99, hi.GetP99}} {
			gr := float64(g.hi) / float64(max(g.lo, time.Microsecond))
			fmt.Fprintf(&b, "| **reads growth p99 %s** (%s vs %s) | **%.2fx** (%.2f ms vs %.2f ms) | <= 1.5x | %s |\n",
				g.name, count(hi.Size), count(lo.Size), gr, ms(g.hi), ms(g.lo), mark(gr <= 1.5))
			add("growth_"+strings.ReplaceAll(g.name, " ", "_"), gr, false)
		}
	}
	for _, m := range r.Micro {
		budget, ok := "", true
		switch {
		case strings.Contains(strings.ToLower(m.Name), "validat"):
			budget, ok = "<= 20 us, <= 150 allocs", m.NsOp <= 20000 && m.Allocs >= 0 && m.Allocs <= 150
		case strings.Contains(strings.ToLower(m.Name), "auth") && m.Pkg == "internal/httpapi":
			budget, ok = "<= 20 us", m.NsOp <= 20000
		default:
			continue
		}
		fmt.Fprintf(&b, "| %s %s | %s | %s | %s |\n", m.Pkg, m.Name, microFig(m), budget, mark(ok))
	}
	relayRows(&b, r.Micro, add)
	b.WriteString("\n")

	b.WriteString("## Creates\n\n| run | req/s | p50 | p95 | p99 | errors | server CPU s / 1000 req | peak RSS |\n|---|---|---|---|---|---|---|---|\n")
	if r.Pgbench.TPS > 0 {
		fmt.Fprintf(&b, "| pgbench, same SQL, c=%d | %.0f tps | %s | %s | %s | %s | | |\n", r.Concurrency, r.Pgbench.TPS,
			pgbenchP50(r.Pgbench), msOrBlank(r.Pgbench.P95), msOrBlank(r.Pgbench.P99), orNone(r.Pgbench.Failed))
		add("pgbench_tps", r.Pgbench.TPS, true)
	}
	for _, l := range r.Sweep {
		fmt.Fprintf(&b, "| API c=%d (%s) | %.0f | %.2f ms | %.2f ms | %.2f ms | %d | %.3f | %.1f MB |\n",
			l.Concurrency, l.Duration.Round(time.Second), l.RPS, ms(l.P50), ms(l.P95), ms(l.P99), l.Errors, l.CPUPer1000, l.PeakRSSMB)
		add(fmt.Sprintf("api_rps_c%d", l.Concurrency), l.RPS, true)
	}
	add("cpu_s_per_1000", r.API.CPUPer1000, false)
	if q := r.SQL; q != nil {
		if q.Pgbench.TPS > 0 {
			fmt.Fprintf(&b, "| dovecot-sql: pgbench, same SQL, c=%d | %.0f tps | %s | %s | %s | %s | | |\n", r.Concurrency, q.Pgbench.TPS,
				pgbenchP50(q.Pgbench), msOrBlank(q.Pgbench.P95), msOrBlank(q.Pgbench.P99), orNone(q.Pgbench.Failed))
		}
		l := q.API
		fmt.Fprintf(&b, "| dovecot-sql: API c=%d (%s) | %.0f | %.2f ms | %.2f ms | %.2f ms | %d | %.3f | %.1f MB |\n",
			l.Concurrency, l.Duration.Round(time.Second), l.RPS, ms(l.P50), ms(l.P95), ms(l.P99), l.Errors, l.CPUPer1000, l.PeakRSSMB)
	}
	for _, cr := range []*createRun{&r.createRun, r.SQL} {
		if cr != nil && cr.API.FirstError != "" {
			fmt.Fprintf(&b, "\nFirst API error (%s): `%s`\n", cr.Target, strings.ReplaceAll(cr.API.FirstError, "\n", " "))
		}
	}

	for _, cr := range []*createRun{&r.createRun, r.SQL} {
		if cr != nil {
			statements(&b, cr, r.Concurrency)
		}
	}

	if len(r.Reads) > 0 {
		b.WriteString("\n## Reads, and creates by size (one domain, one request at a time, limit 15)\n\n| credentials | list page 1 p50 / p99 | list deepest page p50 / p99 | get p50 / p99 | create p50 / p99 | server VmHWM after | errors |\n|---|---|---|---|---|---|---|\n")
		for _, p := range r.Reads {
			fmt.Fprintf(&b, "| %s | %.2f / %.2f ms | page %d: %.2f / %.2f ms | %.2f / %.2f ms | %.2f / %.2f ms | %.0f MB | %d |\n",
				count(p.Size), ms(p.FirstP50), ms(p.FirstP99), p.DeepPage, ms(p.DeepP50), ms(p.DeepP99), ms(p.GetP50), ms(p.GetP99),
				ms(p.CreateP50), ms(p.CreateP99), p.RSSMB, p.Errors)
			add(fmt.Sprintf("create_p50_ms_%d", p.Size), ms(p.CreateP50), false)
			add(fmt.Sprintf("list_deep_p99_ms_%d", p.Size), ms(p.DeepP99), false)
			add(fmt.Sprintf("list_first_p99_ms_%d", p.Size), ms(p.FirstP99), false)
			add(fmt.Sprintf("get_p99_ms_%d", p.Size), ms(p.GetP99), false)
		}
		if q := r.SQL; q != nil && q.Grow.Size > 0 {
			fmt.Fprintf(&b, "| %s, dovecot-sql | | | | %.2f / %.2f ms | | %d |\n", count(q.Grow.Size), ms(q.Grow.P50), ms(q.Grow.P99), q.Grow.Errors)
			add("create_p50_ms_sql_grow", ms(q.Grow.P50), false)
		}
	}

	if len(r.Memory) > 0 {
		var mb strings.Builder
		memoryTable(&mb, r.Memory)
		_, table, _ := strings.Cut(mb.String(), "\n## ") // the headline rows are above
		b.WriteString("\n## " + table)
	}
	if len(r.Spread) > 0 {
		var sb strings.Builder
		spreadTable(&sb, r.Spread, r.Concurrency)
		_, table, _ := strings.Cut(sb.String(), "\n## ") // the headline rows are above
		b.WriteString("\n## " + table)
	}
	if r.Idle != nil {
		var ib strings.Builder
		idleTable(&ib, r.Idle)
		_, table, _ := strings.Cut(ib.String(), "\n## ")
		b.WriteString("\n## " + table)
	}
	if len(r.Dovecot) > 0 {
		var db strings.Builder
		dovecotTable(&db, r.Dovecot, r.Concurrency)
		_, table, _ := strings.Cut(db.String(), "\n## ")
		b.WriteString("\n## " + table)
	}
	b.WriteString("\n## Micro-benchmarks (`go test -bench`)\n\n| package | benchmark | ns/op | allocs/op |\n|---|---|---|---|\n")
	if len(r.Micro) == 0 {
		b.WriteString("| – | none found | | |\n")
	}
	for _, m := range r.Micro {
		al := "–"
		if m.Allocs >= 0 {
			al = fmt.Sprintf("%.0f", m.Allocs)
		}
		fmt.Fprintf(&b, "| %s | %s | %.0f | %s |\n", m.Pkg, m.Name, m.NsOp, al)
		add("micro_ns_"+m.Pkg+"."+m.Name, m.NsOp, false)
	}
	for _, n := range r.Notes {
		fmt.Fprintf(&b, "\nNote: %s\n", n)
	}

	b.WriteString("\n## Compared with the previous results file\n\n")
	b.WriteString(compare(prev, figs, r.Quick, r.Layout))

	b.WriteString("\n" + changesHeader + "\n\n")
	b.WriteString(previousChanges(prev))

	data, _ := json.Marshal(struct {
		Quick   bool     `json:"quick"`
		Layout  string   `json:"layout"`
		Figures []figure `json:"figures"`
	}{r.Quick, r.Layout, figs})
	fmt.Fprintf(&b, "\n%s%s -->\n", dataMarker, data)
	return b.String()
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	return s
}

func orNone(s string) string {
	if s == "" {
		return "0"
	}
	return s
}

func microFig(m microResult) string {
	s := fmt.Sprintf("%.2f us", m.NsOp/1000)
	if m.Allocs >= 0 {
		s += fmt.Sprintf(", %.0f allocs", m.Allocs)
	}
	return s
}

func count(n int) string {
	switch {
	case n >= 1_000_000 && n%1_000_000 == 0:
		return fmt.Sprintf("%dM", n/1_000_000)
	case n >= 1000 && n%1000 == 0:
		return fmt.Sprintf("%dk", n/1000)
	}
	return fmt.Sprint(n)
}

var dataRe = regexp.MustCompile(`<!-- bench-data (\{.*\}) -->`)

// compare lists figures that got more than 20% worse than in prev.
func compare(prev []byte, figs []figure, quick bool, layout string) string {
	m := dataRe.FindSubmatch(prev)
	if m == nil {
		return "No previous figures.\n"
	}
	var old struct {
		Quick   bool     `json:"quick"`
		Layout  string   `json:"layout"`
		Figures []figure `json:"figures"`
	}
	if err := json.Unmarshal(m[1], &old); err != nil {
		return "Previous figures unreadable: " + err.Error() + "\n"
	}
	var b strings.Builder
	if old.Quick != quick {
		b.WriteString("(The previous run was a different mode (quick vs full): sizes and durations differ.)\n\n")
	}
	if old.Layout == "" {
		old.Layout = "users" // runs before the layout was recorded wrote one file
	}
	if old.Layout != layout {
		fmt.Fprintf(&b, "(The previous run synced to passwd-file layout %q, this one to %q: create figures differ by design.)\n\n", old.Layout, layout)
	}
	byKey := map[string]figure{}
	for _, f := range old.Figures {
		byKey[f.Key] = f
	}
	var regs, gains []string
	for _, f := range figs {
		o, ok := byKey[f.Key]
		if !ok || o.Value == 0 {
			continue
		}
		change := (f.Value - o.Value) / o.Value
		worse := change > 0.2
		better := change < -0.2
		if f.Higher {
			worse, better = change < -0.2, change > 0.2
		}
		line := fmt.Sprintf("- %s: %.4g → %.4g (%+.0f%%)", f.Key, o.Value, f.Value, change*100)
		if worse {
			regs = append(regs, line)
		} else if better {
			gains = append(gains, line)
		}
	}
	slices.Sort(regs)
	slices.Sort(gains)
	if len(regs) == 0 {
		b.WriteString("No regression of more than 20%.\n")
	} else {
		b.WriteString("**REGRESSIONS of more than 20%:**\n\n" + strings.Join(regs, "\n") + "\n")
	}
	if len(gains) > 0 {
		b.WriteString("\nImproved by more than 20%:\n\n" + strings.Join(gains, "\n") + "\n")
	}
	return b.String()
}

// previousChanges keeps what earlier sessions wrote under the changes header.
func previousChanges(prev []byte) string {
	s := string(prev)
	i := strings.Index(s, changesHeader)
	if i < 0 {
		return "_(Each performance change: what it was, and the figures before and after.)_\n"
	}
	s = s[i+len(changesHeader):]
	if j := strings.Index(s, dataMarker); j >= 0 {
		s = s[:j]
	}
	s = strings.TrimSpace(s)
	if s == "" {
		return "_(Each performance change: what it was, and the figures before and after.)_\n"
	}
	return s + "\n"
}

// headCreates writes the headline rows of the creates with one target
// (figure keys end in suffix), against issue 19's 0.8x.
func headCreates(b *strings.Builder, add func(string, float64, bool), cr *createRun, conc int, label, suffix string) {
	if cr.Pgbench.TPS > 0 {
		ratio := cr.API.RPS / cr.Pgbench.TPS
		add("create_ratio"+suffix, ratio, true)
		fmt.Fprintf(b, "| **create: API rps / pgbench tps** (%s, c=%d) | **%.2fx** (%.0f / %.0f) | >= 0.8x | %s |\n",
			label, conc, ratio, cr.API.RPS, cr.Pgbench.TPS, mark(ratio >= 0.8))
	} else {
		fmt.Fprintf(b, "| **create: API rps / pgbench tps** (%s) | not measured (%s) | >= 0.8x | **not met** |\n", label, firstLine(cr.ScriptErr))
	}
	limit := ""
	if cr.Pgbench.P99 > 0 { // what the machine's PostgreSQL itself takes
		limit = fmt.Sprintf(" (pgbench, same SQL: %.2f ms)", ms(cr.Pgbench.P99))
		add("pgbench_p99_ms"+suffix, ms(cr.Pgbench.P99), false)
	}
	fmt.Fprintf(b, "| create p99 at c=%d (%s) | %.2f ms%s | < 25 ms | %s |\n", conc, label, ms(cr.API.P99), limit, mark(cr.API.P99 < 25*time.Millisecond))
	fmt.Fprintf(b, "| create errors (%s) | %d of %d | 0 | %s |\n", label, cr.API.Errors, cr.API.Requests, mark(cr.API.Errors == 0 && cr.API.Requests > 0))
	add("create_p99_ms"+suffix, ms(cr.API.P99), false)
	if suffix != "" {
		add("pgbench_tps"+suffix, cr.Pgbench.TPS, true)
		add("api_rps"+suffix, cr.API.RPS, true)
	}
}

// statements writes the sync shares and the statements of one target's
// creates.
func statements(b *strings.Builder, cr *createRun, conc int) {
	fmt.Fprintf(b, "\n### Sync target %s\n", cr.Target)
	if cr.API.Requests > 0 {
		fmt.Fprintf(b, "\nUnder load (c=%d), %.3f sync claims and %.3f applies ran per create: a request whose job another request's turn "+
			"applied is woken without SQL. The pgbench script claims (and applies, when the claim got jobs) in the same share.\n",
			conc, cr.ClaimShare, cr.ApplyShare)
	}
	b.WriteString("\nStatements one create runs (pg_stat_statements over the sequential warm-up; the pgbench script is checked against this set):\n\n| calls / request | mean ms | in script | statement |\n|---|---|---|---|\n")
	for _, s := range cr.Statements {
		q := s.SQL
		if len(q) > 110 {
			q = q[:110] + "…"
		}
		fmt.Fprintf(b, "| %.2f | %.3f | %v | `%s` |\n", s.CallsPerReq, s.MeanMs, s.InScript, strings.ReplaceAll(q, "|", "\\|"))
	}
	if cr.ScriptErr != "" {
		fmt.Fprintf(b, "\n**Script mismatch:**\n\n```\n%s\n```\n", cr.ScriptErr)
	}
}

// pgbenchP50 is the p50 cell of a pgbench row: the median from its
// transaction log, or its average latency when the log was not read.
func pgbenchP50(r pgbenchResult) string {
	if r.P50 > 0 {
		return fmt.Sprintf("%.2f ms", ms(r.P50))
	}
	return fmt.Sprintf("avg %.2f ms", r.LatencyMs)
}

func msOrBlank(d time.Duration) string {
	if d <= 0 {
		return ""
	}
	return fmt.Sprintf("%.2f ms", ms(d))
}

// relayRows reports internal/milter's benchmarks: messages through Postfix
// at c=16 with the milter against without it (the ratio of their rates),
// the latency the milter adds, and the cost of one DKIM signature.
func relayRows(b *strings.Builder, micro []microResult, add func(string, float64, bool)) {
	var plain, milter, sign *microResult
	for i, m := range micro {
		switch {
		case m.Pkg == "internal/milter" && m.Name == "BenchmarkRelay/plain":
			plain = &micro[i]
		case m.Pkg == "internal/milter" && m.Name == "BenchmarkRelay/milter":
			milter = &micro[i]
		case m.Pkg == "internal/milter" && m.Name == "BenchmarkSign":
			sign = &micro[i]
		}
	}
	if plain != nil && milter != nil && milter.NsOp > 0 {
		ratio := plain.NsOp / milter.NsOp
		fmt.Fprintf(b, "| **relay: messages/s through Postfix with the milter vs without** (c=16) | **%.2fx** (%.0f vs %.0f msg/s) | >= 0.7x | %s |\n",
			ratio, 1e9/milter.NsOp, 1e9/plain.NsOp, mark(ratio >= 0.7))
		fmt.Fprintf(b, "| relay: latency the milter adds, p50 / p99 | %+.1f ms / %+.1f ms (%.1f / %.1f ms with it) | | |\n",
			milter.Metrics["p50-ms"]-plain.Metrics["p50-ms"], milter.Metrics["p99-ms"]-plain.Metrics["p99-ms"],
			milter.Metrics["p50-ms"], milter.Metrics["p99-ms"])
		add("relay_milter_ratio", ratio, true)
	}
	if sign != nil {
		fmt.Fprintf(b, "| relay: DKIM signature of a 10 KB message (rsa-sha256, 2048 bits) | %s | | |\n", microFig(*sign))
	}
}
