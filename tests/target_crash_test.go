package tests

import (
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/serenorg/postgres-seren-replicator/tests/pgtest"
)

// The apply session commits without waiting for the target's WAL flush,
// and acknowledges a position to the source only once the target has
// flushed the commit that carried it. Crash the target (SIGKILL to every
// server process: WAL not yet written is lost, with the commits in it)
// while sync applies a workload, in both apply modes: the slot's confirmed
// position is never past the checkpoint the target recovers, and after the
// target and sync restart the target equals the source row for row.
func TestSyncSurvivesTargetCrash(t *testing.T) {
	for _, mode := range []string{"replica", "ordered"} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			targetCrashes(t, mode)
		})
	}
	t.Run("restarted sync", func(t *testing.T) {
		t.Parallel()
		crashAfterRestart(t)
	})
}

func targetCrashes(t *testing.T, mode string) {
	src, dst := pgtestPair(t)
	prepareStreaming(t, src, dst, "bank", workloadSchema, "public.acct", "public.hist")
	target := dst.URL("postgres", "", "bank")
	if mode == "ordered" {
		dst.CreateRole("applier", "applier-pw")
		dst.Exec("bank", `GRANT USAGE, CREATE ON SCHEMA public, seren_replicator TO applier;
			GRANT ALL ON ALL TABLES IN SCHEMA seren_replicator TO applier;
			ALTER TABLE acct OWNER TO applier; ALTER TABLE hist OWNER TO applier;`)
		target = dst.URL("applier", "applier-pw", "bank")
	}
	args := []string{"sync", "--source", src.URL("postgres", "", "bank"), "--target", target, "--max-retry-delay", "200ms"}
	w := startWorkload(t, src, "bank", 4)
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 5))
	rounds, lost := 2, 0
	if os.Getenv("SEREN_LONG_TESTS") != "" {
		rounds = 20
	}
	for i := range rounds {
		daemon := startSync(t, nil, args...)
		time.Sleep(time.Duration(1500+rng.IntN(1500)) * time.Millisecond)
		before := checkpointOf(dst, "bank")
		crash(t, dst)
		// Let sync report whatever it still would, then stop it.
		time.Sleep(500 * time.Millisecond)
		if err := daemon.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		daemon.Wait()
		dst.Restart()
		after := checkpointOf(dst, "bank")
		confirmed := src.QueryString("bank", "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = 'seren_bank'")
		if src.QueryString("bank", "SELECT ($1::pg_lsn > $2::pg_lsn)::text", confirmed, after) == "true" {
			t.Fatalf("round %d: the slot confirmed %s but the target recovered its checkpoint at %s (it was at %s before the crash): the changes in between are gone from the source\nsync log:\n%s",
				i, confirmed, after, before, syncLog(daemon))
		}
		if src.QueryString("bank", "SELECT ($1::pg_lsn < $2::pg_lsn)::text", after, before) == "true" {
			lost++
		}
		t.Logf("round %d: checkpoint %s before the crash, %s after; slot confirmed %s", i, before, after, confirmed)
	}
	txns := w.stop()
	if res := runCLI(t, nil, append(args, "--catch-up")...); res.Code != 0 {
		t.Fatalf("sync --catch-up exit %d\nstdout: %s\nstderr: %s", res.Code, res.Stdout, res.Stderr)
	}
	for _, tbl := range workloadTables {
		sum := "SELECT md5(coalesce(string_agg(x::text, E'\\n' ORDER BY x::text), '')) FROM " + tbl + " x"
		if got, want := dst.QueryString("bank", sum), src.QueryString("bank", sum); got != want {
			t.Errorf("table %s: target md5 %s, source md5 %s", tbl, got, want)
		}
	}
	assertSameTables(t, src, dst, "bank", workloadTables...)
	t.Logf("%d workload transactions, %d target crashes, %d of them lost commits the target had made visible", txns, rounds, lost)
	if txns < 100 {
		t.Fatalf("workload committed only %d transactions: the test proved little", txns)
	}
}

// crash kills every process of c's server with SIGKILL, as a power loss
// would end them: WAL still in the server's buffers is lost.
func crash(t *testing.T, c *pgtest.Cluster) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(c.DataDir, "postmaster.pid"))
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.SplitN(string(b), "\n", 2)[0])
	if err != nil {
		t.Fatal(err)
	}
	// pg_ctl starts the postmaster in a session of its own: its process
	// group holds every server process.
	if err := syscall.Kill(-pid, syscall.SIGKILL); err != nil {
		t.Fatalf("kill the target's processes: %v", err)
	}
	for syscall.Kill(pid, 0) == nil {
		time.Sleep(10 * time.Millisecond)
	}
}

// A sync killed right after a commit leaves a checkpoint that is visible on
// the target but not yet flushed (the WAL writer here waits 10 s). The next
// sync resumes from it and reports that position to the source as where it
// starts: it must first make it durable, or a target crash then loses what
// the source already forgot.
func crashAfterRestart(t *testing.T) {
	src := pgtest.Start(t, pgtest.Options{})
	dst := pgtest.Start(t, pgtest.Options{Settings: []string{"wal_writer_delay = '10s'"}})
	prepareStreaming(t, src, dst, "bank", workloadSchema, "public.acct", "public.hist")
	args := syncArgs(src, dst, "bank", "--max-retry-delay", "200ms")
	w := startWorkload(t, src, "bank", 2)
	first := startSync(t, nil, args...)
	time.Sleep(2 * time.Second)
	w.stop()
	eventually(t, 30*time.Second, "target to catch up", func() bool {
		return tableContents(t, src, "bank", "hist") == tableContents(t, dst, "bank", "hist")
	})
	time.Sleep(1500 * time.Millisecond) // past the keepalive checkpoints' forced flushes
	src.Exec("bank", "INSERT INTO hist (acct, delta) VALUES (1, 12345)")
	deadline := time.Now().Add(10 * time.Second)
	for dst.QueryString("bank", "SELECT count(*)::text FROM hist WHERE delta = 12345") != "1" {
		if time.Now().After(deadline) {
			t.Fatalf("the last change did not reach the target\n%s", syncLog(first))
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := first.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	first.Wait()
	visible := checkpointOf(dst, "bank")
	second := startSync(t, nil, args...)
	eventually(t, 30*time.Second, "the second sync to stream", func() bool { return strings.Contains(syncLog(second), "msg=streaming") })
	time.Sleep(300 * time.Millisecond)
	crash(t, dst)
	time.Sleep(300 * time.Millisecond)
	if err := second.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	second.Wait()
	dst.Restart()
	after := checkpointOf(dst, "bank")
	confirmed := src.QueryString("bank", "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = 'seren_bank'")
	t.Logf("checkpoint %s visible before the restart, %s after the crash; slot confirmed %s", visible, after, confirmed)
	if src.QueryString("bank", "SELECT ($1::pg_lsn > $2::pg_lsn)::text", confirmed, after) == "true" {
		t.Fatalf("the slot confirmed %s but the target recovered its checkpoint at %s\nsecond sync log:\n%s", confirmed, after, syncLog(second))
	}
	catchUp(t, src, dst, "bank")
	assertSameTables(t, src, dst, "bank", workloadTables...)
}
