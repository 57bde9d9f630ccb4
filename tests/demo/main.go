// Command demo runs the whole job on two throwaway local clusters: sample
// data on a source, then validate → init → live writes → sync --catch-up →
// status → verify, printing what each step prints. `make demo` runs it.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"golang.org/x/term"

	"github.com/serenorg/postgres-seren-replicator/tests/pgtest"
)

const sampleSchema = `
CREATE TABLE customers (id bigserial PRIMARY KEY, name text NOT NULL, email text UNIQUE, created timestamptz DEFAULT now());
CREATE TABLE orders (id bigserial PRIMARY KEY, customer_id bigint REFERENCES customers, total numeric(12,2), items jsonb, note text);
CREATE INDEX ON orders (customer_id);
INSERT INTO customers (name, email) SELECT 'customer ' || g, 'c' || g || '@example.com' FROM generate_series(1, 5000) g;
INSERT INTO orders (customer_id, total, items, note)
  SELECT 1 + g % 5000, (g % 997) * 1.25, jsonb_build_object('sku', g % 50, 'qty', 1 + g % 3), repeat('n', g % 200)
  FROM generate_series(1, 100000) g;
`

func main() {
	bin := flag.String("bin", "bin/postgres-seren-replicator", "the binary to demonstrate")
	flag.Parse()
	h := &pgtest.Standalone{}
	defer h.Close()

	step("Starting two throwaway PostgreSQL clusters (source and target)")
	src, dst := pgtest.StartPair(h)
	src.Exec("postgres", "CREATE DATABASE shop")
	src.Exec("shop", sampleSchema)
	source := fmt.Sprintf("postgres://postgres@127.0.0.1:%d/shop?sslmode=disable", src.Port)
	target := fmt.Sprintf("postgres://postgres@127.0.0.1:%d/shop?sslmode=disable", dst.Port)
	fmt.Printf("source %s\ntarget %s\n", source, target)
	if os.Getenv("SEREN_LOG_LEVEL") == "" {
		fmt.Println("(the commands log warnings and errors only here; SEREN_LOG_LEVEL=info make demo shows their log too)")
	}
	conn := []string{"--source", source, "--target", target}

	step("validate: are both sides ready?")
	run(h, *bin, append([]string{"validate"}, conn...), 0)

	// Writes keep coming while init copies and while sync catches up: the
	// handover at the snapshot's consistent point must be exact.
	step("init: snapshot, schema, parallel copy — while the application keeps writing")
	w := startWrites(h, src.DSN("shop"))
	run(h, *bin, append([]string{"init", "--yes"}, conn...), 0)
	time.Sleep(2 * time.Second)
	writes := w.stop()
	fmt.Printf("(the application committed %d transactions during and after init)\n", writes)

	step("sync --catch-up: apply everything the source committed since the snapshot")
	run(h, *bin, append([]string{"sync", "--catch-up"}, conn...), 0)

	step("status: slot, checkpoint, lag")
	run(h, *bin, append([]string{"status"}, conn...), -1)

	step("verify: checksums of every table on both sides")
	run(h, *bin, append([]string{"verify"}, conn...), 0)

	step("Done. For the daemon, run: postgres-seren-replicator sync --source … --target … (see README)")
}

func step(title string) {
	if bold {
		fmt.Printf("\n\033[1m== %s\033[0m\n", title)
		return
	}
	fmt.Printf("\n== %s\n", title)
}

// bold is whether step titles are set in bold: only on a terminal, and not
// with NO_COLOR set (https://no-color.org).
var bold = term.IsTerminal(int(os.Stdout.Fd())) && os.Getenv("NO_COLOR") == ""

// childEnv is the environment of the demonstrated commands: their
// informational log lines (stderr) would break up the tables they print
// (stdout), so the demo shows warnings and errors only, unless
// SEREN_LOG_LEVEL says otherwise.
func childEnv() []string {
	if _, set := os.LookupEnv("SEREN_LOG_LEVEL"); set {
		return os.Environ()
	}
	return append(os.Environ(), "SEREN_LOG_LEVEL=warn")
}

// run runs the binary and stops the demo unless it exits with want (-1: any).
func run(h *pgtest.Standalone, bin string, args []string, want int) {
	fmt.Printf("$ postgres-seren-replicator %s\n", strings.Join(args, " "))
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	cmd.Env = childEnv()
	err := cmd.Run()
	code := 0
	if exit, ok := err.(*exec.ExitError); ok {
		code = exit.ExitCode()
	} else if err != nil {
		h.Fatalf("%s: %v", bin, err)
	}
	if want >= 0 && code != want {
		h.Fatalf("%s exited %d, want %d", args[0], code, want)
	}
}

// writer is the sample application: new orders, updated totals, deletions.
type writer struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup
	n      int
}

func startWrites(h *pgtest.Standalone, dsn string) *writer {
	ctx, cancel := context.WithCancel(context.Background())
	w := &writer{cancel: cancel}
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		conn, err := pgx.Connect(ctx, dsn)
		if err != nil {
			h.Logf("writer: %v", err)
			return
		}
		defer conn.Close(context.Background())
		for i := 0; ctx.Err() == nil; i++ {
			_, err := conn.Exec(ctx, `WITH o AS (INSERT INTO orders (customer_id, total, items) VALUES (1 + $1::int % 5000, $1::int % 100, '{"sku": 1}') RETURNING id)
				UPDATE orders SET total = total + 1 WHERE id = (SELECT id FROM o) - 50000`, i)
			if err == nil && i%10 == 0 {
				_, err = conn.Exec(ctx, `DELETE FROM orders WHERE id = (SELECT min(id) FROM orders)`)
			}
			if err != nil {
				if ctx.Err() == nil {
					h.Logf("writer: %v", err)
				}
				return
			}
			w.n++
			time.Sleep(2 * time.Millisecond)
		}
	}()
	return w
}

func (w *writer) stop() int {
	w.cancel()
	w.wg.Wait()
	return w.n
}
