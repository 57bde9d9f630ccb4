package tests

import (
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/serenorg/postgres-seren-replicator/tests/pgtest"
)

// psSampler records the process list (ps -eo args) every few milliseconds
// until stopped, so a test can check what other local users could read.
type psSampler struct {
	stop chan struct{}
	done chan struct{}
	mu   sync.Mutex
	seen strings.Builder
}

func startPSSampler(t *testing.T) *psSampler {
	t.Helper()
	s := &psSampler{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		for {
			out, err := exec.Command("ps", "-eo", "args").Output()
			if err == nil {
				s.mu.Lock()
				s.seen.Write(out)
				s.mu.Unlock()
			}
			select {
			case <-s.stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
		}
	}()
	t.Cleanup(s.Stop)
	return s
}

// Stop ends the sampling; calling it again does nothing.
func (s *psSampler) Stop() {
	select {
	case <-s.stop:
	default:
		close(s.stop)
	}
	<-s.done
}

// Text is every process list sampled so far.
func (s *psSampler) Text() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.seen.String()
}

func httpBody(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestNoPasswordInAnyOutput runs a whole migration as a role with a
// password, given each way but the command line (password files by flag and
// variable, the environment twin, PGPASSFILE, PGPASSWORD): init, a sync
// daemon with metrics that rides out a source restart, status --json while
// it runs, verify and cleanup. The password appears in none of the outputs:
// stdout, stderr and the daemon's debug log, the /metrics, /healthz and
// /readyz bodies, and the process list sampled throughout (which shows
// pg_dump and pg_restore too).
func TestNoPasswordInAnyOutput(t *testing.T) {
	const pw = "Secret-Run-Pw-3f9a71"
	src, dst := pgtest.StartPair(t)
	setUpMover(src, dst, pw)
	pwFile := writeSecret(t, "pw", pw+"\n")
	pgpass := writeSecret(t, "pgpass", fmt.Sprintf("127.0.0.1:%d:*:mover:%s\n127.0.0.1:%d:*:mover:%s\n", src.Port, pw, dst.Port, pw))
	source, target := moverURL(src, "", "app"), moverURL(dst, "", "app")
	ps := startPSSampler(t)

	outputs := map[string]string{}
	mustRun := func(name string, env []string, args ...string) Result {
		t.Helper()
		res := runCLI(t, env, args...)
		outputs[name+" stdout"], outputs[name+" stderr"] = res.Stdout, res.Stderr
		if res.Code != 0 {
			t.Fatalf("%s: exit code %d\nstdout:\n%s\nstderr:\n%s", name, res.Code, res.Stdout, res.Stderr)
		}
		return res
	}
	mustRun("init", nil, "init", "--yes", "--log-level", "debug", "--source", source, "--target", target,
		"--source-password-file", pwFile, "--target-password-file", pwFile)

	addr := freeAddr(t)
	daemon := startSync(t, []string{"SEREN_SOURCE=" + moverURL(src, pw, "app"), "SEREN_TARGET=" + target, "SEREN_TARGET_PASSWORD_FILE=" + pwFile},
		"sync", "--metrics-addr", addr, "--log-level", "debug", "--max-retry-delay", "500ms")
	src.Exec("app", `INSERT INTO orders SELECT g, 'live' FROM generate_series(101, 200) g; UPDATE orders SET note = 'u' WHERE id <= 20`)
	eventually(t, 30*time.Second, "the first changes on the target", func() bool {
		return dst.QueryString("app", "SELECT count(*) FROM orders") == "200"
	})
	src.Restart() // the daemon logs a lost connection and reconnects
	src.Exec("app", `DELETE FROM orders WHERE id > 180; INSERT INTO orders VALUES (1000, 'after restart')`)
	eventually(t, 60*time.Second, "the changes after the restart on the target", func() bool {
		return dst.QueryString("app", "SELECT count(*) FROM orders WHERE id = 1000") == "1"
	})
	for _, path := range []string{"/metrics", "/healthz", "/readyz"} {
		outputs[path] = httpBody(t, "http://"+addr+path)
	}
	if !strings.Contains(outputs["/metrics"], "seren_replicator_") {
		t.Errorf("/metrics has no metrics of ours:\n%s", outputs["/metrics"])
	}
	st := mustRun("status --json", []string{"PGPASSFILE=" + pgpass}, "status", "--json", "--source", source, "--target", target)
	if !strings.Contains(st.Stdout, `"slot_active": true`) {
		t.Errorf("status while the daemon runs:\n%s", st.Stdout)
	}
	if !strings.Contains(ps.Text(), "sync --metrics-addr") {
		t.Errorf("the process list samples never showed the daemon")
	}
	if err := daemon.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := daemon.Wait(); err != nil {
		t.Fatalf("sync: %v\n%s", err, syncLog(daemon))
	}
	outputs["sync log"] = syncLog(daemon)
	if !strings.Contains(outputs["sync log"], "source") {
		t.Errorf("the daemon's log is missing what it did:\n%s", outputs["sync log"])
	}

	assertSameTables(t, src, dst, "app", "orders")
	mustRun("verify", []string{"PGPASSWORD=" + pw}, "verify", "--json", "--source", source, "--target", target)
	mustRun("cleanup", []string{"SEREN_SOURCE_PASSWORD_FILE=" + pwFile}, "cleanup", "--yes", "--source", source, "--target", target,
		"--target-password-file", pwFile)
	ps.Stop()
	outputs["ps -eo args"] = ps.Text()

	for name, text := range outputs {
		if strings.Contains(text, pw) {
			t.Errorf("the password appears in %s:\n%s", name, text)
		}
	}
	if strings.Contains(outputs["sync log"], "process list") {
		t.Errorf("the daemon warned about a password on the command line, where there was none:\n%s", outputs["sync log"])
	}
}
