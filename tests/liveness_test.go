package tests

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/serenorg/postgres-seren-replicator/tests/pgtest"
)

// A replication connection that turns into a black hole (open, carrying
// nothing) is noticed on our side and reopened, even when the source's
// wal_sender_timeout is off and nothing else would ever end it.
func TestSyncReconnectsWhenTheSourceConnectionIsBlackholed(t *testing.T) {
	src := pgtest.Start(t, pgtest.Options{BinDir: os.Getenv("PG_SOURCE_BINDIR"), Settings: []string{"wal_sender_timeout = 0"}})
	dst := pgtest.Start(t, pgtest.Options{BinDir: os.Getenv("PG_TARGET_BINDIR")})
	prepareStreaming(t, src, dst, "live", `CREATE TABLE t (id int PRIMARY KEY, v text);`, "public.t")
	proxy := startProxy(t, fmt.Sprintf("127.0.0.1:%d", src.Port))

	cmd := startSync(t, nil, "sync", "--source", proxy.URL("live"), "--target", dst.URL("postgres", "", "live"),
		"--receive-timeout", "6s", "--status-interval", "1s", "--max-retry-delay", "1s")
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("sync log:\n%s", syncLog(cmd))
		}
	})
	src.Exec("live", `INSERT INTO t VALUES (1, 'before')`)
	eventually(t, 30*time.Second, "first row applied", func() bool {
		return dst.QueryString("live", "SELECT count(*) FROM t") == "1"
	})

	proxy.BlackholeExisting()
	src.Exec("live", `INSERT INTO t SELECT g, 'during' FROM generate_series(2, 100) g`)
	eventually(t, 45*time.Second, "rows written after the black hole applied through a new connection", func() bool {
		return dst.QueryString("live", "SELECT count(*) FROM t") == "100"
	})
	log := syncLog(cmd)
	for _, want := range []string{"receive_timeout=6s", "source does not answer on the replication connection", "the source sent nothing for", "reconnecting"} {
		if !strings.Contains(log, want) {
			t.Errorf("sync log lacks %q:\n%s", want, log)
		}
	}
	cmd.Process.Signal(syscall.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("sync: %v\n%s", err, syncLog(cmd))
	}
	assertSameTables(t, src, dst, "live", "t")
}

// An idle source stays quiet on the replication connection for as long as
// nothing is written; that is not a stall, and must not cause reconnects.
func TestSyncIdleSourceIsNotAStall(t *testing.T) {
	// wal_sender_timeout 0 keeps the receive timeout at the flag's value.
	src := pgtest.Start(t, pgtest.Options{Settings: []string{"wal_sender_timeout = 0"}})
	dst := pgtest.Start(t, pgtest.Options{})
	prepareStreaming(t, src, dst, "idle", `CREATE TABLE t (id int PRIMARY KEY);`, "public.t")
	addr := freeAddr(t)
	cmd := startSync(t, nil, syncArgs(src, dst, "idle", "--receive-timeout", "4s", "--metrics-addr", addr)...)
	eventually(t, 30*time.Second, "streaming", func() bool { code, _ := readyz(t, addr); return code == 200 })
	time.Sleep(12 * time.Second) // three receive timeouts with nothing written
	if n := scrape(t, addr, `seren_replicator_reconnects_total{database="idle",side="source"}`); n > 0 {
		t.Errorf("%v source reconnects while the source was idle:\n%s", n, syncLog(cmd))
	}
	src.Exec("idle", `INSERT INTO t VALUES (1)`)
	eventually(t, 20*time.Second, "row applied", func() bool { return dst.QueryString("idle", "SELECT count(*) FROM t") == "1" })
	cmd.Process.Signal(syscall.SIGTERM)
	cmd.Wait()
}

// Lag is about this migration's transactions: a busy neighbouring database
// on the source does not make an idle, caught-up database look behind. A
// target lock that holds a batch back is logged with the blocking session,
// shown as lag and a stall metric, and makes /readyz say why.
func TestSyncLagAndStallsAreTrue(t *testing.T) {
	src, dst := pgtestPair(t)
	prepareStreaming(t, src, dst, "quiet", `CREATE TABLE t (id int PRIMARY KEY, v text);`, "public.t")
	src.Exec("postgres", "CREATE DATABASE busy")
	src.Exec("busy", "CREATE TABLE b (id bigserial PRIMARY KEY, v text)")
	addr := freeAddr(t)
	cmd := startSync(t, nil, syncArgs(src, dst, "quiet", "--metrics-addr", addr, "--max-lag", "3s", "--stall-warning", "2s")...)
	src.Exec("quiet", `INSERT INTO t VALUES (1, 'a')`)
	eventually(t, 30*time.Second, "first row applied", func() bool { return dst.QueryString("quiet", "SELECT count(*) FROM t") == "1" })

	// 15 s of commits in the other database: three lag samples.
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	busy := src.Connect("busy")
	var maxLag float64
	notReady := ""
	for next := time.Now(); ctx.Err() == nil; {
		busy.Exec(ctx, `INSERT INTO b (v) VALUES ('x')`)
		if time.Now().After(next) {
			next = time.Now().Add(time.Second)
			maxLag = max(maxLag, scrape(t, addr, `seren_replicator_lag_seconds{database="quiet"}`))
			if code, body := readyz(t, addr); code != 200 {
				notReady = body
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	if maxLag > 0 || notReady != "" {
		t.Errorf("caught up with a busy neighbour: max lag_seconds %v, /readyz %q", maxLag, notReady)
	}

	// A session on the target holds a lock the next batch needs.
	locker := dst.Connect("quiet")
	lctx := context.Background()
	if _, err := locker.Exec(lctx, "BEGIN; LOCK TABLE t IN ACCESS EXCLUSIVE MODE"); err != nil {
		t.Fatal(err)
	}
	lockerPID := locker.PgConn().PID()
	src.Exec("quiet", `INSERT INTO t VALUES (2, 'b')`)
	eventually(t, 30*time.Second, "stall reported", func() bool {
		code, body := readyz(t, addr)
		return code == 503 && strings.Contains(body, "waited on the target") &&
			scrape(t, addr, `seren_replicator_stall_seconds{database="quiet",side="target"}`) >= 2 &&
			scrape(t, addr, `seren_replicator_lag_seconds{database="quiet"}`) > 0
	})
	if log, want := syncLog(cmd), fmt.Sprintf("blocked by pid %d", lockerPID); !strings.Contains(log, "a batch is waiting on the target") || !strings.Contains(log, want) {
		t.Errorf("sync log does not name the blocking session (%s):\n%s", want, log)
	}
	if _, err := locker.Exec(lctx, "COMMIT"); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "applied, lag 0 and ready again", func() bool {
		code, _ := readyz(t, addr)
		return dst.QueryString("quiet", "SELECT count(*) FROM t") == "2" && code == 200 &&
			scrape(t, addr, `seren_replicator_lag_seconds{database="quiet"}`) == 0 &&
			scrape(t, addr, `seren_replicator_stall_seconds{database="quiet",side="target"}`) == 0
	})
	cmd.Process.Signal(syscall.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("sync: %v\n%s", err, syncLog(cmd))
	}
	assertSameTables(t, src, dst, "quiet", "t")
	// The source's default wal_sender_timeout (60 s) raises the default
	// receive timeout (60 s) to twice it: a walsender busy decoding answers
	// only about every wal_sender_timeout/2.
	if !strings.Contains(syncLog(cmd), "receive_timeout=2m0s") {
		t.Errorf("the receive timeout was not raised to twice wal_sender_timeout:\n%s", syncLog(cmd))
	}
}

func readyz(t *testing.T, addr string) (int, string) {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/readyz")
	if err != nil {
		return 0, err.Error() // not listening yet
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}
