// Command bench measures postgres-seren-replicator against PostgreSQL's own
// tools on two (or three) throwaway local clusters, in one run, and prints
// the ratios. Run it with `make bench`; see the README for figures.
package main

import (
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/serenorg/postgres-seren-replicator/tests/pgtest"
)

func main() {
	bin := flag.String("bin", "bin/postgres-seren-replicator", "the binary to measure")
	scale := flag.Int("scale", 30, "pgbench scale of the benchmark database")
	txns := flag.Int("txns", 10000, "pgbench transactions per client (4 clients) for the catch-up backlog")
	only := flag.String("only", "", "comma list of sections to run (catchup, mixed); empty runs all")
	syncArgs := flag.String("sync-args", "", "extra arguments for sync --catch-up (to try batch settings)")
	flag.Parse()
	h := newHarness()
	defer h.cleanup()
	b := &bench{h: h, bin: *bin, scale: *scale, txns: *txns, syncArgs: *syncArgs}
	sections := map[string]func(){"catchup": b.catchUp, "mixed": b.mixed}
	order := []string{"catchup", "mixed"}
	if *only != "" {
		order = strings.Split(*only, ",")
	}
	for _, name := range order {
		f, ok := sections[name]
		if !ok {
			fmt.Fprintf(os.Stderr, "unknown section %q\n", name)
			os.Exit(2)
		}
		f()
	}
	b.report()
}

// harness runs pgtest clusters outside a test.
type harness struct {
	cleanups []func()
}

func newHarness() *harness { return &harness{} }

func (h *harness) Helper()                           {}
func (h *harness) Fatal(args ...any)                 { h.die(fmt.Sprint(args...)) }
func (h *harness) Fatalf(format string, args ...any) { h.die(fmt.Sprintf(format, args...)) }
func (h *harness) Logf(format string, args ...any)   { fmt.Fprintf(os.Stderr, format+"\n", args...) }
func (h *harness) Cleanup(f func())                  { h.cleanups = append(h.cleanups, f) }
func (h *harness) FailNow()                          { h.die("failed") }

func (h *harness) die(msg string) {
	fmt.Fprintln(os.Stderr, "bench:", msg)
	h.cleanup()
	os.Exit(1)
}

func (h *harness) cleanup() {
	for i := len(h.cleanups) - 1; i >= 0; i-- {
		h.cleanups[i]()
	}
	h.cleanups = nil
}

var _ pgtest.TB = (*harness)(nil)

// row is one line of the final report.
type row struct {
	section, what string
	ours, native  time.Duration
	changes       int64
	note          string
}
