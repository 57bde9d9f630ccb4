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

// TableState is where a table of the migration stands, like the native
// subscription's pg_subscription_rel.
type TableState string

// Values of TableState.
const (
	// TableCopying: the table is being added — published on the source,
	// created and copied on the target. Its rows there are not complete
	// until the state moves on, and a restart copies it again.
	TableCopying TableState = "copying"
	// TableCopied: the copy holds every source transaction that committed
	// before CopyLSN; the stream applies the table's changes from there.
	TableCopied TableState = "copied"
	// TableStreaming: init copied the table; it streams from the checkpoint.
	TableStreaming TableState = "streaming"
	// TableDropped: the table was dropped on the source; its copy on the
	// target is kept and no longer changes.
	TableDropped TableState = "dropped"
)

// Table is the state of one table of a migration.
type Table struct {
	Schema, Name string
	// RelID is the table's OID on the source, which follows it through a
	// rename (0 when not known).
	RelID uint32
	State TableState
	// CopyLSN is the consistent point of the snapshot the table was copied
	// at (zero while copying): the table's changes in source transactions
	// that committed before it are already in the copy.
	CopyLSN pglogrepl.LSN
	// Since is when the state was last set.
	Since time.Time
	// Pending are statements to run once the checkpoint passes CopyLSN:
	// the table's foreign keys, which the target could not check against
	// tables still behind the copy, and which would carry the effects of
	// those tables' older changes (cascades) into the copy.
	Pending []string
}

func (s Store) tablesTable() string { return s.Ident("tables") }

// EnsureTables creates the schema, the table of per-table states and the
// table of their source columns (columns.go) when missing.
func (s Store) EnsureTables(ctx context.Context, q Querier) error {
	if err := s.EnsureSchema(ctx, q); err != nil {
		return err
	}
	_, err := q.Exec(ctx, fmt.Sprintf(`CREATE TABLE IF NOT EXISTS %s (
	slot_name   text NOT NULL,
	schema_name text NOT NULL,
	table_name  text NOT NULL,
	state       text NOT NULL CHECK (state IN ('copying', 'copied', 'streaming', 'dropped')),
	source_relid oid,
	copy_lsn    pg_lsn,
	pending     text[],
	since       timestamptz NOT NULL DEFAULT now(),
	PRIMARY KEY (slot_name, schema_name, table_name)
)`, s.tablesTable()))
	if err != nil {
		return fmt.Errorf("create table of table states %s: %w", s.tablesTable(), err)
	}
	if _, err := q.Exec(ctx, s.ensureColumnsSQL()); err != nil {
		return fmt.Errorf("create table of source columns %s: %w", s.columnsTable(), err)
	}
	return nil
}

// SetTable records a table's state for a slot inside the caller's
// transaction; copyLSN is ignored while copying.
func (s Store) SetTable(ctx context.Context, q Querier, slot string, t Table) error {
	var lsn any
	if t.State == TableCopied {
		lsn = t.CopyLSN.String()
	}
	var relid any
	if t.RelID != 0 {
		relid = t.RelID
	}
	_, err := q.Exec(ctx, fmt.Sprintf(`INSERT INTO %s (slot_name, schema_name, table_name, state, source_relid, copy_lsn, pending, since)
VALUES ($1, $2, $3, $4, $5, $6::text::pg_lsn, $7, now())
ON CONFLICT (slot_name, schema_name, table_name) DO UPDATE SET state = EXCLUDED.state,
	source_relid = COALESCE(EXCLUDED.source_relid, %[1]s.source_relid), copy_lsn = EXCLUDED.copy_lsn, pending = EXCLUDED.pending, since = now()`,
		s.tablesTable()), slot, t.Schema, t.Name, string(t.State), relid, lsn, t.Pending)
	if err != nil {
		return fmt.Errorf("record state of table %s.%s: %w", t.Schema, t.Name, err)
	}
	return nil
}

// ForgetTable removes a table's state (it was dropped on the source before
// its copy).
func (s Store) ForgetTable(ctx context.Context, q Querier, slot, schema, name string) error {
	_, err := q.Exec(ctx, fmt.Sprintf(`DELETE FROM %s WHERE slot_name = $1 AND schema_name = $2 AND table_name = $3`, s.tablesTable()), slot, schema, name)
	if err != nil && !isUndefinedTable(err) {
		return fmt.Errorf("forget state of table %s.%s: %w", schema, name, err)
	}
	return nil
}

// RecordTableSQL records a table's state unless it has one (parameters in
// text form: slot, schema, name, state, source OID).
func (s Store) RecordTableSQL() string {
	return fmt.Sprintf(`INSERT INTO %s (slot_name, schema_name, table_name, state, source_relid)
VALUES ($1::text, $2::text, $3::text, $4::text, $5::text::oid) ON CONFLICT (slot_name, schema_name, table_name) DO NOTHING`, s.tablesTable())
}

// RenameTableSQL moves a table's state to a new name (parameters in text
// form: slot, old schema, old name, new schema, new name).
func (s Store) RenameTableSQL() string {
	return fmt.Sprintf(`UPDATE %s SET schema_name = $4::text, table_name = $5::text, since = now()
WHERE slot_name = $1::text AND schema_name = $2::text AND table_name = $3::text`, s.tablesTable())
}

// Rows is what LoadTables needs of a session.
type Rows interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// LoadTables returns the states of the slot's tables, in schema and name
// order; none when the table of states does not exist.
func (s Store) LoadTables(ctx context.Context, q Rows, slot string) ([]Table, error) {
	rows, err := q.Query(ctx, fmt.Sprintf(`SELECT schema_name, table_name, state, COALESCE(source_relid, 0), COALESCE(copy_lsn::text, ''), since, COALESCE(pending, '{}')
FROM %s WHERE slot_name = $1 ORDER BY 1, 2`, s.tablesTable()), slot)
	if isUndefinedTable(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("load table states of slot %s: %w", slot, err)
	}
	defer rows.Close()
	var out []Table
	for rows.Next() {
		var t Table
		var state, lsn string
		if err := rows.Scan(&t.Schema, &t.Name, &state, &t.RelID, &lsn, &t.Since, &t.Pending); err != nil {
			return nil, fmt.Errorf("load table states of slot %s: %w", slot, err)
		}
		t.State = TableState(state)
		if lsn != "" {
			if t.CopyLSN, err = pglogrepl.ParseLSN(lsn); err != nil {
				return nil, fmt.Errorf("load table states of slot %s: %w", slot, err)
			}
		}
		out = append(out, t)
	}
	if err := rows.Err(); err != nil {
		if isUndefinedTable(err) {
			return nil, nil
		}
		return nil, fmt.Errorf("load table states of slot %s: %w", slot, err)
	}
	return out, nil
}

func isUndefinedTable(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && (pgErr.Code == "42P01" || pgErr.Code == "3F000")
}

// EnsureSchema creates the tool's schema when missing. CREATE SCHEMA IF NOT
// EXISTS needs CREATE on the database even when the schema exists, which a
// managed target's role may lack: it runs only when the schema is missing.
func (s Store) EnsureSchema(ctx context.Context, q Querier) error {
	var exists bool
	name := s.Schema
	if name == "" {
		name = DefaultSchema
	}
	if err := q.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)`, name).Scan(&exists); err != nil {
		return fmt.Errorf("look up schema %s: %w", s.schema(), err)
	}
	if !exists {
		if _, err := q.Exec(ctx, "CREATE SCHEMA IF NOT EXISTS "+s.schema()); err != nil {
			return fmt.Errorf("create schema %s: %w", s.schema(), err)
		}
	}
	return nil
}
