package daemon

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/serenorg/postgres-seren-replicator/internal/metrics"
)

// fakeSystemd listens on a unixgram socket and points NOTIFY_SOCKET at it.
func fakeSystemd(t *testing.T) *net.UnixConn {
	t.Helper()
	path := filepath.Join(t.TempDir(), "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	t.Setenv("NOTIFY_SOCKET", path)
	return conn
}

func receive(t *testing.T, conn *net.UnixConn) string {
	t.Helper()
	buf := make([]byte, 4096)
	if err := conn.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	n, err := conn.Read(buf)
	if err != nil {
		t.Fatalf("no notification arrived: %v", err)
	}
	return string(buf[:n])
}

func TestNotify(t *testing.T) {
	conn := fakeSystemd(t)
	tests := []struct {
		name string
		send func() error
		want string
	}{
		{"ready", Ready, "READY=1"},
		{"status", func() error { return Status("streaming, lag 12 kB\nsecond line") }, "STATUS=streaming, lag 12 kB second line"},
		{"watchdog", Watchdog, "WATCHDOG=1"},
		{"stopping", Stopping, "STOPPING=1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.send(); err != nil {
				t.Fatal(err)
			}
			if got := receive(t, conn); got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

func TestNotifyWithoutSystemdDoesNothing(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	for _, f := range []func() error{Ready, Watchdog, Stopping, func() error { return Status("x") }} {
		if err := f(); err != nil {
			t.Errorf("got %v, want nil without NOTIFY_SOCKET", err)
		}
	}
}

func TestNotifyToMissingSocketFails(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", filepath.Join(t.TempDir(), "absent.sock"))
	if err := Ready(); err == nil {
		t.Error("got nil, want an error for a socket nobody listens on")
	}
}

func TestWatchdogInterval(t *testing.T) {
	tests := []struct {
		name, usec, pid string
		want            time.Duration
	}{
		{"off", "", "", 0},
		{"on", "10000000", "", 5 * time.Second},
		{"this process", "4000000", strconv.Itoa(os.Getpid()), 2 * time.Second},
		{"another process", "4000000", "1", 0},
		{"garbage", "abc", "", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("WATCHDOG_USEC", tt.usec)
			t.Setenv("WATCHDOG_PID", tt.pid)
			if got := WatchdogInterval(); got != tt.want {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
}

func TestPingerRateLimits(t *testing.T) {
	conn := fakeSystemd(t)
	t.Setenv("WATCHDOG_PID", "")
	t.Setenv("WATCHDOG_USEC", "400000") // ping interval 200 ms, pinger sends at most every 100 ms
	p := NewPinger()
	if !p.Enabled() {
		t.Fatal("pinger disabled with WATCHDOG_USEC set")
	}
	for range 50 {
		if err := p.Ping(); err != nil {
			t.Fatal(err)
		}
	}
	if got := receive(t, conn); got != "WATCHDOG=1" {
		t.Fatalf("got %q, want WATCHDOG=1", got)
	}
	// The 49 calls right after the first must not have sent anything.
	if err := conn.SetReadDeadline(time.Now().Add(50 * time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	if n, err := conn.Read(make([]byte, 64)); err == nil {
		t.Fatalf("got a second ping within the interval (%d bytes)", n)
	}
	time.Sleep(110 * time.Millisecond)
	if err := p.Ping(); err != nil {
		t.Fatal(err)
	}
	if got := receive(t, conn); got != "WATCHDOG=1" {
		t.Fatalf("got %q, want a ping after the interval", got)
	}
	var nilPinger *Pinger
	if err := nilPinger.Ping(); err != nil {
		t.Errorf("nil pinger: %v", err)
	}
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(body)
}

func TestServe(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := metrics.New(reg)
	m.RowsApplied("app", "public.t", metrics.OpInsert, 42)
	var readiness Readiness
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	base := "http://" + l.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ServeListener(ctx, l, reg, readiness.Check) }()
	t.Cleanup(func() {
		cancel()
		<-done
	})

	code, body := get(t, base+"/metrics")
	if code != 200 || !strings.Contains(body, `seren_replicator_applied_rows_total{database="app",operation="insert",table="public.t"} 42`) {
		t.Errorf("/metrics: %d\n%s", code, body)
	}
	if code, _ := get(t, base+"/healthz"); code != 200 {
		t.Errorf("/healthz: got %d, want 200", code)
	}
	steps := []struct {
		name     string
		set      func()
		wantCode int
		wantBody string
	}{
		{"starting", func() {}, 503, "starting"},
		{"lagging", func() { readiness.Set("app", errors.New("lag 3 GB above 1 GB")) }, 503, "app: lag 3 GB above 1 GB"},
		{"streaming", func() { readiness.Set("app", nil) }, 200, "ready"},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			s.set()
			code, body := get(t, base+"/readyz")
			if code != s.wantCode || !strings.Contains(body, s.wantBody) {
				t.Errorf("got %d %q, want %d containing %q", code, body, s.wantCode, s.wantBody)
			}
		})
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Serve after cancel: %v", err)
		}
		done <- nil // for the cleanup
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return after its context ended")
	}
	if _, err := http.Get(base + "/healthz"); err == nil {
		t.Error("server still answers after shutdown")
	}
}

func TestServeBusyPort(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	err = Serve(context.Background(), l.Addr().String(), prometheus.NewRegistry(), nil)
	if err == nil || !strings.Contains(err.Error(), "metrics listen") {
		t.Errorf("got %v, want a listen error", err)
	}
}

func TestReadEnvFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "env")
	text := "# comment\n; other comment\n\nSEREN_LOG_LEVEL=debug\nexport SEREN_SOURCE=\"postgres://a b\"\nSEREN_X='q'\n#SEREN_SLOT=s\nEMPTY=\n"
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := ReadEnvFile(path)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"SEREN_LOG_LEVEL": "debug", "SEREN_SOURCE": "postgres://a b", "SEREN_X": "q", "EMPTY": ""}
	if len(got) != len(want) {
		t.Errorf("got %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s: got %q, want %q", k, got[k], v)
		}
	}
	if err := os.WriteFile(path, []byte("no equals sign\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadEnvFile(path); err == nil || !strings.Contains(err.Error(), "line 1") {
		t.Errorf("got %v, want an error naming line 1", err)
	}
}

func TestHandleHUP(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	reloads := make(chan struct{}, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		HandleHUP(ctx, func() { reloads <- struct{}{} })
	}()
	// signal.Notify runs inside the goroutine: retry until it is in place,
	// with a guard registration so an early SIGHUP does not end the test.
	guard := make(chan os.Signal, 16)
	signal.Notify(guard, syscall.SIGHUP)
	defer signal.Stop(guard)
	deadline := time.After(5 * time.Second)
	for got := false; !got; {
		if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		select {
		case <-reloads:
			got = true
		case <-time.After(50 * time.Millisecond):
		case <-deadline:
			t.Fatal("reload not called on SIGHUP")
		}
	}
	cancel()
	<-done
}
