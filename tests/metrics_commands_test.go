package tests

import (
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// exposition is one scrape of /metrics: value by series (name and labels as
// printed).
type exposition map[string]float64

// scrapeAll reads every series at addr, or nil when nothing answers.
func scrapeAll(t *testing.T, addr string) exposition {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil
	}
	out := exposition{}
	for _, line := range strings.Split(string(body), "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("bad exposition line %q", line)
		}
		out[line[:i]] = v
	}
	return out
}

// names are the metric names of the series.
func (e exposition) names() map[string]bool {
	out := map[string]bool{}
	for s := range e {
		if i := strings.IndexByte(s, '{'); i >= 0 {
			s = s[:i]
		}
		out[s] = true
	}
	return out
}

// startCommand runs the binary in the background with stdout and stderr
// in one file, killed at cleanup if still running.
func startCommand(t *testing.T, args ...string) (*exec.Cmd, func() string) {
	t.Helper()
	out := filepath.Join(t.TempDir(), "out")
	f, err := os.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(binary, args...)
	cmd.Env = cleanEnv()
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
		f.Close()
	})
	return cmd, func() string { b, _ := os.ReadFile(out); return string(b) }
}

// runServing runs a command that ends (init, verify) with --metrics-addr
// and --metrics-linger, waits until its output shows done, scrapes its
// final series, then stops it with SIGTERM: the linger ends and it exits 0.
func runServing(t *testing.T, done string, args ...string) exposition {
	t.Helper()
	addr := freeAddr(t)
	cmd, output := startCommand(t, append(args, "--metrics-addr", addr, "--metrics-linger", "2m")...)
	eventually(t, 90*time.Second, args[0]+" to finish its work", func() bool { return strings.Contains(output(), done) })
	e := scrapeAll(t, addr)
	if e == nil {
		t.Fatalf("%s serves no metrics after its work (--metrics-linger):\n%s", args[0], output())
	}
	if !strings.Contains(output(), "--metrics-linger") {
		t.Errorf("%s does not say it keeps serving:\n%s", args[0], output())
	}
	cmd.Process.Signal(syscall.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("%s after SIGTERM while lingering: %v\n%s", args[0], err, output())
	}
	return e
}

// TestDashboardQueriesMatchServedSeries runs init, the sync daemon and
// verify with --metrics-addr on a real migration and checks the Grafana
// dashboard against what they served: every metric a panel queries is
// served by the command its row is about (Snapshot: init, Verify: verify,
// Replication and Apply: sync), and every series of ours that a command
// serves is on the dashboard. The values are the run's: tables copied, rows
// per table, ranges compared and none differing.
func TestDashboardQueriesMatchServedSeries(t *testing.T) {
	src, dst := pgtestPair(t)
	src.Exec("postgres", "CREATE DATABASE dash")
	src.Exec("dash", `CREATE TABLE a (id int PRIMARY KEY, v text); INSERT INTO a SELECT g, repeat('x', 100) FROM generate_series(1, 3000) g;
		CREATE TABLE b (id int PRIMARY KEY); INSERT INTO b SELECT generate_series(1, 7)`)
	conn := []string{"--source", src.URL("postgres", "", "dash"), "--target", dst.URL("postgres", "", "dash")}

	served := map[string]exposition{}
	served["init"] = runServing(t, "Init is complete", append([]string{"init", "--yes"}, conn...)...)
	copied := served["init"]
	for series, want := range map[string]float64{
		`seren_replicator_snapshot_tables{database="dash"}`:                                   2,
		`seren_replicator_snapshot_tables_done{database="dash"}`:                              2,
		`seren_replicator_snapshot_table_copied_rows_total{database="dash",table="public.a"}`: 3000,
		`seren_replicator_snapshot_table_copied_rows_total{database="dash",table="public.b"}`: 7,
	} {
		if got, ok := copied[series]; !ok || got != want {
			t.Errorf("init served %s = %v (present %v), want %v", series, got, ok, want)
		}
	}
	if copied[`seren_replicator_snapshot_table_copied_bytes_total{database="dash",table="public.a"}`] < 3000*100 {
		t.Errorf("init counted fewer bytes of table a than its data")
	}

	addr := freeAddr(t)
	daemon, output := startCommand(t, append([]string{"sync", "--metrics-addr", addr, "--log-interval", "1s"}, conn...)...)
	src.Exec("dash", `INSERT INTO a SELECT g, 'new' FROM generate_series(3001, 3100) g; DELETE FROM b WHERE id = 1`)
	eventually(t, 60*time.Second, "the daemon's series after applying and sampling", func() bool {
		e := scrapeAll(t, addr)
		if e[`seren_replicator_applied_rows_total{database="dash",operation="insert",table="public.a"}`] != 100 {
			return false
		}
		served["sync"] = e
		return e.names()["seren_replicator_lag_bytes"] && e.names()["seren_replicator_slot_retained_wal_bytes"]
	})
	daemon.Process.Signal(syscall.SIGTERM)
	if err := daemon.Wait(); err != nil {
		t.Fatalf("sync: %v\n%s", err, output())
	}

	served["verify"] = runServing(t, "all tables match", append([]string{"verify"}, conn...)...)
	ver := served["verify"]
	ranges := ver[`seren_replicator_verify_ranges{database="dash"}`]
	if ranges < 2 || ver[`seren_replicator_verify_ranges_done_total{database="dash"}`] != ranges ||
		ver[`seren_replicator_verify_ranges_differing_total{database="dash"}`] != 0 ||
		ver[`seren_replicator_verify_rows_compared_total{database="dash"}`] != 3100+6 {
		t.Errorf("verify served ranges %v, done %v, differing %v, rows %v; want all done, none differing, 3106 rows", ranges,
			ver[`seren_replicator_verify_ranges_done_total{database="dash"}`], ver[`seren_replicator_verify_ranges_differing_total{database="dash"}`],
			ver[`seren_replicator_verify_rows_compared_total{database="dash"}`])
	}

	var dash struct {
		Panels []struct {
			Type, Title string
			Targets     []struct{ Expr string }
		}
	}
	if err := json.Unmarshal([]byte(readDeploy(t, filepath.Join("grafana", "postgres-seren-replicator.json"))), &dash); err != nil {
		t.Fatal(err)
	}
	byRow := map[string][]string{
		"Replication": {"sync"}, "Apply": {"sync"}, "Snapshot (init)": {"init"}, "Verify": {"verify"}, "Process": {"init", "sync", "verify"},
	}
	metricRe := regexp.MustCompile(`\b((?:seren_replicator|go|process)_[a-z0-9_]+)\b`)
	onDashboard := map[string]bool{}
	row, queries := "", 0
	for _, p := range dash.Panels {
		if p.Type == "row" {
			row = p.Title
			if _, ok := byRow[row]; !ok {
				t.Errorf("dashboard row %q: no test knows which command fills it", row)
			}
			continue
		}
		for _, target := range p.Targets {
			queries++
			for _, name := range metricRe.FindAllString(target.Expr, -1) {
				onDashboard[name] = true
				for _, cmd := range byRow[row] {
					if !served[cmd].names()[name] {
						t.Errorf("row %q, panel %q: %s serves no %s (%s)", row, p.Title, cmd, name, target.Expr)
					}
				}
			}
		}
	}
	if queries < 20 {
		t.Fatalf("read only %d queries from the dashboard", queries)
	}
	for cmd, e := range served {
		for name := range e.names() {
			base := strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(name, "_bucket"), "_sum"), "_count")
			if strings.HasPrefix(name, "seren_replicator_") && !onDashboard[name] && !onDashboard[base+"_bucket"] && !onDashboard[base+"_sum"] {
				t.Errorf("%s serves %s, which no dashboard panel shows", cmd, name)
			}
		}
	}
}
