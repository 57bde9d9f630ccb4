package tests

import (
	"encoding/json"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/serenorg/postgres-seren-replicator/tests/pgtest"
	"github.com/serenorg/postgres-seren-replicator/verify"
)

const verifyDirectSchema = `
CREATE TABLE gone (id int PRIMARY KEY, v text NOT NULL);
CREATE TABLE changed (id int PRIMARY KEY, v text NOT NULL);
INSERT INTO changed SELECT g, 'v' || g FROM generate_series(1, 4000) g;
`

// runVerifyDB runs verify --json on db and parses the report.
func runVerifyDB(t *testing.T, src, dst *pgtest.Cluster, db string, args ...string) (Result, verify.Report, time.Duration) {
	t.Helper()
	start := time.Now()
	res := runCLI(t, nil, append([]string{"verify", "--json", "--source", src.DSN(db), "--target", dst.DSN(db)}, args...)...)
	took := time.Since(start)
	var rep verify.Report
	if err := json.Unmarshal([]byte(res.Stdout), &rep); err != nil {
		t.Fatalf("verify --json output does not parse after %s (exit %d): %v\nstdout: %s\nstderr: %s", took, res.Code, err, res.Stdout, res.Stderr)
	}
	if len(rep.Databases) != 1 {
		t.Fatalf("report has %d databases, want 1:\n%s", len(rep.Databases), res.Stdout)
	}
	return res, rep, took
}

// tableByName finds a table's report.
func tableByName(t *testing.T, rep verify.Report, name string) verify.TableReport {
	t.Helper()
	for _, tr := range rep.Databases[0].Tables {
		if tr.Name == name {
			return tr
		}
	}
	t.Fatalf("report lacks table %s: %+v", name, rep.Databases[0].Tables)
	return verify.TableReport{}
}

// With replication set up but no sync running, nothing moves on the target:
// verify compares once, without waiting for a checkpoint that cannot move
// and without re-reading each differing row.
func TestVerifyWithoutSyncComparesDirectly(t *testing.T) {
	src, dst := pgtestPair(t)
	prepareStreaming(t, src, dst, "shop", verifyDirectSchema, "public.gone", "public.changed")
	// Written after the slot's start, as if sync had stopped before applying it.
	src.Exec("shop", `INSERT INTO gone SELECT g, 'v' || g FROM generate_series(1, 1000) g`)
	dst.Exec("shop", `UPDATE changed SET v = v || '!'`)

	tests := []struct {
		name    string
		args    []string
		named   int64
		limitIn time.Duration
	}{
		{"default limit", nil, 100, 20 * time.Second},
		{"small limit", []string{"--max-diff-rows", "7"}, 7, 20 * time.Second},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res, rep, took := runVerifyDB(t, src, dst, "shop", tc.args...)
			t.Logf("verify took %s", took)
			if took > tc.limitIn {
				t.Errorf("verify took %s, want under %s", took, tc.limitIn)
			}
			if res.Code != 1 || rep.Match {
				t.Errorf("exit code %d, match %v; want 1 and false\nstderr: %s", res.Code, rep.Match, res.Stderr)
			}
			if c := rep.Databases[0].Consistency; !strings.HasPrefix(c, "direct: no sync running for slot seren_shop") {
				t.Errorf("consistency = %q, want a direct comparison", c)
			}
			for _, want := range []struct {
				table    string
				src, dst int64
				kind     string
			}{
				{"gone", 1000, 0, verify.MissingOnTarget},
				{"changed", 4000, 4000, verify.Changed},
			} {
				tr := tableByName(t, rep, want.table)
				if tr.Status != verify.StatusMismatch || tr.SourceRows != want.src || tr.TargetRows != want.dst {
					t.Errorf("%s: status %s, rows %d/%d; want mismatch, %d/%d", want.table, tr.Status, tr.SourceRows, tr.TargetRows, want.src, want.dst)
				}
				if tr.DifferingRows != tc.named || tr.Complete || tr.Retries != 0 || tr.Unconfirmed {
					t.Errorf("%s: %d rows named, complete %v, retries %d, unconfirmed %v; want %d, false, 0, false",
						want.table, tr.DifferingRows, tr.Complete, tr.Retries, tr.Unconfirmed, tc.named)
				}
				for _, r := range tr.Ranges {
					for _, row := range r.Rows {
						if row.Kind != want.kind || row.Unconfirmed {
							t.Errorf("%s: row %v is %s (unconfirmed %v), want %s", want.table, row.Key, row.Kind, row.Unconfirmed, want.kind)
						}
					}
				}
			}
		})
	}
}

// While sync runs, verify waits for it and re-checks: a light workload is
// no mismatch, a row deleted on the target is, and the re-checks of many
// differing rows end when the re-check time runs out.
func TestVerifyWithSyncRunning(t *testing.T) {
	src, dst := pgtestPair(t)
	prepareStreaming(t, src, dst, "bank", workloadSchema, "public.acct", "public.hist")
	src.Exec("bank", `INSERT INTO hist (acct, delta) SELECT 1 + g % 200, g % 7 FROM generate_series(1, 20000) g`)
	cmd := startSync(t, nil, syncArgs(src, dst, "bank")...)
	eventually(t, 60*time.Second, "initial rows to arrive", func() bool {
		return dst.QueryString("bank", "SELECT count(*) FROM hist") == "20000"
	})
	w := startWorkload(t, src, "bank", 1)
	defer w.stop()
	running := func(t *testing.T, rep verify.Report) {
		t.Helper()
		if c := rep.Databases[0].Consistency; !strings.HasPrefix(c, "sync running (pid ") {
			t.Errorf("consistency = %q, want it to name the running sync", c)
		}
	}

	t.Run("light workload matches", func(t *testing.T) {
		res, rep, took := runVerifyDB(t, src, dst, "bank", "--chunk-rows", "5000")
		t.Logf("verify took %s", took)
		if res.Code != 0 || !rep.Match {
			t.Fatalf("exit code %d, match %v; want 0 and true\n%s\n%s", res.Code, rep.Match, res.Stdout, res.Stderr)
		}
		running(t, rep)
		for _, tr := range rep.Databases[0].Tables {
			if tr.SourceRows != tr.TargetRows {
				t.Errorf("%s matches but counts %d rows on the source and %d on the target", tr.Name, tr.SourceRows, tr.TargetRows)
			}
		}
	})

	t.Run("row deleted on the target differs", func(t *testing.T) {
		dst.Exec("bank", `DELETE FROM hist WHERE id = 15000`)
		res, rep, took := runVerifyDB(t, src, dst, "bank", "--chunk-rows", "5000")
		t.Logf("verify took %s", took)
		if res.Code != 1 || rep.Match {
			t.Fatalf("exit code %d, match %v; want 1 and false\n%s", res.Code, rep.Match, res.Stderr)
		}
		running(t, rep)
		if tr := tableByName(t, rep, "acct"); tr.Status != verify.StatusMatch {
			t.Errorf("acct is %s, want match: %+v", tr.Status, tr.Ranges)
		}
		tr := tableByName(t, rep, "hist")
		if got := rowKeys(tr); !slices.Equal(got, []string{"missing_on_target:15000"}) || !tr.Complete || tr.Unconfirmed {
			t.Errorf("hist rows %q, complete %v, unconfirmed %v; want the deleted row, complete, confirmed", got, tr.Complete, tr.Unconfirmed)
		}
	})

	t.Run("re-checks end when the re-check time runs out", func(t *testing.T) {
		dst.Exec("bank", `DELETE FROM hist WHERE id BETWEEN 16001 AND 17000`)
		res, rep, took := runVerifyDB(t, src, dst, "bank", "--chunk-rows", "5000", "--max-diff-rows", "500", "--recheck-time", "3s")
		t.Logf("verify took %s", took)
		if took > 30*time.Second {
			t.Errorf("verify took %s, want well under 30s with --recheck-time 3s", took)
		}
		if res.Code != 1 || rep.Match {
			t.Fatalf("exit code %d, match %v; want 1 and false\n%s", res.Code, rep.Match, res.Stderr)
		}
		if c := rep.Databases[0].Consistency; !strings.Contains(c, "re-check time (3s) ran out") {
			t.Errorf("consistency = %q, want it to say the re-check time ran out", c)
		}
		tr := tableByName(t, rep, "hist")
		unconfirmed := 0
		for _, r := range tr.Ranges {
			for _, row := range r.Rows {
				// Chunks are compared in parallel, so a chunk the workload
				// is writing may name rows in flight before the deleted
				// ones fill the limit; those can only be unconfirmed.
				if row.Unconfirmed {
					unconfirmed++
					continue
				}
				id, _ := strconv.Atoi(row.Key[0])
				if row.Kind != verify.MissingOnTarget || id < 16001 || id > 17000 {
					t.Errorf("confirmed row %v is %s, want a deleted row (16001-17000) missing on target", row.Key, row.Kind)
				}
			}
		}
		// The workload keeps writing while the re-checks are cut short, so
		// the two sides' counts are read at different moments: about 1001
		// fewer on the target, give or take what is in flight.
		if d := tr.SourceRows - tr.TargetRows; tr.DifferingRows != 500 || unconfirmed == 0 || d < 1001-50 || d > 1001+50 {
			t.Errorf("hist: %d rows named, %d unconfirmed, rows %d/%d; want 500, some unconfirmed, about 1001 fewer on the target",
				tr.DifferingRows, unconfirmed, tr.SourceRows, tr.TargetRows)
		}
	})

	t.Run("no re-checks: differences are unconfirmed", func(t *testing.T) {
		res, rep, _ := runVerifyDB(t, src, dst, "bank", "--include-tables", "bank.hist", "--chunk-rows", "5000", "--max-diff-rows", "5", "--recheck-time", "0")
		if res.Code != 1 || !strings.Contains(res.Stderr, "run verify again") {
			t.Errorf("exit code %d, stderr %q; want 1 and advice to run verify again", res.Code, res.Stderr)
		}
		if tr := onlyTable(t, rep); !tr.Unconfirmed || tr.Retries != 0 || tr.DifferingRows != 5 {
			t.Errorf("hist: unconfirmed %v, retries %d, %d rows named; want true, 0, 5", tr.Unconfirmed, tr.Retries, tr.DifferingRows)
		}
	})

	if n := w.stop(); n < 20 {
		t.Errorf("workload committed only %d transactions during verify", n)
	}
	cmd.Process.Signal(syscall.SIGTERM)
	cmd.Wait()
}
