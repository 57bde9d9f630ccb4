// Package checkpoint keeps, on the target, how far each slot's stream has
// been applied: the end LSN of the last applied source transaction. The row
// is written in the same target transaction as the data it describes, so the
// two can never disagree after a crash.
package checkpoint

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// DefaultSchema is the target schema that holds the checkpoint table.
const DefaultSchema = "seren_replicator"

// Position is one slot's applied position.
type Position struct {
	// Slot is the source replication slot the position belongs to.
	Slot string
	// EndLSN is the end LSN of the last source transaction applied, or the
	// slot's consistent point right after init. Streaming resumes here.
	EndLSN pglogrepl.LSN
	// CommitTime is the source commit time of that transaction (zero right after init).
	CommitTime time.Time
	// AppliedAt is when the target committed it.
	AppliedAt time.Time
}

// Querier is what Store needs of a session: *pgx.Conn and pgx.Tx both fit.
type Querier interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// Store reads and writes checkpoints in one target database.
type Store struct {
	// Schema holds the checkpoint table; DefaultSchema when empty.
	Schema string
}

func (s Store) table() string { return s.Ident("checkpoint") }

// Ident is the quoted name of a table in the tool's schema.
func (s Store) Ident(table string) string {
	schema := s.Schema
	if schema == "" {
		schema = DefaultSchema
	}
	return pgx.Identifier{schema, table}.Sanitize()
}

func (s Store) schema() string {
	if s.Schema == "" {
		return pgx.Identifier{DefaultSchema}.Sanitize()
	}
	return pgx.Identifier{s.Schema}.Sanitize()
}

// Ensure creates the schema and table when missing.
func (s Store) Ensure(ctx context.Context, q Querier) error {
	_, err := q.Exec(ctx, fmt.Sprintf(`CREATE SCHEMA IF NOT EXISTS %s;
CREATE TABLE IF NOT EXISTS %s (
	slot_name   text PRIMARY KEY,
	end_lsn     pg_lsn NOT NULL,
	commit_time timestamptz,
	applied_at  timestamptz NOT NULL DEFAULT now()
)`, s.schema(), s.table()))
	if err != nil {
		return fmt.Errorf("create checkpoint table %s: %w", s.table(), err)
	}
	return nil
}

// ErrNotFound means no checkpoint exists for the slot (init has not run, or
// cleanup removed it).
var ErrNotFound = errors.New("no checkpoint")

// Load returns the slot's position, ErrNotFound when there is none (also when
// the table itself does not exist).
func (s Store) Load(ctx context.Context, q Querier, slot string) (Position, error) {
	p := Position{Slot: slot}
	var lsn string
	var commit *time.Time
	err := q.QueryRow(ctx, fmt.Sprintf(`SELECT end_lsn::text, commit_time, applied_at FROM %s WHERE slot_name = $1`, s.table()), slot).
		Scan(&lsn, &commit, &p.AppliedAt)
	var pgErr *pgconn.PgError
	switch {
	case errors.Is(err, pgx.ErrNoRows), errors.As(err, &pgErr) && (pgErr.Code == "42P01" || pgErr.Code == "3F000"):
		return p, fmt.Errorf("slot %s: %w", slot, ErrNotFound)
	case err != nil:
		return p, fmt.Errorf("load checkpoint of slot %s: %w", slot, err)
	}
	if p.EndLSN, err = pglogrepl.ParseLSN(lsn); err != nil {
		return p, fmt.Errorf("load checkpoint of slot %s: %w", slot, err)
	}
	if commit != nil {
		p.CommitTime = *commit
	}
	return p, nil
}

// Save writes the position inside the caller's transaction.
func (s Store) Save(ctx context.Context, q Querier, p Position) error {
	sql, params := s.upsert(p)
	args := make([]any, len(params))
	for i, v := range params {
		if v != nil {
			args[i] = string(v)
		}
	}
	if _, err := q.Exec(ctx, sql, args...); err != nil {
		return fmt.Errorf("save checkpoint of slot %s: %w", p.Slot, err)
	}
	return nil
}

// upsert records p whatever the table holds, with its parameters in text
// form: init's starting point. Batches move the position with LockSQL and
// AdvanceSQL instead.
func (s Store) upsert(p Position) (sql string, params [][]byte) {
	sql = fmt.Sprintf(`INSERT INTO %s (slot_name, end_lsn, commit_time, applied_at)
VALUES ($1::text, $2::text::pg_lsn, $3::text::timestamptz, now())
ON CONFLICT (slot_name) DO UPDATE SET end_lsn = EXCLUDED.end_lsn,
	commit_time = COALESCE(EXCLUDED.commit_time, %[1]s.commit_time), applied_at = EXCLUDED.applied_at`, s.table())
	return sql, [][]byte{[]byte(p.Slot), []byte(p.EndLSN.String()), commitParam(p)}
}

func commitParam(p Position) []byte {
	if p.CommitTime.IsZero() {
		return nil
	}
	return []byte(p.CommitTime.UTC().Format(time.RFC3339Nano))
}

// LockSQL locks a slot's checkpoint row for the rest of the transaction and
// returns it only while it holds the expected position (parameters:
// LockParams). A writer whose position is stale waits for the transaction
// that holds the lock, then gets no row: it must stop before changing
// anything.
func (s Store) LockSQL() string {
	return fmt.Sprintf(`SELECT 1 FROM %s WHERE slot_name = $1::text AND end_lsn = $2::text::pg_lsn FOR UPDATE`, s.table())
}

// LockParams are LockSQL's parameters in text form.
func (s Store) LockParams(slot string, at pglogrepl.LSN) [][]byte {
	return [][]byte{[]byte(slot), []byte(at.String())}
}

// AdvanceSQL moves a slot's checkpoint from one position to a later one and
// changes exactly one row only when the stored position is the expected one
// and the new one is ahead of it (parameters: AdvanceParams). The
// checkpoint never moves backwards, and two writers never both advance it
// from the same position.
func (s Store) AdvanceSQL() string {
	return fmt.Sprintf(`UPDATE %s SET end_lsn = $3::text::pg_lsn,
	commit_time = COALESCE($4::text::timestamptz, commit_time), applied_at = now()
WHERE slot_name = $1::text AND end_lsn = $2::text::pg_lsn AND $3::text::pg_lsn > end_lsn`, s.table())
}

// AdvanceParams are AdvanceSQL's parameters in text form.
func (s Store) AdvanceParams(from pglogrepl.LSN, to Position) [][]byte {
	return [][]byte{[]byte(to.Slot), []byte(from.String()), []byte(to.EndLSN.String()), commitParam(to)}
}

// DropSchema removes the checkpoint schema and everything in it.
func (s Store) DropSchema(ctx context.Context, q Querier) error {
	if _, err := q.Exec(ctx, "DROP SCHEMA IF EXISTS "+s.schema()+" CASCADE"); err != nil {
		return fmt.Errorf("drop checkpoint schema: %w", err)
	}
	return nil
}
