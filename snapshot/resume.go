package snapshot

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/serenorg/postgres-seren-replicator/checkpoint"
)

// progressTable is init_progress in the checkpoint schema on the target: one
// row per copied piece, committed in the same transaction as the piece's
// rows. A piece without a row was never (wholly) copied.
type progressTable struct {
	schema   string
	slot     string
	snapshot string
}

func (t *progressTable) ident() string { return pgx.Identifier{t.schema, "init_progress"}.Sanitize() }

// ensure creates the table, and records the start of this run (the
// piece "" row carries the snapshot and start time).
func (t *progressTable) ensure(ctx context.Context, dst *pgx.Conn) error {
	if err := (checkpoint.Store{Schema: t.schema}).EnsureSchema(ctx, dst); err != nil {
		return err
	}
	_, err := dst.Exec(ctx, fmt.Sprintf(`CREATE TABLE IF NOT EXISTS %s (
	slot_name   text NOT NULL,
	piece       text NOT NULL,
	snapshot    text NOT NULL,
	rows        bigint NOT NULL DEFAULT 0,
	bytes       bigint NOT NULL DEFAULT 0,
	finished_at timestamptz NOT NULL DEFAULT now(),
	PRIMARY KEY (slot_name, piece)
)`, t.ident()))
	if err != nil {
		return fmt.Errorf("create %s: %w", t.ident(), err)
	}
	if _, err := dst.Exec(ctx, `DELETE FROM `+t.ident()+` WHERE slot_name = $1`, t.slot); err != nil {
		return fmt.Errorf("reset %s: %w", t.ident(), err)
	}
	_, err = dst.Exec(ctx, `INSERT INTO `+t.ident()+` (slot_name, piece, snapshot) VALUES ($1, '', $2)`, t.slot, t.snapshot)
	if err != nil {
		return fmt.Errorf("record init start: %w", err)
	}
	return nil
}

func (t *progressTable) done(ctx context.Context, dst *pgx.Conn, key string) (bool, error) {
	var ok bool
	err := dst.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM `+t.ident()+` WHERE slot_name = $1 AND piece = $2 AND snapshot = $3)`,
		t.slot, key, t.snapshot).Scan(&ok)
	if err != nil {
		return false, fmt.Errorf("read init progress: %w", err)
	}
	return ok, nil
}

func (t *progressTable) record(ctx context.Context, tx pgx.Tx, key string, rows, bytes int64) error {
	_, err := tx.Exec(ctx, `INSERT INTO `+t.ident()+` (slot_name, piece, snapshot, rows, bytes) VALUES ($1, $2, $3, $4, $5)`,
		t.slot, key, t.snapshot, rows, bytes)
	if err != nil {
		return fmt.Errorf("record progress of %s: %w", key, err)
	}
	return nil
}

// TargetState is what an earlier run left in a target database.
type TargetState struct {
	// Exists is false when the target database is missing.
	Exists bool
	// UserObjects counts tables, views, sequences and large objects outside
	// the checkpoint schema.
	UserObjects int
	// Unfinished is set when an earlier init started here and never wrote
	// its checkpoint: its start time.
	Unfinished time.Time
	// Initialised is set when the slot's checkpoint exists: init completed.
	Initialised bool
}

// Empty reports whether the database holds nothing of the user's.
func (s TargetState) Empty() bool { return s.UserObjects == 0 }

// inspectTarget reads a target database's state for slot.
func inspectTarget(ctx context.Context, dst *pgx.Conn, schema, slot string) (TargetState, error) {
	st := TargetState{Exists: true}
	err := dst.QueryRow(ctx, `SELECT
		(SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		 WHERE c.relkind IN ('r','p','v','m','S','f') AND n.nspname <> ALL ($1::text[])
		   AND n.nspname NOT LIKE 'pg\_%' AND n.nspname <> 'information_schema'
		   AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e'))
		+ (SELECT count(*) FROM pg_largeobject_metadata)`, []string{schema}).Scan(&st.UserObjects)
	if err != nil {
		return st, fmt.Errorf("inspect target database: %w", err)
	}
	var started *time.Time
	err = dst.QueryRow(ctx, `SELECT finished_at FROM `+pgx.Identifier{schema, "init_progress"}.Sanitize()+
		` WHERE slot_name = $1 AND piece = ''`, slot).Scan(&started)
	switch {
	case isUndefined(err), errors.Is(err, pgx.ErrNoRows):
	case err != nil:
		return st, fmt.Errorf("inspect target database: %w", err)
	case started != nil:
		st.Unfinished = *started
	}
	var n int
	err = dst.QueryRow(ctx, `SELECT count(*) FROM `+pgx.Identifier{schema, "checkpoint"}.Sanitize()+` WHERE slot_name = $1`, slot).Scan(&n)
	switch {
	case isUndefined(err):
	case err != nil:
		return st, fmt.Errorf("inspect target database: %w", err)
	default:
		st.Initialised = n > 0
		if st.Initialised {
			st.Unfinished = time.Time{}
		}
	}
	return st, nil
}

func isUndefined(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && (pgErr.Code == "42P01" || pgErr.Code == "3F000")
}

// wipeTarget removes every user object from a target database that init
// filled (schemas with their contents, large objects), for a clean restart
// when the database itself cannot be dropped and recreated.
func wipeTarget(ctx context.Context, dst *pgx.Conn) error {
	rows, err := dst.Query(ctx, `SELECT nspname FROM pg_namespace
		WHERE nspname NOT LIKE 'pg\_%' AND nspname <> 'information_schema' ORDER BY 1`)
	if err != nil {
		return fmt.Errorf("wipe target: %w", err)
	}
	schemas, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return fmt.Errorf("wipe target: %w", err)
	}
	var stmts []string
	for _, s := range schemas {
		stmts = append(stmts, "DROP SCHEMA "+pgx.Identifier{s}.Sanitize()+" CASCADE")
	}
	stmts = append(stmts, "CREATE SCHEMA IF NOT EXISTS public", "GRANT USAGE ON SCHEMA public TO PUBLIC",
		"SELECT lo_unlink(oid) FROM pg_largeobject_metadata")
	for _, s := range stmts {
		if _, err := dst.Exec(ctx, s); err != nil {
			return fmt.Errorf("wipe target: %s: %w", s, err)
		}
	}
	if serverMajor(dst.PgConn()) >= 15 { // as initdb makes it; refused to some roles, harmless then
		_, _ = dst.Exec(ctx, "ALTER SCHEMA public OWNER TO pg_database_owner")
	}
	return nil
}
