package main

import (
	"errors"
	"fmt"
	"testing"

	"github.com/serenorg/postgres-seren-replicator/apply"
	"github.com/serenorg/postgres-seren-replicator/internal/conninfo"
	"github.com/serenorg/postgres-seren-replicator/stream"
)

// The shipped systemd unit restarts on every exit code but ExitUsage and
// ExitNeedsAction: a lost connection must map to a code it restarts, a
// state only a person can change to one it does not.
func TestExitCode(t *testing.T) {
	lost := fmt.Errorf("database app: slot seren_app: %w", stream.ErrConnection)
	diverged := fmt.Errorf("database app: update on table public.t changed 0 rows: %w", apply.ErrPermanent)
	for _, c := range []struct {
		name string
		err  error
		want int
	}{
		{"success", nil, ExitOK},
		{"failed check", fmt.Errorf("%w: 1 of 20 validation checks failed", ErrCheckFailed), ExitFailed},
		{"bad flag", usageError("--max-batch-changes must be at least 1"), ExitUsage},
		{"wrong password", fmt.Errorf("source: %w: password authentication failed", conninfo.ErrConfig), ExitUsage},
		{"lost connection", lost, ExitRuntime},
		{"second writer", fmt.Errorf("slot seren_app: %w", apply.ErrBusy), ExitRuntime},
		{"unclassified", errors.New("copy sequences: connection reset"), ExitRuntime},
		{"diverged target", diverged, ExitNeedsAction},
		{"lost slot", setupError("replication slot seren_app was invalidated"), ExitNeedsAction},
		{"undecodable stream", fmt.Errorf("slot seren_app: decode pgoutput: %w", stream.ErrProtocol), ExitNeedsAction},
		{"one database diverged, another lost its connection", errors.Join(diverged, lost), ExitNeedsAction},
		{"Ctrl-C at a prompt", ErrInterrupted, ExitInterrupted},
		{"no at a prompt", ErrCancelled, ExitFailed},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := ExitCode(c.err); got != c.want {
				t.Errorf("ExitCode(%v) = %d, want %d", c.err, got, c.want)
			}
		})
	}
}

// The user reads what to do, not the class that picks the exit code.
func TestRedactErrorDropsClasses(t *testing.T) {
	for _, c := range []struct {
		err  error
		want string
	}{
		{fmt.Errorf("database app: %w", setupError("replication slot s does not exist")), "database app: replication slot s does not exist"},
		{fmt.Errorf("%w: source and target data differ", ErrCheckFailed), "source and target data differ"},
		{usageError("--jobs must be at least 1"), "--jobs must be at least 1"},
	} {
		if got := redactError(c.err); got != c.want {
			t.Errorf("redactError(%v) = %q, want %q", c.err, got, c.want)
		}
	}
}
