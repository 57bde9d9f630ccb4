package tests

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// scrape fetches /metrics and returns the value of the first sample whose
// line starts with prefix (name and labels), or -1.
func scrape(t *testing.T, addr, prefix string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(body), "\n") {
		if strings.HasPrefix(line, prefix) {
			f := strings.Fields(line)
			v, _ := strconv.ParseFloat(f[len(f)-1], 64)
			return v
		}
	}
	return -1
}

func freeAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// The daemon's metrics move as it works: rows applied equal rows written,
// the checkpoint gauge follows the target, lag returns to zero; systemd
// hears READY=1, STATUS= and STOPPING=1.
func TestSyncMetricsAndNotify(t *testing.T) {
	src, dst := pgtestPair(t)
	prepareStreaming(t, src, dst, "ops", `CREATE TABLE t (id int PRIMARY KEY, v text);`, "public.t")
	addr := freeAddr(t)

	sockPath := filepath.Join(t.TempDir(), "notify.sock")
	sock, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sockPath, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer sock.Close()
	notes := make(chan string, 100)
	go func() {
		buf := make([]byte, 4096)
		for {
			n, _, err := sock.ReadFromUnix(buf)
			if err != nil {
				close(notes)
				return
			}
			notes <- string(buf[:n])
		}
	}()

	envFile := filepath.Join(t.TempDir(), "env")
	if err := os.WriteFile(envFile, []byte("SEREN_LOG_LEVEL=info\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := startSync(t, []string{"NOTIFY_SOCKET=" + sockPath, "SEREN_ENV_FILE=" + envFile}, syncArgs(src, dst, "ops", "--metrics-addr", addr)...)
	waitNote(t, notes, "READY=1")
	if code := httpStatus(t, addr, "/healthz"); code != 200 {
		t.Errorf("/healthz = %d", code)
	}
	if code := httpStatus(t, addr, "/readyz"); code != 200 {
		t.Errorf("/readyz = %d while streaming", code)
	}
	src.Exec("ops", `INSERT INTO t SELECT g, 'v' FROM generate_series(1, 1234) g; UPDATE t SET v = 'w' WHERE id <= 100; DELETE FROM t WHERE id <= 10;`)
	rows := func(op string) float64 {
		return scrape(t, addr, fmt.Sprintf(`seren_replicator_applied_rows_total{database="ops",operation="%s",table="public.t"}`, op))
	}
	eventually(t, 30*time.Second, "applied row counters", func() bool {
		return rows("insert") == 1234 && rows("update") == 100 && rows("delete") == 10
	})
	eventually(t, 30*time.Second, "lag back to zero", func() bool {
		return scrape(t, addr, `seren_replicator_lag_seconds{database="ops"}`) == 0 &&
			scrape(t, addr, `seren_replicator_lag_bytes{database="ops"}`) >= 0
	})
	ckpt := dst.QueryString("ops", "SELECT end_lsn - '0/0'::pg_lsn FROM seren_replicator.checkpoint")
	want, _ := strconv.ParseFloat(ckpt, 64)
	if got := scrape(t, addr, `seren_replicator_checkpoint_lsn{database="ops"}`); got != want {
		t.Errorf("checkpoint gauge %v, target checkpoint %v", got, want)
	}
	waitNote(t, notes, "STATUS=streaming")
	// status while the daemon streams: healthy, slot active, exit 0.
	st := runCLI(t, nil, "status", "--json", "--source", src.URL("postgres", "", "ops"), "--target", dst.URL("postgres", "", "ops"))
	if st.Code != 0 || !strings.Contains(st.Stdout, `"healthy"`) || !strings.Contains(st.Stdout, `"slot_active": true`) {
		t.Errorf("status while streaming: exit %d\n%s\n%s", st.Code, st.Stdout, st.Stderr)
	}
	// SIGHUP re-reads the log level from the environment file.
	if err := os.WriteFile(envFile, []byte("SEREN_LOG_LEVEL=debug\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd.Process.Signal(syscall.SIGHUP)
	eventually(t, 10*time.Second, "SIGHUP reload", func() bool {
		return strings.Contains(syncLog(cmd), "settings reloaded") && strings.Contains(syncLog(cmd), "log_level=DEBUG")
	})
	cmd.Process.Signal(syscall.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("sync: %v\n%s", err, syncLog(cmd))
	}
	waitNote(t, notes, "STOPPING=1")
	if log := syncLog(cmd); regexp.MustCompile(`password`).MatchString(log) {
		t.Errorf("log mentions a password:\n%s", log)
	}
}

func httpStatus(t *testing.T, addr, path string) int {
	resp, err := http.Get("http://" + addr + path)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func waitNote(t *testing.T, notes <-chan string, prefix string) {
	t.Helper()
	timeout := time.After(30 * time.Second)
	for {
		select {
		case n, ok := <-notes:
			if !ok {
				t.Fatalf("notify socket closed before %s", prefix)
			}
			if strings.HasPrefix(n, prefix) {
				return
			}
		case <-timeout:
			t.Fatalf("no %s notification within 30s", prefix)
		}
	}
}
