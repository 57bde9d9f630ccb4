package checkpoint

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/serenorg/postgres-seren-replicator/internal/sqltext"
)

// RowsQuerier is a Querier that also returns rows: *pgx.Conn and pgx.Tx
// both fit.
type RowsQuerier interface {
	Querier
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// Settings is what init chose for one database's migration, kept on the
// target beside the checkpoint so that the later commands need only the
// connection strings. One row per slot.
//
// The selection is kept as the filters were given (patterns and all), not
// as the list of tables they matched: sync lists the source's tables again
// on every start and while running, and a table created later that the
// filters cover joins the migration, exactly as if init's flags were
// repeated. A resolved list would leave such tables out, and the tables
// already in the migration are in the table states anyway. Databases, on
// the other hand, is the resolved list: a database created on the source
// after init is not part of the migration (it has no slot), even when the
// filters would cover it.
type Settings struct {
	// Slot is the replication slot of this database's migration (the key).
	Slot string
	// Database is the source database this row's migration streams from.
	Database string
	// Databases are every source database of the init run that wrote the
	// row, in name order (one for a source URL naming a database).
	Databases []string
	// The selection flags, as given (after an --interactive choice: the
	// flags that repeat it).
	IncludeDatabases, ExcludeDatabases, IncludeTables, ExcludeTables []string
	// Publication is the publication on the source that the slot streams
	// from.
	Publication string
	// IdentityFull is init's --replica-identity-full.
	IdentityFull bool
	// Recorded is when the row was last written.
	Recorded time.Time
}

// settingsComment marks the table of settings, so the commands find it in
// a checkpoint schema they were not told the name of.
const settingsComment = "postgres-seren-replicator: the settings of each migration into this database, by slot"

func (s Store) settingsTable() string { return s.Ident("migration") }

// SaveSettings records a migration's settings, replacing those of the same
// slot; it creates the schema and the table when missing.
func (s Store) SaveSettings(ctx context.Context, q Querier, st Settings) error {
	if err := s.EnsureSchema(ctx, q); err != nil {
		return err
	}
	_, err := q.Exec(ctx, fmt.Sprintf(`CREATE TABLE IF NOT EXISTS %s (
	slot_name         text PRIMARY KEY,
	source_database   text NOT NULL,
	databases         text[] NOT NULL,
	include_databases text[] NOT NULL,
	exclude_databases text[] NOT NULL,
	include_tables    text[] NOT NULL,
	exclude_tables    text[] NOT NULL,
	publication       text NOT NULL,
	replica_identity_full boolean NOT NULL,
	recorded_at       timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE %[1]s IS %s`, s.settingsTable(), sqltext.Literal(settingsComment)))
	if err != nil {
		return fmt.Errorf("create table of migration settings %s: %w", s.settingsTable(), err)
	}
	_, err = q.Exec(ctx, fmt.Sprintf(`INSERT INTO %s (slot_name, source_database, databases, include_databases, exclude_databases,
	include_tables, exclude_tables, publication, replica_identity_full, recorded_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, now())
ON CONFLICT (slot_name) DO UPDATE SET source_database = EXCLUDED.source_database, databases = EXCLUDED.databases,
	include_databases = EXCLUDED.include_databases, exclude_databases = EXCLUDED.exclude_databases,
	include_tables = EXCLUDED.include_tables, exclude_tables = EXCLUDED.exclude_tables,
	publication = EXCLUDED.publication, replica_identity_full = EXCLUDED.replica_identity_full, recorded_at = now()`, s.settingsTable()),
		st.Slot, st.Database, nonNil(st.Databases), nonNil(st.IncludeDatabases), nonNil(st.ExcludeDatabases),
		nonNil(st.IncludeTables), nonNil(st.ExcludeTables), st.Publication, st.IdentityFull)
	if err != nil {
		return fmt.Errorf("record the settings of slot %s: %w", st.Slot, err)
	}
	return nil
}

// LoadSettings returns every migration's settings recorded in the schema,
// by slot name; none when the schema or the table does not exist (a
// migration made before settings were recorded).
func (s Store) LoadSettings(ctx context.Context, q RowsQuerier) ([]Settings, error) {
	rows, err := q.Query(ctx, fmt.Sprintf(`SELECT slot_name, source_database, databases, include_databases, exclude_databases,
	include_tables, exclude_tables, publication, replica_identity_full, recorded_at FROM %s ORDER BY slot_name`, s.settingsTable()))
	if isUndefined(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read migration settings %s: %w", s.settingsTable(), err)
	}
	defer rows.Close()
	var out []Settings
	for rows.Next() {
		var st Settings
		if err := rows.Scan(&st.Slot, &st.Database, &st.Databases, &st.IncludeDatabases, &st.ExcludeDatabases,
			&st.IncludeTables, &st.ExcludeTables, &st.Publication, &st.IdentityFull, &st.Recorded); err != nil {
			return nil, fmt.Errorf("read migration settings %s: %w", s.settingsTable(), err)
		}
		out = append(out, st)
	}
	if err := rows.Err(); err != nil {
		if isUndefined(err) {
			return nil, nil
		}
		return nil, fmt.Errorf("read migration settings %s: %w", s.settingsTable(), err)
	}
	return out, nil
}

// SettingsSchemas lists the schemas of the connected database that hold a
// table of migration settings, in name order: where to look when the
// checkpoint schema's name is not given.
func SettingsSchemas(ctx context.Context, q RowsQuerier) ([]string, error) {
	rows, err := q.Query(ctx, `SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
	WHERE c.relname = 'migration' AND c.relkind = 'r' AND obj_description(c.oid, 'pg_class') = $1 ORDER BY 1`, settingsComment)
	if err != nil {
		return nil, fmt.Errorf("look for migration settings: %w", err)
	}
	return pgx.CollectRows(rows, pgx.RowTo[string])
}

// isUndefined reports a missing table or schema.
func isUndefined(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && (pgErr.Code == "42P01" || pgErr.Code == "3F000")
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}
