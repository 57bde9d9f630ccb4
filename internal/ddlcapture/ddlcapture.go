// Package ddlcapture records, on a source database, each DDL command into
// a table that the migration's publication carries (--ddl-capture), so
// that the statements reach the target in commit order with the data: an
// event trigger on ddl_command_end (and sql_drop, for what a command
// dropped) inserts one row per command into seren_replicator.ddl_log, and
// the applier runs the statement on the target at that row's place in the
// stream (apply/ddl.go).
package ddlcapture

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/serenorg/postgres-seren-replicator/internal/conninfo"
)

// Names of what the capture makes on a source database. The schema is the
// tool's: the selection never covers it (internal/plan), and init's schema
// dump leaves it out.
const (
	Schema      = "seren_replicator"
	Table       = "ddl_log"
	EndTrigger  = "seren_replicator_ddl_command_end"
	DropTrigger = "seren_replicator_sql_drop"
)

// QualifiedTable is the capture table's name, quoted.
var QualifiedTable = pgx.Identifier{Schema, Table}.Sanitize()

// IsCaptureTable reports whether a published table is the capture table.
func IsCaptureTable(schema, name string) bool { return schema == Schema && name == Table }

// IsOwnDumpEntry reports whether an entry of pg_restore --list (the part
// after the dump ID and OIDs) is one of the capture's event triggers: a
// dump of the whole source database holds them, and the target must not
// get them.
func IsOwnDumpEntry(rest string) bool {
	for _, name := range []string{EndTrigger, DropTrigger} {
		if strings.HasPrefix(rest, "EVENT TRIGGER - "+name+" ") || strings.HasPrefix(rest, "COMMENT - EVENT TRIGGER "+name+" ") {
			return true
		}
	}
	return false
}

// State is what a source database holds of the capture.
type State struct {
	// Triggers: both event triggers exist; Enabled: neither is disabled.
	Triggers, Enabled bool
	// TableExists: the capture table exists.
	TableExists bool
	// Published: the publication asked about carries the capture table.
	Published bool
	// Publications are every publication that carries it.
	Publications []string
	// Owner is the role that owns the capture function (who installed it).
	Owner string
}

// Installed reports whether the capture records DDL for the publication.
func (s State) Installed() bool { return s.Triggers && s.Enabled && s.TableExists && s.Published }

// Any reports whether anything of the capture is left in the database.
func (s State) Any() bool { return s.Triggers || s.TableExists }

// Inspect reads the capture's state in the database conn is connected to,
// for publication (empty: none in particular).
func Inspect(ctx context.Context, conn *pgx.Conn, publication string) (State, error) {
	var s State
	var owner *string
	// By catalog joins, not to_regclass: a role without USAGE on the
	// tool's schema may still ask.
	err := conn.QueryRow(ctx, `WITH cap AS (SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
			WHERE n.nspname = $3 AND c.relname = $4)
		SELECT (SELECT count(*) FROM pg_event_trigger WHERE evtname IN ($1, $2)) = 2,
		NOT EXISTS (SELECT 1 FROM pg_event_trigger WHERE evtname IN ($1, $2) AND evtenabled = 'D'),
		EXISTS (SELECT 1 FROM cap),
		ARRAY(SELECT p.pubname::text FROM pg_publication p
			WHERE p.puballtables AND EXISTS (SELECT 1 FROM cap)
				OR EXISTS (SELECT 1 FROM pg_publication_rel r JOIN cap ON cap.oid = r.prrelid WHERE r.prpubid = p.oid)
			ORDER BY 1),
		(SELECT pg_get_userbyid(p.proowner)::text FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
			WHERE n.nspname = $3 AND p.proname = 'capture_ddl')`,
		EndTrigger, DropTrigger, Schema, Table).Scan(&s.Triggers, &s.Enabled, &s.TableExists, &s.Publications, &owner)
	if err != nil {
		return s, fmt.Errorf("look up the DDL capture: %w", err)
	}
	if owner != nil {
		s.Owner = *owner
	}
	for _, p := range s.Publications {
		if p == publication {
			s.Published = true
		}
	}
	s.Published = s.Published && s.TableExists
	return s, nil
}

// Install makes the capture record the DDL of the database conn is
// connected to into a table that publication carries, in one transaction:
// the table, the functions and the event triggers (replaced when they
// exist, so a newer version of the tool updates them), then the table
// added to the publication. The commands of the tool's own sessions (this
// one's application_name) are not recorded.
func Install(ctx context.Context, conn *pgx.Conn, publication string) error {
	var app string
	if err := conn.QueryRow(ctx, `SELECT current_setting('application_name')`).Scan(&app); err != nil {
		return fmt.Errorf("install the DDL capture: %w", err)
	}
	skip := []string{conninfo.DefaultApplicationName}
	if app != "" && app != conninfo.DefaultApplicationName {
		skip = append(skip, app)
	}
	tx, err := conn.Begin(ctx)
	if err != nil {
		return fmt.Errorf("install the DDL capture: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	if _, err := tx.Exec(ctx, installSQL(skip)); err != nil {
		return installError(err)
	}
	// The migration's role (the publication's owner) reads the table:
	// sync asks which captured statements are still ahead of the stream.
	var owner string
	if err := tx.QueryRow(ctx, `SELECT coalesce((SELECT pg_get_userbyid(pubowner)::text FROM pg_publication WHERE pubname = $1), current_user)`, publication).Scan(&owner); err != nil {
		return fmt.Errorf("install the DDL capture: %w", err)
	}
	role := pgx.Identifier{owner}.Sanitize()
	if _, err := tx.Exec(ctx, "GRANT USAGE ON SCHEMA "+pgx.Identifier{Schema}.Sanitize()+" TO "+role+"; GRANT SELECT ON "+QualifiedTable+" TO "+role); err != nil {
		return fmt.Errorf("install the DDL capture: let %s read %s: %w", owner, QualifiedTable, err)
	}
	var published, all bool
	if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_publication_rel r JOIN pg_publication p ON p.oid = r.prpubid
			WHERE p.pubname = $1 AND r.prrelid = to_regclass($2)),
		EXISTS (SELECT 1 FROM pg_publication WHERE pubname = $1 AND puballtables)`, publication, QualifiedTable).Scan(&published, &all); err != nil {
		return fmt.Errorf("install the DDL capture: %w", err)
	}
	if !published && !all {
		pub := pgx.Identifier{publication}.Sanitize()
		if _, err := tx.Exec(ctx, "ALTER PUBLICATION "+pub+" ADD TABLE "+QualifiedTable); err != nil {
			return fmt.Errorf("add %s to publication %s: %w", QualifiedTable, publication, err)
		}
		// Before PostgreSQL 15 a walsender that decoded a change to the
		// table while it was not published keeps it unpublished until the
		// publication itself changes (see snapshot.publish).
		if _, err := tx.Exec(ctx, "ALTER PUBLICATION "+pub+" SET (publish = 'insert, update, delete, truncate')"); err != nil {
			return fmt.Errorf("publication %s: %w", publication, err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return installError(err)
	}
	return nil
}

// installError says what a refusal to install means.
func installError(err error) error {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "42501" {
		return fmt.Errorf("%w: install the DDL capture: %v: creating event triggers needs a superuser (or, on a managed service, its administrator role: rds_superuser on RDS and Aurora, cloudsqlsuperuser on Cloud SQL, neon_superuser on Neon, postgres on Supabase); validate says whether this role may; without --ddl-capture, sync follows schema changes from the stream alone", ErrNotAllowed, pgErr.Message)
	}
	return fmt.Errorf("install the DDL capture: %w", err)
}

// ErrNotAllowed means the role may not create event triggers.
var ErrNotAllowed = errors.New("event triggers not allowed")

// Removal says what Remove did.
type Removal struct {
	// Unpublished: the capture table left the publication.
	Unpublished bool
	// Dropped: the triggers, functions and table were dropped.
	Dropped bool
	// KeptFor are the other publications that still carry the capture
	// table (other migrations of the database): then the capture stays.
	KeptFor []string
}

// Remove takes the capture table out of publication and, when no other
// publication carries it, drops the event triggers, the functions, the
// table and the tool's schema when nothing else is left in it.
func Remove(ctx context.Context, conn *pgx.Conn, publication string) (Removal, error) {
	var r Removal
	st, err := Inspect(ctx, conn, publication)
	if err != nil || !st.Any() {
		return r, err
	}
	tx, err := conn.Begin(ctx)
	if err != nil {
		return r, fmt.Errorf("remove the DDL capture: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	if st.Published && publication != "" {
		var all bool
		if err := tx.QueryRow(ctx, `SELECT puballtables FROM pg_publication WHERE pubname = $1`, publication).Scan(&all); err != nil {
			return r, fmt.Errorf("remove the DDL capture: %w", err)
		}
		if !all {
			if _, err := tx.Exec(ctx, "ALTER PUBLICATION "+pgx.Identifier{publication}.Sanitize()+" DROP TABLE "+QualifiedTable); err != nil {
				return r, fmt.Errorf("remove %s from publication %s: %w", QualifiedTable, publication, err)
			}
			r.Unpublished = true
		}
	}
	for _, p := range st.Publications {
		if p != publication {
			r.KeptFor = append(r.KeptFor, p)
		}
	}
	if len(r.KeptFor) == 0 {
		if _, err := tx.Exec(ctx, dropSQL()); err != nil {
			return r, fmt.Errorf("remove the DDL capture (installed by %s): %w", orUnknown(st.Owner), err)
		}
		r.Dropped = true
	}
	if err := tx.Commit(ctx); err != nil {
		return r, fmt.Errorf("remove the DDL capture: %w", err)
	}
	if r.Dropped {
		// The schema goes only when nothing else is in it; it may hold
		// what cutover --reverse keeps on this server.
		_, _ = conn.Exec(ctx, "DROP SCHEMA IF EXISTS "+pgx.Identifier{Schema}.Sanitize())
	}
	return r, nil
}

func orUnknown(s string) string {
	if s == "" {
		return "an unknown role"
	}
	return s
}

// Availability is whether the role may install the capture.
type Availability struct {
	OK bool
	// Why says how that is known: superuser, the result of a trial.
	Why string
}

// Probe finds out whether the role conn is logged in as may create event
// triggers: it creates one (and a function for it) in a transaction it
// rolls back. A superuser may; on managed services whether the
// administrator role may depends on the service, which the trial answers
// without naming it.
func Probe(ctx context.Context, conn *pgx.Conn) (Availability, error) {
	var super bool
	var role string
	if err := conn.QueryRow(ctx, `SELECT rolsuper, rolname FROM pg_roles WHERE rolname = current_user`).Scan(&super, &role); err != nil {
		return Availability{}, fmt.Errorf("read the role: %w", err)
	}
	if super {
		return Availability{OK: true, Why: fmt.Sprintf("role %s is a superuser", role)}, nil
	}
	tx, err := conn.Begin(ctx)
	if err != nil {
		return Availability{}, err
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	_, err = tx.Exec(ctx, `CREATE FUNCTION pg_temp.seren_replicator_probe() RETURNS event_trigger LANGUAGE plpgsql AS $$BEGIN END$$;
		CREATE EVENT TRIGGER seren_replicator_probe ON ddl_command_end EXECUTE PROCEDURE pg_temp.seren_replicator_probe()`)
	var pgErr *pgconn.PgError
	switch {
	case err == nil:
		var member []string
		_ = tx.QueryRow(ctx, `SELECT ARRAY(SELECT rolname::text FROM pg_roles WHERE rolname IN ('rds_superuser', 'cloudsqlsuperuser', 'neon_superuser', 'azure_pg_admin')
			AND pg_has_role(current_user, oid, 'MEMBER') ORDER BY 1)`).Scan(&member)
		why := fmt.Sprintf("role %s created an event trigger (rolled back)", role)
		if len(member) > 0 {
			why += " as a member of " + strings.Join(member, ", ")
		}
		return Availability{OK: true, Why: why}, nil
	case errors.As(err, &pgErr) && pgErr.Code == "42501":
		return Availability{Why: fmt.Sprintf("role %s may not create event triggers: %s", role, pgErr.Message)}, nil
	case ctx.Err() != nil:
		return Availability{}, ctx.Err()
	default:
		return Availability{Why: fmt.Sprintf("role %s could not try to create an event trigger: %v", role, err)}, nil
	}
}
