package main

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/serenorg/postgres-seren-replicator/internal/plan"
)

// Owners and privileges are the application's: init gives each table the
// source's owner and grants where the target role can, and says what it
// could not. Cutover compares them again before the hand-over, so that the
// application does not find on its first query that a grant or an owner is
// missing: it changes nothing (a role that could not set them at init
// cannot now) and prints the statements an administrator would run.

// tableAccessSQL lists, for each table named in $1 that exists, the name
// as given, the owner and each privilege granted ("TYPE grantee", the
// grantee =public or =owner for the owner's own), ignoring who granted
// it. A table with default privileges lists its owner's.
const tableAccessSQL = `SELECT n, pg_get_userbyid(c.relowner),
	coalesce((SELECT array_agg(DISTINCT format('%s %s', a.privilege_type, CASE a.grantee WHEN 0 THEN '=public' WHEN c.relowner THEN '=owner' ELSE pg_get_userbyid(a.grantee) END))
		FROM aclexplode(coalesce(c.relacl, acldefault('r', c.relowner))) a), '{}')
	FROM unnest($1::text[]) AS n JOIN pg_class c ON c.oid = to_regclass(n)`

type tableAccess struct {
	owner  string
	grants []string // "PRIVILEGE grantee", sorted
}

func readTableAccess(ctx context.Context, conn *pgx.Conn, names []string) (map[string]tableAccess, error) {
	rows, err := conn.Query(ctx, tableAccessSQL, names)
	if err != nil {
		return nil, err
	}
	out := map[string]tableAccess{}
	for rows.Next() {
		var name string
		var a tableAccess
		if err := rows.Scan(&name, &a.owner, &a.grants); err != nil {
			return nil, err
		}
		slices.Sort(a.grants)
		out[name] = a
	}
	return out, rows.Err()
}

// accessDrift returns the statements (each ending in a semicolon) that
// would give db's selected tables on the target the owners and privileges
// they have on the source.
func accessDrift(ctx context.Context, db plan.Database) ([]string, error) {
	names := make([]string, len(db.Tables))
	for i, t := range db.Tables {
		names[i] = pgx.Identifier{t.Schema, t.Name}.Sanitize()
	}
	src, err := db.Source.Connect(ctx)
	if err != nil {
		return nil, err
	}
	defer src.Close(context.Background())
	dst, err := db.Target.Connect(ctx)
	if err != nil {
		return nil, err
	}
	defer dst.Close(context.Background())
	want, err := readTableAccess(ctx, src, names)
	if err != nil {
		return nil, fmt.Errorf("read owners and privileges on the source %s: %w", db.Name, err)
	}
	got, err := readTableAccess(ctx, dst, names)
	if err != nil {
		return nil, fmt.Errorf("read owners and privileges on the target %s: %w", db.Name, err)
	}
	var fixes []string
	for _, name := range names {
		s, ok := want[name]
		d, ok2 := got[name]
		if !ok || !ok2 {
			continue
		}
		fixes = append(fixes, accessFixes(name, s, d)...)
	}
	return fixes, nil
}

// accessFixes are the statements that turn the target's access d to a
// table into the source's s: the owner first (the owner's own privileges
// go with it), then grants and revokes.
func accessFixes(table string, s, d tableAccess) []string {
	var fixes []string
	owner := pgx.Identifier{s.owner}.Sanitize()
	if s.owner != d.owner {
		fixes = append(fixes, fmt.Sprintf("ALTER TABLE %s OWNER TO %s;", table, owner))
	}
	split := func(g string) (grantee, priv string) {
		priv, grantee, _ = strings.Cut(g, " ")
		switch grantee {
		case "=public":
			return "PUBLIC", priv
		case "=owner":
			return owner, priv
		}
		return pgx.Identifier{grantee}.Sanitize(), priv
	}
	for _, g := range s.grants {
		if !slices.Contains(d.grants, g) {
			grantee, priv := split(g)
			fixes = append(fixes, fmt.Sprintf("GRANT %s ON TABLE %s TO %s;", priv, table, grantee))
		}
	}
	for _, g := range d.grants {
		if !slices.Contains(s.grants, g) {
			grantee, priv := split(g)
			if s.owner != d.owner && grantee == owner {
				continue // the new owner's privileges come with ownership
			}
			fixes = append(fixes, fmt.Sprintf("REVOKE %s ON TABLE %s FROM %s;", priv, table, grantee))
		}
	}
	return fixes
}
