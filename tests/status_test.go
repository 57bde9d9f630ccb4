package tests

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/serenorg/postgres-seren-replicator/checkpoint"
	"github.com/serenorg/postgres-seren-replicator/stream"
	"github.com/serenorg/postgres-seren-replicator/tests/pgtest"
)

const statusSchema = `CREATE TABLE t (id serial PRIMARY KEY, v text);
CREATE TABLE other (id int);`

// statusReport is the part of one database's --json report the tests read.
type statusReport struct {
	Database        string   `json:"database"`
	Slot            string   `json:"slot"`
	SlotExists      bool     `json:"slot_exists"`
	SlotActive      bool     `json:"slot_active"`
	ConfirmedFlush  *string  `json:"confirmed_flush_lsn"`
	Checkpoint      *string  `json:"checkpoint_lsn"`
	RetainedBytes   int64    `json:"retained_wal_bytes"`
	LagBytes        int64    `json:"lag_bytes"`
	LagSeconds      float64  `json:"lag_seconds"`
	Pending         *bool    `json:"pending_changes"`
	SequencesBehind []string `json:"sequences_behind"`
	ReadyForCutover bool     `json:"ready_for_cutover"`
	NotReadyBecause string   `json:"not_ready_for_cutover_because"`
	Verdict         string   `json:"verdict"`
	Reason          string   `json:"reason"`
	Warnings        []string `json:"warnings"`
}

func statusArgs(src, dst *pgtest.Cluster, db string, extra ...string) []string {
	return append([]string{"status", "--source", src.URL("postgres", "", "postgres"), "--target", dst.URL("postgres", "", "postgres"),
		"--include-databases", db}, extra...)
}

// statusJSON runs status --json for db and returns its report.
func statusJSON(t *testing.T, src, dst *pgtest.Cluster, db string, extra ...string) (statusReport, Result) {
	t.Helper()
	res := runCLI(t, nil, statusArgs(src, dst, db, append([]string{"--json"}, extra...)...)...)
	var doc struct {
		Healthy   bool           `json:"healthy"`
		Databases []statusReport `json:"databases"`
	}
	if err := json.Unmarshal([]byte(res.Stdout), &doc); err != nil || len(doc.Databases) != 1 {
		t.Fatalf("status --json (exit %d): %v\nstdout: %s\nstderr: %s", res.Code, err, res.Stdout, res.Stderr)
	}
	if doc.Healthy != (res.Code == 0) {
		t.Errorf("healthy=%v but exit code %d", doc.Healthy, res.Code)
	}
	return doc.Databases[0], res
}

func sourceLSN(t *testing.T, c *pgtest.Cluster, db string) pglogrepl.LSN {
	t.Helper()
	lsn, err := pglogrepl.ParseLSN(c.QueryString(db, "pg_current_wal_lsn()"))
	if err != nil {
		t.Fatal(err)
	}
	return lsn
}

func saveCheckpoint(t *testing.T, dst *pgtest.Cluster, db string, lsn pglogrepl.LSN) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err := checkpoint.Store{}.Save(ctx, dst.Connect(db), checkpoint.Position{Slot: stream.DefaultSlotName(db), EndLSN: lsn, CommitTime: time.Now().Add(-time.Minute)})
	if err != nil {
		t.Fatal(err)
	}
}

// holdSlot streams from db's slot like a connected sync that confirmed
// flush and then stops reading, until the test ends. It returns the
// connection so a test can watch it being terminated.
func holdSlot(t *testing.T, src *pgtest.Cluster, db string, flush pglogrepl.LSN) *pgconn.PgConn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgconn.Connect(ctx, src.DSN(db)+" replication=database")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	err = pglogrepl.StartReplication(ctx, conn, stream.DefaultSlotName(db), flush, pglogrepl.StartReplicationOptions{
		PluginArgs: []string{"proto_version '1'", "publication_names '" + stream.PublicationName(stream.DefaultSlotName(db)) + "'"},
	})
	if err != nil {
		t.Fatal(err)
	}
	err = pglogrepl.SendStandbyStatusUpdate(ctx, conn, pglogrepl.StandbyStatusUpdate{
		WALWritePosition: flush, WALFlushPosition: flush, WALApplyPosition: flush, ClientTime: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "slot active", func() bool {
		return src.QueryString(db, "SELECT active FROM pg_replication_slots WHERE slot_name = $1", stream.DefaultSlotName(db)) == "true"
	})
	return conn
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestStatusVerdicts drives status through every verdict it can reach
// without a running sync; each case uses its own database on one pair.
func TestStatusVerdicts(t *testing.T) {
	src, dst := pgtestPair(t)
	type check struct {
		name       string
		setup      func(db string)
		extra      []string
		wantCode   int
		wantVerd   string
		wantReason string
		verify     func(t *testing.T, r statusReport)
	}
	checks := []check{
		{
			name: "slot_missing",
			setup: func(db string) {
				src.Exec(db, fmt.Sprintf("SELECT pg_drop_replication_slot('%s')", stream.DefaultSlotName(db)))
			},
			wantCode: 1, wantVerd: "broken", wantReason: "does not exist",
		},
		{
			name: "checkpoint_missing",
			setup: func(db string) {
				dst.Exec(db, "DROP SCHEMA seren_replicator CASCADE")
			},
			wantCode: 1, wantVerd: "broken", wantReason: "no checkpoint",
		},
		{
			name: "publication_missing",
			setup: func(db string) {
				src.Exec(db, "DROP PUBLICATION "+stream.PublicationName(stream.DefaultSlotName(db)))
			},
			wantCode: 1, wantVerd: "broken", wantReason: "publication",
		},
		{
			name: "checkpoint_behind",
			setup: func(db string) {
				confirmed, err := pglogrepl.ParseLSN(src.QueryString(db, "SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = $1", stream.DefaultSlotName(db)))
				if err != nil {
					t.Fatal(err)
				}
				saveCheckpoint(t, dst, db, confirmed-1)
			},
			wantCode: 1, wantVerd: "broken", wantReason: "behind the slot's confirmed position",
		},
		{
			// WAL from an unpublished table is not a pending change.
			name:     "healthy_idle",
			setup:    func(db string) { src.Exec(db, "INSERT INTO other SELECT generate_series(1, 1000)") },
			extra:    []string{"--retained-wal-warn", "1"},
			wantCode: 0, wantVerd: "healthy", wantReason: "caught up",
			verify: func(t *testing.T, r statusReport) {
				if r.LagBytes == 0 {
					t.Error("lag_bytes = 0, want WAL written after the checkpoint")
				}
				if r.LagSeconds != 0 || r.Pending == nil || *r.Pending {
					t.Errorf("lag_seconds %v pending %v, want 0 and false", r.LagSeconds, r.Pending)
				}
				if len(r.Warnings) != 1 || !strings.Contains(r.Warnings[0], "cleanup") {
					t.Errorf("warnings %q, want one that names cleanup", r.Warnings)
				}
			},
		},
		{
			name: "healthy_at_current_lsn",
			setup: func(db string) {
				saveCheckpoint(t, dst, db, sourceLSN(t, src, db))
			},
			wantCode: 0, wantVerd: "healthy",
			verify: func(t *testing.T, r statusReport) {
				if len(r.Warnings) != 0 {
					t.Errorf("warnings %q, want none under the default threshold", r.Warnings)
				}
			},
		},
		{
			name:     "stalled_no_sync",
			setup:    func(db string) { src.Exec(db, "INSERT INTO t (v) SELECT 'x' FROM generate_series(1, 10)") },
			wantCode: 1, wantVerd: "stalled", wantReason: "no sync is connected",
			verify: func(t *testing.T, r statusReport) {
				if r.Pending == nil || !*r.Pending || r.LagSeconds <= 0 {
					t.Errorf("pending %v lag_seconds %v, want true and > 0", r.Pending, r.LagSeconds)
				}
				if len(r.SequencesBehind) != 1 || r.SequencesBehind[0] != `"public"."t_id_seq"` {
					t.Errorf("sequences_behind %q, want t_id_seq", r.SequencesBehind)
				}
			},
		},
	}
	for _, c := range checks {
		prepareStreaming(t, src, dst, c.name, statusSchema, "public.t")
		c.setup(c.name)
	}
	for _, c := range checks {
		t.Run(c.name, func(t *testing.T) {
			r, res := statusJSON(t, src, dst, c.name, c.extra...)
			if res.Code != c.wantCode || r.Verdict != c.wantVerd || !strings.Contains(r.Reason, c.wantReason) {
				t.Errorf("got exit %d, %s: %s; want exit %d, %s: ...%s...\nstderr: %s", res.Code, r.Verdict, r.Reason, c.wantCode, c.wantVerd, c.wantReason, res.Stderr)
			}
			if c.verify != nil {
				c.verify(t, r)
			}
		})
	}

	t.Run("human", func(t *testing.T) {
		res := runCLI(t, nil, statusArgs(src, dst, "slot_missing,healthy_idle")...)
		if res.Code != 1 {
			t.Errorf("exit %d, want 1 (one database broken)", res.Code)
		}
		for _, want := range []string{"DATABASE", "VERDICT", "slot_missing: broken: replication slot seren_slot_missing does not exist", "healthy_idle: healthy"} {
			if !strings.Contains(res.Stdout, want) {
				t.Errorf("output lacks %q:\n%s", want, res.Stdout)
			}
		}
	})

	t.Run("slot_active_lagging_then_stalled", func(t *testing.T) {
		const db = "active"
		prepareStreaming(t, src, dst, db, statusSchema, "public.t")
		flush, err := pglogrepl.ParseLSN(dst.QueryString(db, "SELECT end_lsn FROM seren_replicator.checkpoint"))
		if err != nil {
			t.Fatal(err)
		}
		holdSlot(t, src, db, flush)
		src.Exec(db, "INSERT INTO t (v) SELECT 'x' FROM generate_series(1, 100)")
		waitFor(t, "walsender to send the insert", func() bool {
			return src.QueryString(db, "SELECT sent_lsn > flush_lsn FROM pg_stat_replication") == "true"
		})
		r, res := statusJSON(t, src, dst, db, "--max-lag-bytes", "1")
		if res.Code != 1 || r.Verdict != "lagging" || !r.SlotActive {
			t.Errorf("got exit %d %s (%s) active=%v, want 1 lagging active", res.Code, r.Verdict, r.Reason, r.SlotActive)
		}
		r, res = statusJSON(t, src, dst, db, "--stall-after", "1ms")
		if res.Code != 1 || r.Verdict != "stalled" || !strings.Contains(r.Reason, "nothing was applied") {
			t.Errorf("got exit %d %s (%s), want 1 stalled", res.Code, r.Verdict, r.Reason)
		}
		if r, _ = statusJSON(t, src, dst, db); r.Verdict != "healthy" || r.Reason != "streaming; not ready for cutover: changes are still being applied" {
			t.Errorf("got %s (%s), want healthy under default thresholds", r.Verdict, r.Reason)
		}
	})

	t.Run("watch", func(t *testing.T) {
		cmd := exec.Command(binary, statusArgs(src, dst, "healthy_idle", "--watch", "--interval", "200ms")...)
		cmd.Env = cleanEnv()
		var out strings.Builder
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(2 * time.Second)
		if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
			t.Fatal(err)
		}
		err := cmd.Wait()
		if err != nil {
			t.Errorf("exit %v after Ctrl-C while healthy, want 0\n%s", err, out.String())
		}
		if n := strings.Count(out.String(), "every 200ms"); n < 3 {
			t.Errorf("%d refreshes in 2s at 200ms, want several:\n%s", n, out.String())
		}
	})

	t.Run("slot_flag_with_several_databases", func(t *testing.T) {
		res := runCLI(t, nil, statusArgs(src, dst, "slot_missing,healthy_idle", "--slot", "x")...)
		if res.Code != 2 || !strings.Contains(res.Stderr, "--slot") {
			t.Errorf("exit %d, stderr %q; want 2 naming --slot", res.Code, res.Stderr)
		}
	})
	// Last: it lets the source remove WAL every slot of the cluster needs.
	t.Run("wal_lost", func(t *testing.T) {
		const db = "wal_lost"
		prepareStreaming(t, src, dst, db, statusSchema, "public.t")
		src.Exec("postgres", "ALTER SYSTEM SET max_slot_wal_keep_size = '1MB'")
		src.Exec("postgres", "SELECT pg_reload_conf()")
		waitFor(t, "the slot to lose its WAL", func() bool {
			src.Exec(db, "INSERT INTO t (v) VALUES ('x')")
			src.Exec(db, "SELECT pg_switch_wal()")
			src.Exec(db, "CHECKPOINT")
			return src.QueryString(db, "SELECT wal_status FROM pg_replication_slots WHERE slot_name = $1", stream.DefaultSlotName(db)) == "lost"
		})
		r, res := statusJSON(t, src, dst, db)
		if res.Code != 1 || r.Verdict != "broken" || !strings.Contains(r.Reason, "lost WAL") {
			t.Errorf("got exit %d %s (%s), want 1 broken naming lost WAL", res.Code, r.Verdict, r.Reason)
		}
	})
	if t.Failed() {
		fmt.Fprintln(os.Stderr, src.Log())
	}
}
