package preflight

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/serenorg/postgres-seren-replicator/internal/conninfo"
	"github.com/serenorg/postgres-seren-replicator/internal/plan"
	"github.com/serenorg/postgres-seren-replicator/internal/selection"
)

// checkpointTable is the table checkpoint.Store keeps in its schema.
const checkpointTable = "checkpoint"

// targetServer runs the target checks. conn is a session on the target
// server, in the target database or a maintenance database when that one
// does not exist yet.
type targetServer struct {
	conn    *pgx.Conn
	info    server
	schema  string
	replica *bool // the role may set session_replication_role (asked once)
}

// replicaMode reports whether sync will apply in replica mode.
func (t *targetServer) replicaMode(ctx context.Context) (bool, error) {
	if t.replica == nil {
		ok, err := CanSetReplicaRole(ctx, t.conn)
		if err != nil {
			return false, fmt.Errorf("target: %w", err)
		}
		t.replica = &ok
	}
	return *t.replica, nil
}

// extensions checks that every extension installed in the source database
// can be installed on the target server.
func (t *targetServer) extensions(ctx context.Context, d plan.Database) ([]Check, error) {
	src, err := d.Source.Connect(ctx)
	if err != nil {
		return nil, err
	}
	defer src.Close(context.WithoutCancel(ctx))
	rows, err := src.Query(ctx, `SELECT extname FROM pg_extension WHERE extname <> 'plpgsql' ORDER BY 1`)
	if err != nil {
		return nil, fmt.Errorf("source %s: list extensions: %w", d.Name, err)
	}
	installed, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("source %s: list extensions: %w", d.Name, err)
	}
	rows, err = t.conn.Query(ctx, `SELECT e FROM unnest($1::text[]) AS e
		WHERE NOT EXISTS (SELECT 1 FROM pg_available_extensions a WHERE a.name = e) ORDER BY 1`, installed)
	if err != nil {
		return nil, fmt.Errorf("target: list available extensions: %w", err)
	}
	missing, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("target: list available extensions: %w", err)
	}
	c := Check{Name: "extensions", Database: d.Name, Status: Pass}
	switch {
	case len(missing) > 0:
		c.Status = Fail
		c.Detail = fmt.Sprintf("installed on the source but not available on the target server: %s", strings.Join(missing, ", "))
		c.Fix = fmt.Sprintf("install the packages that provide %s on the target server (on a managed service: enable them in its extension settings), or drop them on the source if unused", strings.Join(missing, ", "))
	case len(installed) == 0:
		c.Detail = "no extensions installed on the source"
	default:
		c.Detail = "available on the target: " + strings.Join(installed, ", ")
	}
	return []Check{c}, nil
}

// database checks one target database: that it exists or can be created,
// that the checkpoint schema can be created there, and that the selected
// tables can be written (or created).
func (t *targetServer) database(ctx context.Context, d plan.Database) ([]Check, error) {
	name := d.Target.Database()
	role := ident(t.info.user)
	c := Check{Name: "target database", Database: d.Name, Status: Pass}
	var exists bool
	if err := t.conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)`, name).Scan(&exists); err != nil {
		return nil, fmt.Errorf("target: look up database %s: %w", name, err)
	}
	if !exists {
		if t.info.super || t.info.createDB {
			c.Detail = fmt.Sprintf("%s does not exist yet; init creates it (%s has CREATEDB) and %s will own it", name, t.info.user, t.info.user)
			return []Check{c}, nil
		}
		c.Status = Fail
		c.Detail = fmt.Sprintf("%s does not exist and %s may not create databases", name, t.info.user)
		c.Fix = fmt.Sprintf("ALTER ROLE %s CREATEDB; (or, as an administrator: CREATE DATABASE %s OWNER %s;)", role, ident(name), role)
		return []Check{c}, nil
	}
	conn, err := d.Target.Connect(ctx)
	if err != nil {
		if !errors.Is(err, conninfo.ErrConfig) {
			return nil, err
		}
		c.Status = Fail
		c.Detail = fmt.Sprintf("%s exists but %s cannot connect to it: %s", name, t.info.user, conninfo.Redact(err.Error()))
		c.Fix = fmt.Sprintf("GRANT CONNECT ON DATABASE %s TO %s;", ident(name), role)
		return []Check{c}, nil
	}
	defer conn.Close(context.WithoutCancel(ctx))
	c.Detail = name + " exists"
	cp, err := t.checkpointSchema(ctx, conn, d)
	if err != nil {
		return nil, err
	}
	tables, err := t.tables(ctx, conn, d)
	if err != nil {
		return nil, err
	}
	rls, err := checkRowSecurity(ctx, conn, d, "target", t.info.user)
	if err != nil {
		return nil, err
	}
	return []Check{c, cp, tables, rls}, nil
}

// checkpointSchema checks that the checkpoint schema and table can be
// created, or are usable when they already exist.
func (t *targetServer) checkpointSchema(ctx context.Context, conn *pgx.Conn, d plan.Database) (Check, error) {
	c := Check{Name: "checkpoint schema", Database: d.Name, Status: Pass}
	var dbCreate bool
	var schemaOK, tableOK *bool
	err := conn.QueryRow(ctx, `SELECT has_database_privilege(current_database(), 'CREATE'),
		(SELECT has_schema_privilege(n.oid, 'CREATE') AND has_schema_privilege(n.oid, 'USAGE') FROM pg_namespace n WHERE n.nspname = $1),
		(SELECT has_table_privilege(c.oid, 'SELECT') AND has_table_privilege(c.oid, 'INSERT')
		    AND has_table_privilege(c.oid, 'UPDATE') AND has_table_privilege(c.oid, 'DELETE')
		 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relname = $2)`,
		t.schema, checkpointTable).Scan(&dbCreate, &schemaOK, &tableOK)
	if err != nil {
		return c, fmt.Errorf("target %s: read checkpoint schema privileges: %w", d.Target.Database(), err)
	}
	role, schema := ident(t.info.user), ident(t.schema)
	switch {
	case schemaOK == nil && dbCreate:
		c.Detail = fmt.Sprintf("%s may create schema %s", t.info.user, t.schema)
	case schemaOK == nil:
		c.Status = Fail
		c.Detail = fmt.Sprintf("%s may not create schema %s: no CREATE privilege on database %s", t.info.user, t.schema, d.Target.Database())
		c.Fix = fmt.Sprintf("GRANT CREATE ON DATABASE %s TO %s; (or, as an administrator: CREATE SCHEMA %s AUTHORIZATION %s;)", ident(d.Target.Database()), role, schema, role)
	case !*schemaOK:
		c.Status = Fail
		c.Detail = fmt.Sprintf("schema %s exists but %s lacks USAGE or CREATE on it", t.schema, t.info.user)
		c.Fix = fmt.Sprintf("GRANT USAGE, CREATE ON SCHEMA %s TO %s;", schema, role)
	case tableOK != nil && !*tableOK:
		c.Status = Fail
		c.Detail = fmt.Sprintf("table %s.%s exists but %s may not read and write it", t.schema, checkpointTable, t.info.user)
		c.Fix = fmt.Sprintf("GRANT SELECT, INSERT, UPDATE, DELETE ON %s TO %s;", ident(t.schema, checkpointTable), role)
	case tableOK != nil:
		c.Detail = fmt.Sprintf("%s.%s exists and is writable", t.schema, checkpointTable)
	default:
		c.Detail = fmt.Sprintf("schema %s exists and %s may create the checkpoint table in it", t.schema, t.info.user)
	}
	return c, nil
}

// targetTablesSQL reports, for each selected table, whether it exists on the
// target and whether the role may write it, or else create it.
const targetTablesSQL = `SELECT t.schema, t.name, c.oid IS NOT NULL,
	COALESCE(pg_has_role(c.relowner, 'USAGE'), false),
	COALESCE(has_table_privilege(c.oid, 'SELECT') AND has_table_privilege(c.oid, 'INSERT')
		AND has_table_privilege(c.oid, 'UPDATE') AND has_table_privilege(c.oid, 'DELETE')
		AND has_table_privilege(c.oid, 'TRUNCATE'), false),
	n.oid IS NOT NULL,
	COALESCE(has_schema_privilege(n.oid, 'USAGE'), false),
	COALESCE(has_schema_privilege(n.oid, 'CREATE'), false),
	has_database_privilege(current_database(), 'CREATE'),
	COALESCE((SELECT bool_or(a.attidentity = 'a') FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped), false)
	FROM unnest($1::text[], $2::text[]) AS t(schema, name)
	LEFT JOIN pg_namespace n ON n.nspname = t.schema
	LEFT JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = t.name AND c.relkind IN ('r', 'p')
	ORDER BY 1, 2`

// tables checks that the role owns or may write every selected table that
// exists on the target, and may create the others. Sync changes a table for
// the migration (apply.hold) where the role must own it: in ordered mode
// always (triggers, rules, foreign keys), in both modes for identity
// columns GENERATED ALWAYS.
func (t *targetServer) tables(ctx context.Context, conn *pgx.Conn, d plan.Database) (Check, error) {
	c := Check{Name: "target tables", Database: d.Name, Status: Pass}
	replica, err := t.replicaMode(ctx)
	if err != nil {
		return c, err
	}
	schemas, names := tableArrays(d.Tables)
	rows, err := conn.Query(ctx, targetTablesSQL, schemas, names)
	if err != nil {
		return c, fmt.Errorf("target %s: read table privileges: %w", d.Target.Database(), err)
	}
	role := ident(t.info.user)
	var existing, created int
	var problems, fixes []string
	fixed := map[string]bool{} // one GRANT per schema or database
	addFix := func(f string) {
		if !fixed[f] {
			fixed[f] = true
			fixes = append(fixes, f)
		}
	}
	for rows.Next() {
		var tb selection.Table
		var exists, owned, writable, schemaExists, usage, schemaCreate, dbCreate, identity bool
		if err := rows.Scan(&tb.Schema, &tb.Name, &exists, &owned, &writable, &schemaExists, &usage, &schemaCreate, &dbCreate, &identity); err != nil {
			return c, fmt.Errorf("target %s: read table privileges: %w", d.Target.Database(), err)
		}
		switch {
		case exists && (owned || (writable && usage)):
			existing++
		case exists:
			existing++
			problems = append(problems, fmt.Sprintf("%s exists but %s may not write it", tb.Qualified(), t.info.user))
			if !usage {
				addFix(fmt.Sprintf("GRANT USAGE ON SCHEMA %s TO %s;", ident(tb.Schema), role))
			}
			addFix(fmt.Sprintf("GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON %s TO %s;", ident(tb.Schema, tb.Name), role))
		case schemaExists && usage && schemaCreate:
			created++
		case schemaExists:
			created++
			problems = append(problems, fmt.Sprintf("%s is missing and %s may not create it in schema %s", tb.Qualified(), t.info.user, tb.Schema))
			addFix(fmt.Sprintf("GRANT USAGE, CREATE ON SCHEMA %s TO %s;", ident(tb.Schema), role))
		case dbCreate:
			created++
		default:
			created++
			problems = append(problems, fmt.Sprintf("%s is missing and %s may not create schema %s", tb.Qualified(), t.info.user, tb.Schema))
			addFix(fmt.Sprintf("GRANT CREATE ON DATABASE %s TO %s;", ident(d.Target.Database()), role))
		}
		if exists && !owned && (!replica || identity) {
			why := "ordered mode disables its triggers and defers its foreign keys for the migration"
			if replica {
				why = "its identity columns GENERATED ALWAYS must take the source's values"
			}
			problems = append(problems, fmt.Sprintf("%s is owned by another role, but %s", tb.Qualified(), why))
			if !replica && t.info.major() >= 15 {
				addFix(fmt.Sprintf("GRANT SET ON PARAMETER session_replication_role TO %s; (replica mode) or", role))
			}
			addFix(fmt.Sprintf("ALTER TABLE %s OWNER TO %s;", ident(tb.Schema, tb.Name), role))
		}
	}
	if err := rows.Err(); err != nil {
		return c, fmt.Errorf("target %s: read table privileges: %w", d.Target.Database(), err)
	}
	if len(problems) > 0 {
		c.Status = Fail
		c.Detail = strings.Join(problems, "; ")
		c.Fix = strings.Join(fixes, " ")
		return c, nil
	}
	c.Detail = fmt.Sprintf("%d selected tables exist and are writable, %d will be created", existing, created)
	return c, nil
}

// Apply modes, as reported by the apply mode check.
const (
	// ApplyReplica turns triggers and foreign-key checks off while applying
	// (session_replication_role = replica).
	ApplyReplica = "replica"
	// ApplyOrdered applies in source commit order, which keeps foreign keys
	// valid; target triggers fire.
	ApplyOrdered = "ordered"
)

// CanSetReplicaRole reports whether the session may set
// session_replication_role = replica (superuser, or GRANT SET ON PARAMETER
// on PostgreSQL 15 and later). It tries in a transaction and rolls back.
func CanSetReplicaRole(ctx context.Context, conn *pgx.Conn) (bool, error) {
	tx, err := conn.Begin(ctx)
	if err != nil {
		return false, fmt.Errorf("try session_replication_role: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	_, err = tx.Exec(ctx, `SET LOCAL session_replication_role = replica`)
	var pgErr *pgconn.PgError
	switch {
	case err == nil:
		return true, nil
	case errors.As(err, &pgErr) && pgErr.Code == "42501":
		return false, nil
	default:
		return false, fmt.Errorf("try session_replication_role: %w", err)
	}
}

// applyMode reports how sync will apply changes on this target.
func (t *targetServer) applyMode(ctx context.Context) (Check, error) {
	ok, err := t.replicaMode(ctx)
	if err != nil {
		return Check{}, err
	}
	if ok {
		return Check{Name: "apply mode", Status: Pass, Detail: "apply mode: " + ApplyReplica + " (triggers and FK checks off during apply; changes merged per key)"}, nil
	}
	return Check{Name: "apply mode", Status: Pass,
		Detail: "apply mode: " + ApplyOrdered + " (one statement per change in source order; the target's triggers and rules that replica mode would not fire are disabled for the migration and foreign keys are checked at each batch's commit; cleanup restores them)"}, nil
}
