// Command bench measures postgres-seren-replicator against PostgreSQL's own
// tools on two (or three) throwaway local clusters, in one run, and prints
// the ratios. Run it with `make bench`; see the README for figures.
package main

import (
	"flag"
	"fmt"
	"os"
	"runtime"
	"strings"
	"time"

	"github.com/serenorg/postgres-seren-replicator/tests/pgtest"
)

func main() {
	bin := flag.String("bin", "bin/postgres-seren-replicator", "the binary to measure")
	scale := flag.Int("scale", 30, "pgbench scale of the benchmark database")
	txns := flag.Int("txns", 10000, "pgbench transactions per client (4 clients) for the catch-up backlog")
	only := flag.String("only", "", "comma list of sections to run (init, verify, catchup, mixed, memory, steady, cutover, init-bigtable); empty runs all")
	syncArgs := flag.String("sync-args", "", "extra arguments for sync, both --catch-up and the steady-state daemon (to try batch settings)")
	jobs := flag.Int("jobs", runtime.NumCPU(), "parallel sessions for init, pg_dump and pg_restore")
	bigRows := flag.Int("rows", 5_000_000, "rows of the memory section's single large insert and update transactions (about 10 minutes at 5000000 on 2 cores)")
	steadySecs := flag.Int("steady-seconds", 60, "duration of each steady-state run (ours, then native)")
	rate := flag.Int("rate", 1000, "pgbench transactions per second of the steady-state and cutover runs")
	insertOnly := flag.Bool("insert-only", false, "the memory section runs its insert transactions only")
	reps := flag.Int("reps", 1, "insert transactions of the memory section, each drained by ours then native")
	bigGB := flag.Float64("bigtable-gb", 4, "GiB of the init-bigtable section's one table (the section takes about 10 minutes at 4 on 2 cores)")
	stats := flag.Bool("stats", false, "print the target's statement statistics (pg_stat_statements) after each catch-up")
	flag.Parse()
	h := &pgtest.Standalone{}
	defer h.Close()
	b := &bench{h: h, bin: *bin, scale: *scale, txns: *txns, syncArgs: *syncArgs,
		jobs: *jobs, bigRows: *bigRows, steady: time.Duration(*steadySecs) * time.Second, rate: *rate, stats: *stats, insertOnly: *insertOnly, reps: max(1, *reps)}
	// A failing section still shows what the sections before it measured.
	h.BeforeExit = b.report
	sections := map[string]func(){"catchup": b.catchUp, "mixed": b.mixed, "init": b.initCopy,
		"verify": b.verifySpeed, "memory": b.memory, "steady": b.steadyState, "cutover": b.cutoverPause,
		"init-bigtable": func() { b.initBigTable(*bigGB) }}
	all := []string{"init", "verify", "catchup", "mixed", "memory", "steady", "cutover", "init-bigtable"}
	order := all
	if *only != "" {
		order = strings.Split(*only, ",")
	}
	for _, name := range order {
		if _, ok := sections[name]; !ok {
			fmt.Fprintf(os.Stderr, "unknown section %q (choose from %s)\n", name, strings.Join(all, ", "))
			os.Exit(2)
		}
	}
	for _, name := range order {
		start := time.Now()
		sections[name]()
		// Each section's clusters go as soon as it ends: disk and memory for the next.
		h.Close()
		fmt.Fprintf(os.Stderr, "== section %s took %s\n", name, time.Since(start).Round(time.Second))
	}
	b.report()
}

// row is one line of the final report: our figure beside the figure of
// what we compare with (native is zero when there is none).
type row struct {
	section, what string
	ours, native  time.Duration
	changes       int64
	note          string
	// vs names what native measured when it is not the native subscription.
	vs string
}

// report prints every section's rows, then the details sections recorded
// (where init's time goes, pgbench's achieved rates).
func (b *bench) report() {
	fmt.Printf("\n%-20s %-20s %10s %10s %-16s %8s %11s %11s  %s\n", "workload", "step", "ours", "other", "other is", "ratio", "ours chg/s", "other chg/s", "note")
	for _, r := range b.rows {
		vs := r.vs
		if vs == "" {
			vs = "native sub"
		}
		ratio, other := "-", "-"
		if r.native > 0 {
			ratio = fmt.Sprintf("%.2fx", r.native.Seconds()/r.ours.Seconds())
			other = fmtDur(r.native)
		}
		rate := func(d time.Duration) string {
			if r.changes == 0 || d == 0 {
				return "-"
			}
			return fmt.Sprintf("%.0f", float64(r.changes)/d.Seconds())
		}
		fmt.Printf("%-20s %-20s %10s %10s %-16s %8s %11s %11s  %s\n", r.section, r.what, fmtDur(r.ours), other, vs, ratio, rate(r.ours), rate(r.native), r.note)
	}
	fmt.Println("\nratio = other's time / our time (above 1 means we are faster or, for lag, lower)")
	for _, d := range b.details {
		fmt.Println()
		fmt.Println(strings.TrimRight(d, "\n"))
	}
}

// fmtDur rounds a duration for the report: milliseconds below a minute.
func fmtDur(d time.Duration) string {
	if d >= time.Minute {
		return d.Round(100 * time.Millisecond).String()
	}
	return d.Round(time.Millisecond).String()
}
