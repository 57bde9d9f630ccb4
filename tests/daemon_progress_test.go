package tests

import (
	"encoding/json"
	"strings"
	"syscall"
	"testing"
	"time"
)

// logRecords parses the JSON log lines of a run whose message is msg.
func logRecords(t *testing.T, log, msg string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, line := range strings.Split(log, "\n") {
		if !strings.HasPrefix(line, "{") {
			continue
		}
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("log line is not JSON: %v: %s", err, line)
		}
		if rec["msg"] == msg {
			out = append(out, rec)
		}
	}
	return out
}

// TestSyncLogsProgress runs the daemon with a progress line every second
// (the environment twin of --log-interval): the lines count the
// transactions and rows applied since the previous line, so they add up to
// what the source wrote; they carry the lag and the checkpoint, which ends
// at the target's. SIGTERM exits 0 after one line with the final position
// and the run's totals.
func TestSyncLogsProgress(t *testing.T) {
	src, dst := pgtestPair(t)
	const db = "progress"
	prepareStreaming(t, src, dst, db, `CREATE TABLE t (id int PRIMARY KEY, v text);`, "public.t")
	cmd := startSync(t, []string{"SEREN_LOG_INTERVAL=1s"}, syncArgs(src, dst, db, "--log-format", "json")...)
	eventually(t, 30*time.Second, "the first progress line", func() bool {
		return len(logRecords(t, syncLog(cmd), "progress")) > 0
	})
	for i := range 3 {
		src.Exec(db, `INSERT INTO t SELECT g, 'v' FROM generate_series($1::int * 100 + 1, $1::int * 100 + 100) g`, i)
	}
	src.Exec(db, `UPDATE t SET v = 'w' WHERE id <= 50`)
	sum := func(key string) (n float64) {
		for _, r := range logRecords(t, syncLog(cmd), "progress") {
			n += r[key].(float64)
		}
		return n
	}
	eventually(t, 30*time.Second, "progress lines adding up to what the source wrote", func() bool {
		return sum("applied_transactions") == 4 && sum("applied_rows") == 350
	})
	checkpoint := dst.QueryString(db, "SELECT end_lsn::text FROM seren_replicator.checkpoint")
	eventually(t, 30*time.Second, "a progress line at the target's checkpoint with the lag", func() bool {
		lines := logRecords(t, syncLog(cmd), "progress")
		last := lines[len(lines)-1]
		_, hasLag := last["lag"]
		_, hasBytes := last["lag_bytes"]
		return last["checkpoint"] == checkpoint && hasLag && hasBytes && last["database"] == db && last["interval"] == "1s"
	})
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("sync after SIGTERM: %v\n%s", err, syncLog(cmd))
	}
	stopped := logRecords(t, syncLog(cmd), "stopped; the next start resumes from the checkpoint")
	if len(stopped) != 1 {
		t.Fatalf("%d stop lines, want 1:\n%s", len(stopped), syncLog(cmd))
	}
	final := dst.QueryString(db, "SELECT end_lsn::text FROM seren_replicator.checkpoint")
	if s := stopped[0]; s["checkpoint"] != final || s["applied_rows"] != 350.0 || s["applied_transactions"] != 4.0 {
		t.Errorf("stop line %v, want checkpoint %s, 350 rows in 4 transactions", s, final)
	}
}

// TestSyncLogIntervalFlag: a negative --log-interval is a usage error,
// refused before any connection.
func TestSyncLogIntervalFlag(t *testing.T) {
	res := runCLI(t, nil, "sync", "--source", "postgres://a@127.0.0.1:1/x", "--target", "postgres://a@127.0.0.1:1/x", "--log-interval", "-1s")
	if res.Code != 2 || !strings.Contains(res.Stderr, "--log-interval") {
		t.Errorf("negative --log-interval: exit %d, stderr %q; want 2 naming the flag", res.Code, res.Stderr)
	}
}
