package tests

import (
	"context"
	"math/rand/v2"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/serenorg/postgres-seren-replicator/tests/pgtest"
)

const workloadSchema = `
CREATE TABLE acct (id int PRIMARY KEY, bal bigint NOT NULL, note text);
CREATE TABLE hist (id bigserial PRIMARY KEY, acct int NOT NULL, delta int NOT NULL, at timestamptz NOT NULL DEFAULT now());
`

var workloadTables = []string{"acct", "hist"}

// workload writes to acct and hist from several connections until stopped:
// inserts, updates (some of the key), deletes, multi-statement transactions.
type workload struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup
	mu     sync.Mutex
	txns   int
	errs   []error
}

func startWorkload(t *testing.T, c *pgtest.Cluster, db string, clients int) *workload {
	t.Helper()
	c.Exec(db, `INSERT INTO acct SELECT g, 0, NULL FROM generate_series(1, 200) g ON CONFLICT DO NOTHING`)
	ctx, cancel := context.WithCancel(context.Background())
	w := &workload{cancel: cancel}
	for i := 0; i < clients; i++ {
		w.wg.Add(1)
		go func(seed uint64) {
			defer w.wg.Done()
			rng := rand.New(rand.NewPCG(seed, 7))
			var conn *pgx.Conn
			for ctx.Err() == nil {
				if conn == nil {
					var err error
					if conn, err = pgx.Connect(ctx, c.DSN(db)); err != nil {
						time.Sleep(100 * time.Millisecond) // the source may be restarting
						continue
					}
				}
				id := rng.IntN(200) + 1
				delta := rng.IntN(100) - 50
				batch := &pgx.Batch{}
				batch.Queue("BEGIN")
				batch.Queue("UPDATE acct SET bal = bal + $1 WHERE id = $2", delta, id)
				batch.Queue("INSERT INTO hist (acct, delta) VALUES ($1, $2)", id, delta)
				switch rng.IntN(20) {
				case 0:
					batch.Queue("DELETE FROM hist WHERE id = (SELECT min(id) FROM hist)")
				case 1:
					batch.Queue("UPDATE acct SET note = repeat('x', 3000) || $1::text WHERE id = $2", delta, id)
				}
				batch.Queue("COMMIT")
				if err := conn.SendBatch(ctx, batch).Close(); err != nil {
					conn.Close(context.Background())
					conn = nil
					continue
				}
				w.mu.Lock()
				w.txns++
				w.mu.Unlock()
			}
			if conn != nil {
				conn.Close(context.Background())
			}
		}(uint64(i + 1))
	}
	return w
}

// stop ends the workload and returns how many transactions it committed.
func (w *workload) stop() int {
	w.cancel()
	w.wg.Wait()
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.txns
}

// startSync starts a sync daemon in the background.
func startSync(t *testing.T, env []string, args ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(binary, args...)
	cmd.Env = append(cleanEnv(), env...)
	logFile, err := os.CreateTemp(t.TempDir(), "sync-*.log")
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
		logFile.Close()
	})
	return cmd
}

// syncLog returns what a background sync printed.
func syncLog(cmd *exec.Cmd) string {
	f, ok := cmd.Stdout.(*os.File)
	if !ok {
		return ""
	}
	b, _ := os.ReadFile(f.Name())
	return string(b)
}

// Kill the daemon with SIGKILL at random moments under a concurrent write
// workload, restart it each time, and prove the target ends equal to the
// source row for row: no change lost, none applied twice.
func TestSyncSurvivesKill9Loop(t *testing.T) {
	src, dst := pgtestPair(t)
	prepareStreaming(t, src, dst, "bank", workloadSchema, "public.acct", "public.hist")
	w := startWorkload(t, src, "bank", 4)
	rng := rand.New(rand.NewPCG(42, 42))
	rounds, streamed := 12, 0
	if os.Getenv("SEREN_LONG_TESTS") != "" {
		rounds = 40
	}
	for i := 0; i < rounds; i++ {
		cmd := startSync(t, nil, syncArgs(src, dst, "bank", "--max-retry-delay", "200ms")...)
		time.Sleep(time.Duration(600+rng.IntN(1900)) * time.Millisecond)
		if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		cmd.Wait()
		if strings.Contains(syncLog(cmd), "msg=streaming") {
			streamed++
		}
	}
	txns := w.stop()
	catchUp(t, src, dst, "bank")
	assertSameTables(t, src, dst, "bank", workloadTables...)
	t.Logf("%d workload transactions, %d rounds of kill -9, %d of them while streaming", txns, rounds, streamed)
	if streamed < rounds/2 {
		t.Errorf("only %d of %d rounds were killed while streaming", streamed, rounds)
	}
	if txns < 100 {
		t.Fatalf("workload committed only %d transactions: the test proved little", txns)
	}
}

// SIGTERM stops the daemon cleanly: exit 0, the last batch committed and
// its position reported to the source as flushed.
func TestSyncStopsCleanlyOnSIGTERM(t *testing.T) {
	src, dst := pgtestPair(t)
	prepareStreaming(t, src, dst, "bank", workloadSchema, "public.acct", "public.hist")
	w := startWorkload(t, src, "bank", 2)
	cmd := startSync(t, nil, syncArgs(src, dst, "bank")...)
	time.Sleep(2 * time.Second)
	w.stop()
	eventually(t, 30*time.Second, "target to catch up", func() bool {
		return tableContents(t, src, "bank", "hist") == tableContents(t, dst, "bank", "hist")
	})
	start := time.Now()
	cmd.Process.Signal(syscall.SIGTERM)
	err := cmd.Wait()
	if err != nil {
		t.Fatalf("sync after SIGTERM: %v\n%s", err, syncLog(cmd))
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("SIGTERM took %s to stop sync", took)
	}
	slot := src.QueryString("bank", "SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = 'seren_bank'")
	ckpt := dst.QueryString("bank", "SELECT end_lsn FROM seren_replicator.checkpoint WHERE slot_name = 'seren_bank'")
	if slot != ckpt {
		t.Errorf("after a clean stop the slot is at %s but the checkpoint at %s: the final position was not reported", slot, ckpt)
	}
	assertSameTables(t, src, dst, "bank", workloadTables...)
}

// eventually polls cond until it holds or the limit passes.
func eventually(t *testing.T, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", limit, what)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
