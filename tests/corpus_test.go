package tests

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/serenorg/postgres-seren-replicator/tests/pgtest"
)

// The corpus (tests/corpus/NAME/schema.sql and workload.sql) holds schemas
// in the style of real applications with a workload for each. Each is run
// end to end in both apply modes: init while the workload writes, sync
// --catch-up while it still writes and once more after it stopped, then a
// row-for-row comparison of every table that does not use verify, and
// verify.

// corpusCase is one schema of the corpus and the init flags its selection
// needs (what the schema makes init refuse by default).
type corpusCase struct {
	name     string
	initArgs []string
}

var corpus = []corpusCase{
	{name: "ecommerce"},
	{name: "saas"},
	{name: "reporting", initArgs: []string{"--replica-identity-full", "--exclude-tables", "corpus.report.scratch"}},
}

// corpusScale sizes the seed data: small in make test, larger in make
// test-long.
func corpusScale() int {
	if os.Getenv("SEREN_LONG_TESTS") != "" {
		return 20
	}
	return 1
}

func readCorpus(t *testing.T, name, file string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("corpus", name, file))
	if err != nil {
		t.Fatal(err)
	}
	return strings.ReplaceAll(string(b), "{{scale}}", strconv.Itoa(corpusScale()))
}

// corpusWorkload runs a corpus workload from clients sessions until stopped.
type corpusWorkload struct {
	stop      context.CancelFunc
	wg        sync.WaitGroup
	txns, bad atomic.Int64
}

func startCorpusWorkload(t *testing.T, c *pgtest.Cluster, db, script string, clients int) *corpusWorkload {
	ctx, cancel := context.WithCancel(context.Background())
	w := &corpusWorkload{stop: cancel}
	for range clients {
		w.wg.Add(1)
		go func() {
			defer w.wg.Done()
			conn, err := pgx.Connect(ctx, c.DSN(db))
			if err != nil {
				return
			}
			defer conn.Close(context.Background())
			for ctx.Err() == nil {
				// One simple-protocol round trip: the script is one transaction.
				if err := conn.PgConn().Exec(ctx, script).Close(); err != nil {
					w.bad.Add(1) // a conflict between clients; the next run goes on
				} else {
					w.txns.Add(1)
				}
				time.Sleep(5 * time.Millisecond)
			}
		}()
	}
	t.Cleanup(w.halt)
	return w
}

func (w *corpusWorkload) halt() { w.stop(); w.wg.Wait() }

// tableFingerprints renders every permanent user table's rows (without
// inherited ones) as a count and an md5 in a canonical order.
func tableFingerprints(t *testing.T, c *pgtest.Cluster, db string) map[string]string {
	t.Helper()
	list := c.QueryString(db, `SELECT string_agg(format('%I.%I', n.nspname, c.relname), ',' ORDER BY 1)
		FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE c.relkind = 'r' AND c.relpersistence = 'p'
		AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'seren_replicator') AND n.nspname NOT LIKE 'pg\_%'`)
	out := map[string]string{}
	for _, table := range strings.Split(list, ",") {
		out[table] = c.QueryString(db, fmt.Sprintf(`SELECT count(*) || ' ' || md5(coalesce(string_agg(x::text, E'\n' ORDER BY x::text), '')) FROM ONLY %s x`, table))
	}
	return out
}

func TestCorpusEndToEnd(t *testing.T) {
	for _, cc := range corpus {
		t.Run(cc.name, func(t *testing.T) {
			applyModesFresh(t, func(t *testing.T, src, dst *pgtest.Cluster, target string) {
				src.Exec("postgres", "CREATE DATABASE corpus")
				src.Exec("corpus", readCorpus(t, cc.name, "schema.sql"))
				// validate predicts what init and sync then do.
				if res := runCLI(t, nil, append([]string{"validate", "--source", src.DSN("corpus"), "--target", target}, cc.validateArgs()...)...); res.Code != 0 {
					t.Fatalf("validate: exit %d\n%s\n%s", res.Code, res.Stdout, res.Stderr)
				}
				w := startCorpusWorkload(t, src, "corpus", readCorpus(t, cc.name, "workload.sql"), 2)
				time.Sleep(300 * time.Millisecond)
				args := append([]string{"init", "--yes", "--source", src.DSN("corpus"), "--target", target}, cc.initArgs...)
				if res := runCLI(t, nil, args...); res.Code != 0 {
					t.Fatalf("init: exit %d\n%s\n%s", res.Code, res.Stdout, lastLines(res.Stderr, 20))
				}
				syncArgs := append([]string{"sync", "--catch-up", "--source", src.DSN("corpus"), "--target", target}, cc.selection()...)
				time.Sleep(time.Second)
				if res := runCLI(t, nil, syncArgs...); res.Code != 0 {
					t.Fatalf("catch-up under the workload: exit %d\n%s", res.Code, lastLines(res.Stderr, 20))
				}
				time.Sleep(500 * time.Millisecond)
				w.halt()
				if w.txns.Load() == 0 {
					t.Fatalf("the workload committed nothing (%d failed runs)", w.bad.Load())
				}
				if res := runCLI(t, nil, syncArgs...); res.Code != 0 {
					t.Fatalf("final catch-up: exit %d\n%s", res.Code, lastLines(res.Stderr, 20))
				}
				want, got := tableFingerprints(t, src, "corpus"), tableFingerprints(t, dst, "corpus")
				for _, skipped := range cc.excluded() {
					delete(want, skipped)
				}
				for table, fp := range want {
					if got[table] != fp {
						t.Errorf("%s: target %q, source %q", table, got[table], fp)
					}
				}
				if len(got) != len(want) {
					t.Errorf("target has %d tables, source %d selected", len(got), len(want))
				}
				res := runCLI(t, nil, append([]string{"verify", "--source", src.DSN("corpus"), "--target", target}, cc.selection()...)...)
				if res.Code != 0 {
					t.Errorf("verify: exit %d\n%s\n%s", res.Code, res.Stdout, res.Stderr)
				}
				t.Logf("%s: %d workload transactions (%d conflicts) replicated", cc.name, w.txns.Load(), w.bad.Load())
			})
		})
	}
}

// validateArgs are the init flags validate takes too (all of them).
func (c corpusCase) validateArgs() []string { return c.initArgs }

// selection are the case's selection flags, which every command repeats.
func (c corpusCase) selection() []string {
	if ex := c.excluded(); len(ex) > 0 {
		return []string{"--exclude-tables", "corpus." + strings.Join(ex, ",corpus.")}
	}
	return nil
}

// excluded are the tables a case leaves out (quoted as the fingerprints
// name them).
func (c corpusCase) excluded() []string {
	var out []string
	for i, a := range c.initArgs {
		if a == "--exclude-tables" && i+1 < len(c.initArgs) {
			for _, t := range strings.Split(c.initArgs[i+1], ",") {
				out = append(out, strings.TrimPrefix(t, "corpus."))
			}
		}
	}
	return out
}

// applyModesFresh runs an init-and-sync test once per apply mode on fresh
// clusters: replica mode as the target's superuser, ordered mode as a role
// with CREATEDB and CREATEROLE only, as on a managed service.
func applyModesFresh(t *testing.T, run func(t *testing.T, src, dst *pgtest.Cluster, target string)) {
	t.Run("replica", func(t *testing.T) {
		t.Parallel()
		src, dst := pgtestPair(t)
		run(t, src, dst, dst.DSN("corpus"))
	})
	t.Run("ordered", func(t *testing.T) {
		t.Parallel()
		src, dst := pgtestPair(t)
		dst.CreateRole("migrator", "migrator-pw", "CREATEDB", "CREATEROLE")
		run(t, src, dst, dst.URL("migrator", "migrator-pw", "corpus"))
	})
}
