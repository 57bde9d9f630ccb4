package verify

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"
)

// syncBuffer is a bytes.Buffer safe for the logging goroutine and the test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// lastETA is the eta of the last progress line, waiting up to a second for
// a line logged after the call.
func (s *syncBuffer) lastETA(t *testing.T) string {
	t.Helper()
	s.mu.Lock()
	s.b.Reset()
	s.mu.Unlock()
	deadline := time.Now().Add(time.Second)
	for time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
		s.mu.Lock()
		lines := strings.Split(strings.TrimSpace(s.b.String()), "\n")
		s.mu.Unlock()
		if lines[0] == "" {
			continue
		}
		var rec map[string]any
		if err := json.Unmarshal([]byte(lines[len(lines)-1]), &rec); err != nil {
			t.Fatal(err)
		}
		return rec["eta"].(string)
	}
	t.Fatal("no progress line")
	return ""
}

// The ETA follows the recent rate: a known time while ranges finish,
// "unknown" while none does (a long range, a wait for the sync) instead of
// an end already passed, and "unknown" past the row estimate.
func TestLogProgressETA(t *testing.T) {
	var buf syncBuffer
	p := NewLogProgress(slog.New(slog.NewJSONHandler(&buf, nil)), 20*time.Millisecond)
	p.Start("db", 1, 1_000_000)
	defer p.Finish()
	stop := make(chan struct{})
	go func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(time.Millisecond):
				p.Rows(10)
			}
		}
	}()
	if eta := buf.lastETA(t); eta == "unknown" {
		t.Errorf("eta while rows move = %q, want a time", eta)
	}
	close(stop)
	time.Sleep(50 * time.Millisecond) // a whole interval without progress
	if eta := buf.lastETA(t); eta != "unknown" {
		t.Errorf("eta while nothing moves = %q, want unknown", eta)
	}
	p.Rows(2_000_000)
	time.Sleep(30 * time.Millisecond)
	if eta := buf.lastETA(t); eta != "unknown" {
		t.Errorf("eta past the estimate = %q, want unknown", eta)
	}
}
