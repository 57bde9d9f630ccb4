package preflight

import (
	"context"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/serenorg/postgres-seren-replicator/internal/plan"
)

// Dependency is an object init would copy that needs a table the selection
// leaves out: restoring it on the target would fail, after the data copy.
type Dependency struct {
	// Object is what depends, as the source names it (a table, view or
	// materialized view); Kind says how (a foreign key, a view's query, a
	// column default's sequence).
	Object, Kind string
	// Needs is the excluded table it depends on.
	Needs string
}

func (d Dependency) String() string {
	return fmt.Sprintf("%s (%s) needs excluded table %s", d.Object, d.Kind, d.Needs)
}

// dependenciesSQL finds, for the selected tables ($1 schemas, $2 names),
// the objects init copies that depend on user tables outside the selection:
// foreign keys of selected tables (partitions count as their root), views
// and materialized views (pg_dump copies them all), and column defaults that
// take a sequence owned by an excluded table (pg_dump leaves it out with its
// table). Partitions are mapped to their root through pg_inherits, which
// every supported server has.
const dependenciesSQL = `WITH RECURSIVE sel AS (
	SELECT c.oid FROM unnest($1::text[], $2::text[]) AS t(schema, name)
	JOIN pg_namespace n ON n.nspname = t.schema
	JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = t.name AND c.relkind IN ('r', 'p')),
root(oid, root) AS (
	SELECT c.oid, c.oid FROM pg_class c WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition
	UNION ALL
	SELECT i.inhrelid, r.root FROM root r JOIN pg_inherits i ON i.inhparent = r.oid
	JOIN pg_class c ON c.oid = i.inhrelid AND c.relispartition),
excl AS (
	SELECT r.oid, r.root FROM root r JOIN pg_class c ON c.oid = r.root JOIN pg_namespace n ON n.oid = c.relnamespace
	WHERE r.root NOT IN (SELECT oid FROM sel)
	AND n.nspname NOT IN ('pg_catalog', 'information_schema', $3) AND n.nspname NOT LIKE 'pg\_toast%' AND n.nspname NOT LIKE 'pg\_temp%'
	AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = r.root AND d.deptype = 'e'))
SELECT k.conrelid::regclass::text, 'foreign key ' || quote_ident(k.conname), e.root::regclass::text
	FROM pg_constraint k JOIN root a ON a.oid = k.conrelid JOIN excl e ON e.oid = k.confrelid
	WHERE k.contype = 'f' AND a.root IN (SELECT oid FROM sel)
UNION
SELECT v.oid::regclass::text, CASE v.relkind WHEN 'm' THEN 'materialized view' ELSE 'view' END, e.root::regclass::text
	FROM pg_rewrite rw JOIN pg_class v ON v.oid = rw.ev_class
	JOIN pg_depend d ON d.classid = 'pg_rewrite'::regclass AND d.objid = rw.oid AND d.refclassid = 'pg_class'::regclass
	JOIN excl e ON e.oid = d.refobjid
	WHERE v.relkind IN ('v', 'm') AND d.refobjid <> v.oid
	AND v.relnamespace NOT IN ('pg_catalog'::regnamespace, 'information_schema'::regnamespace)
	AND NOT EXISTS (SELECT 1 FROM pg_depend x WHERE x.classid = 'pg_class'::regclass AND x.objid = v.oid AND x.deptype = 'e')
UNION
SELECT ad.adrelid::regclass::text, 'default of column ' || quote_ident(a.attname) || ' takes sequence ' || s.oid::regclass::text, e.root::regclass::text
	FROM pg_attrdef ad JOIN pg_attribute a ON a.attrelid = ad.adrelid AND a.attnum = ad.adnum
	JOIN root t ON t.oid = ad.adrelid
	JOIN pg_depend d ON d.classid = 'pg_attrdef'::regclass AND d.objid = ad.oid AND d.refclassid = 'pg_class'::regclass
	JOIN pg_class s ON s.oid = d.refobjid AND s.relkind = 'S'
	JOIN pg_depend o ON o.classid = 'pg_class'::regclass AND o.objid = s.oid AND o.refclassid = 'pg_class'::regclass AND o.deptype IN ('a', 'i')
	JOIN excl e ON e.oid = o.refobjid
	WHERE t.root IN (SELECT oid FROM sel)
ORDER BY 1, 2, 3`

// Dependencies lists what the selection would copy that needs a table it
// leaves out. conn is a session on db's source database; schema is the
// tool's checkpoint schema (never copied).
func Dependencies(ctx context.Context, conn *pgx.Conn, db plan.Database, schema string) ([]Dependency, error) {
	schemas, names := tableArrays(db.Tables)
	rows, err := conn.Query(ctx, dependenciesSQL, schemas, names, schema)
	if err != nil {
		return nil, fmt.Errorf("source %s: read dependencies of the selected tables: %w", db.Name, err)
	}
	deps, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Dependency, error) {
		var d Dependency
		err := r.Scan(&d.Object, &d.Kind, &d.Needs)
		return d, err
	})
	if err != nil {
		return nil, fmt.Errorf("source %s: read dependencies of the selected tables: %w", db.Name, err)
	}
	return deps, nil
}

// checkDependencies fails when the selection cuts a dependency.
func checkDependencies(ctx context.Context, conn *pgx.Conn, d plan.Database, schema string) (Check, error) {
	c := Check{Name: "selection dependencies", Database: d.Name, Status: Pass,
		Detail: "nothing selected depends on an excluded table"}
	deps, err := Dependencies(ctx, conn, d, schema)
	if err != nil || len(deps) == 0 {
		return c, err
	}
	c.Status = Fail
	c.Detail = DescribeDependencies(deps)
	c.Fix = "include the excluded tables named (drop them from --exclude-tables, or add them to --include-tables), or exclude the tables that depend on them too; views and column defaults cannot be left out, so the tables they need must be included"
	return c, nil
}

// DescribeDependencies renders dependencies as one line.
func DescribeDependencies(deps []Dependency) string {
	parts := make([]string, len(deps))
	for i, d := range deps {
		parts[i] = d.String()
	}
	return strings.Join(parts, "; ")
}

// rowSecuritySQL lists the selected tables ($1 schemas, $2 names) that have
// row-level security enabled, and whether the session's role bypasses their
// policies (superuser, BYPASSRLS, or owner without FORCE; on the target, $3,
// also an owner with FORCE, which the applier holds without it for the
// migration).
const rowSecuritySQL = `SELECT format('%I.%I', n.nspname, c.relname),
	(SELECT rolsuper OR rolbypassrls FROM pg_roles WHERE rolname = current_user)
		OR (pg_has_role(c.relowner, 'USAGE') AND (NOT c.relforcerowsecurity OR $3))
	FROM unnest($1::text[], $2::text[]) AS t(schema, name)
	JOIN pg_namespace n ON n.nspname = t.schema
	JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = t.name
	WHERE c.relrowsecurity
	ORDER BY 1`

// checkRowSecurity reports the selected tables with row-level security on
// one side, and fails when the role there would not see or write them whole
// (every session runs with row_security = off, which then fails).
func checkRowSecurity(ctx context.Context, conn *pgx.Conn, d plan.Database, side, user string) (Check, error) {
	c := Check{Name: side + " row-level security", Database: d.Name, Status: Pass, Detail: "no selected table has row-level security enabled"}
	schemas, names := tableArrays(d.Tables)
	rows, err := conn.Query(ctx, rowSecuritySQL, schemas, names, side == "target")
	if err != nil {
		return c, fmt.Errorf("%s %s: read row-level security: %w", side, d.Name, err)
	}
	var bypassed, blocked []string
	for rows.Next() {
		var name string
		var bypass bool
		if err := rows.Scan(&name, &bypass); err != nil {
			return c, fmt.Errorf("%s %s: read row-level security: %w", side, d.Name, err)
		}
		if bypass {
			bypassed = append(bypassed, name)
		} else {
			blocked = append(blocked, name)
		}
	}
	if err := rows.Err(); err != nil {
		return c, fmt.Errorf("%s %s: read row-level security: %w", side, d.Name, err)
	}
	switch {
	case len(blocked) > 0:
		c.Status = Fail
		c.Detail = fmt.Sprintf("policies would hide rows of %s from %s, so copying, applying and verifying them fails", strings.Join(blocked, ", "), user)
		c.Fix = fmt.Sprintf("as a superuser: ALTER ROLE %s BYPASSRLS; or, where %s owns the tables, ALTER TABLE … NO FORCE ROW LEVEL SECURITY", ident(user), user)
	case len(bypassed) > 0:
		c.Detail = fmt.Sprintf("enabled on %s; %s reads and writes them whole", strings.Join(bypassed, ", "), user)
	}
	return c, nil
}

// neverSelectedSQL lists the tables of the source database that no
// selection includes: foreign tables, tables that belong to an extension,
// and other sessions' temporary tables, with the reason.
const neverSelectedSQL = `SELECT format('%I.%I', n.nspname, c.relname),
	CASE WHEN c.relkind = 'f' THEN 'foreign table: its data lives on another server'
	     WHEN c.relpersistence = 't' THEN 'temporary table: it belongs to one session'
	     ELSE 'belongs to extension ' || (SELECT e.extname FROM pg_depend d JOIN pg_extension e ON e.oid = d.refobjid
	                                       WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e' LIMIT 1)
	          || ': CREATE EXTENSION makes it on the target' END
	FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
	WHERE c.relkind IN ('r', 'p', 'f') AND NOT c.relispartition
	AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\_toast%'
	AND (c.relkind = 'f' OR c.relpersistence = 't'
	     OR EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e'))
	ORDER BY 1`

// checkNeverSelected names the source's tables that are never replicated,
// so that nothing is left out without a word.
func checkNeverSelected(ctx context.Context, conn *pgx.Conn, d plan.Database) (Check, error) {
	c := Check{Name: "tables never replicated", Database: d.Name, Status: Pass,
		Detail: "none: no foreign, temporary or extension-owned tables"}
	rows, err := conn.Query(ctx, neverSelectedSQL)
	if err != nil {
		return c, fmt.Errorf("source %s: list foreign, temporary and extension tables: %w", d.Name, err)
	}
	var found []string
	for rows.Next() {
		var name, why string
		if err := rows.Scan(&name, &why); err != nil {
			return c, fmt.Errorf("source %s: list foreign, temporary and extension tables: %w", d.Name, err)
		}
		found = append(found, name+" ("+why+")")
	}
	if err := rows.Err(); err != nil {
		return c, fmt.Errorf("source %s: list foreign, temporary and extension tables: %w", d.Name, err)
	}
	if len(found) > 0 {
		c.Status = Warn
		c.Detail = "not replicated by design: " + strings.Join(found, "; ")
		c.Fix = "recreate foreign servers and user mappings on the target if the application needs them; extensions are created by init"
	}
	return c, nil
}
