package checkpoint

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"

	"github.com/serenorg/postgres-seren-replicator/tests/pgtest"
)

// The checkpoint statements enforce in SQL what the batcher promises: the
// position only moves forward, and only from the position the writer last
// wrote; a stale writer gets no row and must stop.
func TestAdvanceIsGuarded(t *testing.T) {
	c := pgtest.Start(t, pgtest.Options{})
	ctx := context.Background()
	conn := c.Connect("postgres")
	s := Store{}
	if err := s.Ensure(ctx, conn); err != nil {
		t.Fatal(err)
	}
	if err := s.Save(ctx, conn, Position{Slot: "s", EndLSN: 100}); err != nil {
		t.Fatal(err)
	}
	rows := func(sql string, params [][]byte) int64 {
		t.Helper()
		res := conn.PgConn().ExecParams(ctx, sql, params, nil, nil, nil).Read()
		if res.Err != nil {
			t.Fatal(res.Err)
		}
		return res.CommandTag.RowsAffected()
	}
	commit := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	steps := []struct {
		name     string
		sql      string
		params   [][]byte
		want     int64
		storedAt pglogrepl.LSN
	}{
		{"lock at the stored position", s.LockSQL(), s.LockParams("s", 100), 1, 100},
		{"lock at a stale position", s.LockSQL(), s.LockParams("s", 50), 0, 100},
		{"advance from the stored position", s.AdvanceSQL(), s.AdvanceParams(100, Position{Slot: "s", EndLSN: 200, CommitTime: commit}), 1, 200},
		{"advance from a stale position", s.AdvanceSQL(), s.AdvanceParams(100, Position{Slot: "s", EndLSN: 300}), 0, 200},
		{"advance backwards", s.AdvanceSQL(), s.AdvanceParams(200, Position{Slot: "s", EndLSN: 150}), 0, 200},
		{"advance to the same position", s.AdvanceSQL(), s.AdvanceParams(200, Position{Slot: "s", EndLSN: 200}), 0, 200},
		{"advance another slot", s.AdvanceSQL(), s.AdvanceParams(200, Position{Slot: "other", EndLSN: 300}), 0, 200},
		{"keepalive advance keeps the commit time", s.AdvanceSQL(), s.AdvanceParams(200, Position{Slot: "s", EndLSN: 400}), 1, 400},
	}
	for _, st := range steps {
		if got := rows(st.sql, st.params); got != st.want {
			t.Errorf("%s: %d rows, want %d", st.name, got, st.want)
		}
		p, err := s.Load(ctx, conn, "s")
		if err != nil {
			t.Fatal(err)
		}
		if p.EndLSN != st.storedAt {
			t.Errorf("%s: stored %s, want %s", st.name, p.EndLSN, st.storedAt)
		}
	}
	if p, _ := s.Load(ctx, conn, "s"); !p.CommitTime.Equal(commit) {
		t.Errorf("commit time %s, want %s", p.CommitTime, commit)
	}
}
