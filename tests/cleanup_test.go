package tests

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/serenorg/postgres-seren-replicator/stream"
)

func TestCleanup(t *testing.T) {
	src, dst := pgtestPair(t)
	const db = "app"
	prepareStreaming(t, src, dst, db, statusSchema, "public.t")
	args := func(extra ...string) []string {
		return append([]string{"cleanup", "--source", src.URL("postgres", "", db), "--target", dst.URL("postgres", "", db)}, extra...)
	}
	slot := stream.DefaultSlotName(db)
	exists := map[string]func() bool{
		"slot": func() bool {
			return src.QueryString(db, "SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1", slot) == "1"
		},
		"publication": func() bool {
			return src.QueryString(db, "SELECT count(*) FROM pg_publication WHERE pubname = $1", stream.PublicationName(slot)) == "1"
		},
		"schema": func() bool {
			return dst.QueryString(db, "SELECT count(*) FROM pg_namespace WHERE nspname = 'seren_replicator'") == "1"
		},
	}
	assertExist := func(t *testing.T, want bool) {
		t.Helper()
		for name, f := range exists {
			if got := f(); got != want {
				t.Errorf("%s exists = %v, want %v", name, got, want)
			}
		}
	}

	t.Run("no terminal and no --yes", func(t *testing.T) {
		res := runCLI(t, nil, args()...)
		if res.Code != 2 || !strings.Contains(res.Stderr, "--yes") || strings.Count(strings.TrimSpace(res.Stderr), "\n") != 0 {
			t.Errorf("exit %d, stderr %q; want 2 and one line naming --yes", res.Code, res.Stderr)
		}
		assertExist(t, true)
	})

	conn := holdSlot(t, src, db, sourceLSN(t, src, db))
	t.Run("active slot refused", func(t *testing.T) {
		res := runCLI(t, nil, args("--yes")...)
		if res.Code != 1 || !strings.Contains(res.Stderr, "--force") || !strings.Contains(res.Stderr, slot) {
			t.Errorf("exit %d, stderr %q; want 1 naming the slot and --force", res.Code, res.Stderr)
		}
		assertExist(t, true)
	})

	t.Run("force", func(t *testing.T) {
		res := runCLI(t, nil, args("--yes", "--force")...)
		if res.Code != 0 {
			t.Fatalf("exit %d\nstdout: %s\nstderr: %s", res.Code, res.Stdout, res.Stderr)
		}
		for _, want := range []string{
			"source app: dropped replication slot " + slot,
			"source app: dropped publication " + stream.PublicationName(slot),
			"target app: dropped checkpoint schema seren_replicator",
		} {
			if !strings.Contains(res.Stdout, want) {
				t.Errorf("output lacks %q:\n%s", want, res.Stdout)
			}
		}
		assertExist(t, false)
		// Buffered keepalives may come first; then the connection must end.
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		defer cancel()
		for {
			_, err := conn.ReceiveMessage(ctx)
			if ctx.Err() != nil {
				t.Fatal("the replication connection still works after --force")
			}
			if err != nil {
				break
			}
		}
	})

	t.Run("second run", func(t *testing.T) {
		// Nothing left to drop: no confirmation needed, even without a terminal.
		res := runCLI(t, nil, args()...)
		if res.Code != 0 {
			t.Fatalf("exit %d\nstdout: %s\nstderr: %s", res.Code, res.Stdout, res.Stderr)
		}
		if n := strings.Count(res.Stdout, "already absent"); n != 3 {
			t.Errorf("%d objects reported absent, want 3:\n%s", n, res.Stdout)
		}
	})

	t.Run("status after cleanup", func(t *testing.T) {
		r, res := statusJSON(t, src, dst, db)
		if res.Code != 1 || r.Verdict != "broken" {
			t.Errorf("got exit %d %s (%s), want 1 broken", res.Code, r.Verdict, r.Reason)
		}
	})
}
