package tests

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/serenorg/postgres-seren-replicator/tests/pgtest"
)

// Restart the target and then the source in immediate mode under load: the
// daemon reconnects with backoff and converges, nothing lost or doubled.
func TestSyncReconnectsAfterServerRestarts(t *testing.T) {
	src, dst := pgtestPair(t)
	prepareStreaming(t, src, dst, "bank", workloadSchema, "public.acct", "public.hist")
	w := startWorkload(t, src, "bank", 3)
	cmd := startSync(t, nil, syncArgs(src, dst, "bank", "--max-retry-delay", "500ms")...)
	time.Sleep(2 * time.Second)
	dst.Stop("immediate")
	time.Sleep(time.Second)
	dst.Restart()
	time.Sleep(2 * time.Second)
	src.Stop("immediate")
	time.Sleep(time.Second)
	src.Restart()
	time.Sleep(3 * time.Second)
	txns := w.stop()
	eventually(t, 90*time.Second, "target to converge", func() bool {
		return tableContents(t, src, "bank", "hist") == tableContents(t, dst, "bank", "hist") &&
			tableContents(t, src, "bank", "acct") == tableContents(t, dst, "bank", "acct")
	})
	cmd.Process.Signal(syscall.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("sync: %v\n%s", err, syncLog(cmd))
	}
	assertSameTables(t, src, dst, "bank", workloadTables...)
	t.Logf("%d transactions across two server crashes", txns)
}

// A publication whose tables are idle while other tables write heavily: the
// slot's retained WAL stays bounded because keepalive positions are
// checkpointed and reported.
func TestSyncIdlePublicationDoesNotPinWAL(t *testing.T) {
	src, dst := pgtestPair(t)
	prepareStreaming(t, src, dst, "idle", `CREATE TABLE quiet (id int PRIMARY KEY); CREATE TABLE busy (id int, pad text);`, "public.quiet")
	cmd := startSync(t, nil, syncArgs(src, dst, "idle", "--exclude-tables", "idle.busy")...)
	for i := 0; i < 8; i++ {
		src.Exec("idle", `INSERT INTO busy SELECT g, repeat('x', 1000) FROM generate_series(1, 10000) g`)
	}
	generated := src.QueryString("idle", `SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn) FROM pg_replication_slots`)
	retained := func() int64 {
		n, _ := strconv.ParseFloat(src.QueryString("idle", `SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn) FROM pg_replication_slots WHERE slot_name = 'seren_idle'`), 64)
		return int64(n)
	}
	eventually(t, 30*time.Second, "the slot to move past the busy table's WAL", func() bool { return retained() < 1<<20 })
	t.Logf("WAL written meanwhile (bytes behind right after the writes): %s; retained now: %d", generated, retained())
	cmd.Process.Signal(syscall.SIGTERM)
	cmd.Wait()
}

var peakLine = regexp.MustCompile(`peak memory (\d+) MiB`)

// A single source transaction far larger than any batch is applied
// incrementally inside one target transaction: peak memory stays bounded.
func TestSyncLargeTransactionBoundedMemory(t *testing.T) {
	rows := 100_000
	if os.Getenv("SEREN_LONG_TESTS") != "" {
		rows = 3_000_000
	}
	src, dst := pgtestPair(t)
	prepareStreaming(t, src, dst, "big", `CREATE TABLE big (id bigint PRIMARY KEY, payload text, n int);`, "public.big")
	src.Exec("big", fmt.Sprintf(`INSERT INTO big SELECT g, md5(g::text) || repeat('p', 100), 0 FROM generate_series(1, %d) g`, rows))
	src.Exec("big", `UPDATE big SET n = 1`)
	// The race detector multiplies memory: measure a plain build.
	bin := plainBinary(t)
	cmd := exec.Command(bin, syncArgs(src, dst, "big", "--catch-up")...)
	cmd.Env = cleanEnv()
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("sync: %v\n%s", err, out)
	}
	m := peakLine.FindSubmatch(out)
	if m == nil {
		t.Fatalf("no peak memory in output:\n%s", out)
	}
	peak, _ := strconv.Atoi(string(m[1]))
	t.Logf("%d-row insert and update transactions applied with peak memory %d MiB\n%s", rows, peak, out)
	if peak > 256 {
		t.Errorf("peak memory %d MiB, want at most 256 MiB", peak)
	}
	if got := dst.QueryString("big", "SELECT count(*) FILTER (WHERE n = 1) FROM big"); got != strconv.Itoa(rows) {
		t.Errorf("target has %s updated rows, want %d", got, rows)
	}
}

var plainOnce struct {
	sync.Once
	path string
	err  error
}

// plainBinary builds the command without the race detector, once.
func plainBinary(t *testing.T) string {
	t.Helper()
	plainOnce.Do(func() {
		dir, err := os.MkdirTemp("", "seren-plain-")
		if err != nil {
			plainOnce.err = err
			return
		}
		plainOnce.path = dir + "/postgres-seren-replicator"
		out, err := exec.Command("go", "build", "-o", plainOnce.path, "../cmd/postgres-seren-replicator").CombinedOutput()
		if err != nil {
			plainOnce.err = fmt.Errorf("%v\n%s", err, out)
		}
	})
	if plainOnce.err != nil {
		t.Fatal(plainOnce.err)
	}
	return plainOnce.path
}

// A target that blocks the applier for several times wal_sender_timeout must
// not make the source drop the replication connection: the stream keeps
// sending status updates while the applier (and a full event channel) waits.
func TestSyncKeepsWalsenderAliveWhileTargetBlocks(t *testing.T) {
	src := pgtest.Start(t, pgtest.Options{Settings: []string{"wal_sender_timeout = '2s'"}})
	dst := pgtest.Start(t, pgtest.Options{})
	prepareStreaming(t, src, dst, "slow", `CREATE TABLE t (id int PRIMARY KEY, v text);`, "public.t")
	// The first transaction stops the applier at the lock; the second has
	// more messages than the event channel holds, so the stream blocks too.
	src.Exec("slow", `INSERT INTO t VALUES (0, 'first')`)
	src.Exec("slow", `INSERT INTO t SELECT g, 'x' FROM generate_series(1, 20000) g`)

	lock := dst.Connect("slow")
	ctx := context.Background()
	tx, err := lock.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "LOCK TABLE t IN ACCESS EXCLUSIVE MODE"); err != nil {
		t.Fatal(err)
	}
	released := make(chan struct{})
	go func() {
		defer close(released)
		time.Sleep(6 * time.Second)
		tx.Rollback(ctx)
	}()
	res := runCLI(t, nil, syncArgs(src, dst, "slow", "--catch-up", "--status-interval", "500ms")...)
	<-released
	if res.Code != 0 {
		t.Fatalf("exit %d: %s", res.Code, res.Stderr)
	}
	if strings.Contains(res.Stderr, "reconnecting") || strings.Contains(src.Log(), "replication timeout") {
		t.Fatalf("the walsender timed out while the target was blocked:\n%s\n%s", res.Stderr, src.Log())
	}
	if got := dst.QueryString("slow", "SELECT count(*) FROM t"); got != "20001" {
		t.Fatalf("target rows = %s, want 20001", got)
	}
}
