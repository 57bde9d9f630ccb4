package snapshot

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// sourceOwnersSQL lists the source's objects with their owners, names fully
// qualified (the session's search_path is empty): schemas, tables, views,
// materialized views, sequences not owned by a table (those follow their
// table), functions and procedures, and standalone types. Reserved roles'
// objects, extension members and the tool's schema ($1) are left out.
const sourceOwnersSQL = `SELECT kind, name, schema, owner FROM (
	SELECT 'SCHEMA' AS kind, quote_ident(n.nspname) AS name, '' AS schema, n.nspowner AS ownerid, n.oid AS oid, 'pg_namespace'::regclass AS classid
		FROM pg_namespace n
		WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', $1) AND n.nspname NOT LIKE 'pg\_%'
	UNION ALL
	SELECT CASE c.relkind WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW' WHEN 'S' THEN 'SEQUENCE' WHEN 'f' THEN 'FOREIGN TABLE' ELSE 'TABLE' END,
		quote_ident(n.nspname) || '.' || quote_ident(c.relname), quote_ident(n.nspname), c.relowner, c.oid, 'pg_class'::regclass
		FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f') AND NOT c.relispartition
		AND n.nspname NOT IN ('pg_catalog', 'information_schema', $1) AND n.nspname NOT LIKE 'pg\_%'
		AND NOT (c.relkind = 'S' AND EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
			AND d.objid = c.oid AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i')))
	UNION ALL
	SELECT CASE p.prokind WHEN 'p' THEN 'PROCEDURE' WHEN 'a' THEN 'AGGREGATE' ELSE 'FUNCTION' END,
		p.oid::regprocedure::text, quote_ident(n.nspname), p.proowner, p.oid, 'pg_proc'::regclass
		FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
		WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', $1) AND n.nspname NOT LIKE 'pg\_%'
	UNION ALL
	SELECT CASE t.typtype WHEN 'd' THEN 'DOMAIN' ELSE 'TYPE' END, t.oid::regtype::text, quote_ident(n.nspname), t.typowner, t.oid, 'pg_type'::regclass
		FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
		WHERE (t.typtype IN ('e', 'd', 'r') OR (t.typtype = 'c' AND (SELECT relkind FROM pg_class WHERE oid = t.typrelid) = 'c'))
		AND n.nspname NOT IN ('pg_catalog', 'information_schema', $1) AND n.nspname NOT LIKE 'pg\_%'
) o
CROSS JOIN LATERAL (SELECT pg_get_userbyid(o.ownerid) AS owner) r
WHERE r.owner NOT LIKE 'pg\_%'
AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = o.classid AND d.objid = o.oid AND d.deptype = 'e')
ORDER BY CASE kind WHEN 'SCHEMA' THEN 0 ELSE 1 END, name`

// restoreOwners gives the target's objects the owners they have on the
// source, when the target role restored them as itself (it is not a
// superuser). It may hand an object to a role it can become: one it is a
// member of, or one it may grant itself (CREATEROLE; on PostgreSQL 16 and
// later, ADMIN OPTION, which it has on the roles init created). The role
// keeps that membership, so it still owns the tables for sync. It returns,
// as SQL an administrator can run, what it could not restore.
func restoreOwners(ctx context.Context, src, dst *pgx.Conn, checkpointSchema string) (pending []string, err error) {
	if _, err := src.Exec(ctx, "SET search_path = ''"); err != nil {
		return nil, fmt.Errorf("read owners on the source: %w", err)
	}
	defer src.Exec(context.WithoutCancel(ctx), "RESET search_path")
	rows, err := src.Query(ctx, sourceOwnersSQL, checkpointSchema)
	if err != nil {
		return nil, fmt.Errorf("read owners on the source: %w", err)
	}
	type object struct{ kind, name, schema, owner string }
	objects, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (object, error) {
		var o object
		err := r.Scan(&o.kind, &o.name, &o.schema, &o.owner)
		return o, err
	})
	if err != nil {
		return nil, fmt.Errorf("read owners on the source: %w", err)
	}
	reachable := map[string]bool{}
	for _, o := range objects {
		if _, seen := reachable[o.owner]; !seen {
			reachable[o.owner] = becomeRole(ctx, dst, o.owner)
		}
		sql := fmt.Sprintf("ALTER %s %s OWNER TO %s", o.kind, o.name, pgx.Identifier{o.owner}.Sanitize())
		if !reachable[o.owner] {
			pending = append(pending, sql+";")
			continue
		}
		// A new owner needs CREATE on the object's schema (a superuser did
		// not on the source): granted for the change and taken back.
		stmts := []string{sql}
		if o.schema != "" {
			var canCreate bool
			if err := dst.QueryRow(ctx, `SELECT COALESCE(has_schema_privilege($1, to_regnamespace($2), 'CREATE'), true)`, o.owner, o.schema).Scan(&canCreate); err != nil {
				return pending, fmt.Errorf("restore owner: %w", err)
			}
			if !canCreate {
				owner := pgx.Identifier{o.owner}.Sanitize()
				stmts = []string{"GRANT CREATE ON SCHEMA " + o.schema + " TO " + owner, sql, "REVOKE CREATE ON SCHEMA " + o.schema + " FROM " + owner}
			}
		}
		switch err := savepointExec(ctx, dst, stmts...); {
		case err == nil, isMissingObject(err):
			// Restored, or not copied (outside the selection).
		case isPermission(err):
			pending = append(pending, sql+";")
		default:
			return pending, fmt.Errorf("restore owner: %s: %w", sql, err)
		}
	}
	return pending, nil
}

// becomeRole makes sure the session's role may act as role: it is a member
// already, or grants itself membership. It reports whether it may.
func becomeRole(ctx context.Context, dst *pgx.Conn, role string) bool {
	var exists, member bool
	err := dst.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1),
		COALESCE((SELECT pg_has_role(oid, 'MEMBER') FROM pg_roles WHERE rolname = $1), false)`, role).Scan(&exists, &member)
	if err != nil || !exists {
		return false
	}
	if member {
		return true
	}
	return savepointExec(ctx, dst, fmt.Sprintf("GRANT %s TO CURRENT_USER", pgx.Identifier{role}.Sanitize())) == nil
}

// savepointExec runs statements in a transaction of their own, so that a
// failure changes nothing and leaves the session usable.
func savepointExec(ctx context.Context, conn *pgx.Conn, statements ...string) error {
	tx, err := conn.Begin(ctx)
	if err != nil {
		return err
	}
	for _, sql := range statements {
		if _, err := tx.Exec(ctx, sql); err != nil {
			tx.Rollback(context.WithoutCancel(ctx))
			return err
		}
	}
	return tx.Commit(ctx)
}

func isMissingObject(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && (pgErr.Code == "42P01" || pgErr.Code == "42883" || pgErr.Code == "42704" || pgErr.Code == "3F000")
}

func isPermission(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "42501"
}
