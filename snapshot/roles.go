package snapshot

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/serenorg/postgres-seren-replicator/internal/sqltext"
)

// Capabilities are what the target role may do.
type Capabilities struct {
	Role       string
	Superuser  bool
	CreateRole bool
	CreateDB   bool
}

// TargetCapabilities reads the connected role's attributes.
func TargetCapabilities(ctx context.Context, dst *pgx.Conn) (Capabilities, error) {
	var c Capabilities
	err := dst.QueryRow(ctx, `SELECT rolname, rolsuper, rolcreaterole, rolcreatedb FROM pg_roles WHERE rolname = current_user`).
		Scan(&c.Role, &c.Superuser, &c.CreateRole, &c.CreateDB)
	if err != nil {
		return c, fmt.Errorf("read target role attributes: %w", err)
	}
	return c, nil
}

// reservedPrefixes name roles that belong to the server or the provider.
var reservedPrefixes = []string{"pg_", "rds", "azure", "cloudsql", "alloydb", "google", "aiven", "supabase", "neon"}

// reservedRole reports whether a role must not be copied.
func reservedRole(name string) bool {
	for _, p := range reservedPrefixes {
		if strings.HasPrefix(name, p) {
			return true
		}
	}
	return false
}

// RolesResult is what CopyRoles did.
type RolesResult struct {
	Created     []string
	Memberships int
	// Notices say, one line each, what was skipped and why.
	Notices []string
}

type sourceRole struct {
	name                                              string
	super, inherit, createRole, createDB, login, repl bool
	bypassRLS                                         bool
	connLimit                                         int
	validUntil                                        *time.Time
	password                                          *string
}

// CopyRoles creates the source's roles and memberships on the target,
// adapted to a managed target: the bootstrap superuser, reserved roles
// (pg_*, rds*, azure*, cloudsql*...) and roles that already exist are
// skipped; attributes the target role cannot grant (SUPERUSER, REPLICATION,
// BYPASSRLS without superuser; CREATEDB, CREATEROLE it lacks) are dropped.
// Each skip is a notice; only a failed catalog read is an error.
// Password hashes are copied when the source lets us read pg_authid.
func CopyRoles(ctx context.Context, src, dst *pgx.Conn) (RolesResult, error) {
	var res RolesResult
	caps, err := TargetCapabilities(ctx, dst)
	if err != nil {
		return res, err
	}
	roles, passwords, err := readSourceRoles(ctx, src)
	if err != nil {
		return res, err
	}
	if !passwords && len(roles) > 0 {
		res.Notices = append(res.Notices, "source role cannot read pg_authid: roles are created without passwords (set them with ALTER ROLE ... PASSWORD)")
	}
	existing := map[string]bool{}
	rows, err := dst.Query(ctx, `SELECT rolname FROM pg_roles`)
	if err != nil {
		return res, fmt.Errorf("list target roles: %w", err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return res, fmt.Errorf("list target roles: %w", err)
	}
	for _, n := range names {
		existing[n] = true
	}
	if !caps.Superuser && !caps.CreateRole {
		var want []string
		for _, r := range roles {
			if !existing[r.name] && !reservedRole(r.name) {
				want = append(want, r.name)
			}
		}
		if len(want) > 0 {
			res.Notices = append(res.Notices, fmt.Sprintf("target role %s has no CREATEROLE: roles not created: %s", caps.Role, strings.Join(want, ", ")))
		}
		return res, nil
	}
	for _, r := range roles {
		switch {
		case strings.HasPrefix(r.name, "pg_"):
			continue // built into every server
		case reservedRole(r.name):
			res.Notices = append(res.Notices, fmt.Sprintf("role %s skipped: reserved name", r.name))
			continue
		case existing[r.name]:
			res.Notices = append(res.Notices, fmt.Sprintf("role %s skipped: already exists on the target", r.name))
			continue
		}
		attrs, dropped := roleAttributes(r, caps)
		sql := "CREATE ROLE " + pgx.Identifier{r.name}.Sanitize() + " " + strings.Join(attrs, " ")
		if r.password != nil {
			sql += " PASSWORD " + sqltext.Literal(*r.password)
		}
		if r.validUntil != nil {
			sql += " VALID UNTIL " + sqltext.Literal(r.validUntil.UTC().Format(time.RFC3339))
		}
		if _, err := dst.Exec(ctx, sql); err != nil {
			res.Notices = append(res.Notices, fmt.Sprintf("role %s not created: %v", r.name, err))
			continue
		}
		existing[r.name] = true
		res.Created = append(res.Created, r.name)
		if len(dropped) > 0 {
			res.Notices = append(res.Notices, fmt.Sprintf("role %s created without %s (the target role cannot grant it)", r.name, strings.Join(dropped, ", ")))
		}
	}
	return res, copyMemberships(ctx, src, dst, existing, &res)
}

func roleAttributes(r sourceRole, caps Capabilities) (attrs, dropped []string) {
	flag := func(on bool, name string, allowed bool) {
		switch {
		case !on:
			attrs = append(attrs, "NO"+name)
		case allowed:
			attrs = append(attrs, name)
		default:
			dropped = append(dropped, name)
		}
	}
	flag(r.super, "SUPERUSER", caps.Superuser)
	flag(r.createDB, "CREATEDB", caps.Superuser || caps.CreateDB)
	flag(r.createRole, "CREATEROLE", caps.Superuser || caps.CreateRole)
	flag(r.inherit, "INHERIT", true)
	flag(r.login, "LOGIN", true)
	flag(r.repl, "REPLICATION", caps.Superuser)
	flag(r.bypassRLS, "BYPASSRLS", caps.Superuser)
	attrs = append(attrs, fmt.Sprintf("CONNECTION LIMIT %d", r.connLimit))
	return attrs, dropped
}

func readSourceRoles(ctx context.Context, src *pgx.Conn) ([]sourceRole, bool, error) {
	// pg_authid holds the password hashes; only a superuser may read it.
	const cols = `rolname, rolsuper, rolinherit, rolcreaterole, rolcreatedb, rolcanlogin, rolreplication, rolbypassrls, rolconnlimit, rolvaliduntil`
	var withPasswords bool
	if err := src.QueryRow(ctx, `SELECT has_table_privilege('pg_catalog.pg_authid', 'SELECT')`).Scan(&withPasswords); err != nil {
		return nil, false, fmt.Errorf("list source roles: %w", err)
	}
	query := `SELECT ` + cols + `, NULL::text FROM pg_roles WHERE oid <> 10 ORDER BY rolname`
	if withPasswords {
		query = `SELECT ` + cols + `, rolpassword FROM pg_authid WHERE oid <> 10 ORDER BY rolname`
	}
	rows, err := src.Query(ctx, query)
	if err != nil {
		return nil, false, fmt.Errorf("list source roles: %w", err)
	}
	defer rows.Close()
	var out []sourceRole
	for rows.Next() {
		var r sourceRole
		if err := rows.Scan(&r.name, &r.super, &r.inherit, &r.createRole, &r.createDB, &r.login, &r.repl, &r.bypassRLS,
			&r.connLimit, &r.validUntil, &r.password); err != nil {
			return nil, false, fmt.Errorf("list source roles: %w", err)
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, false, fmt.Errorf("list source roles: %w", err)
	}
	return out, withPasswords, nil
}

// copyMemberships grants role memberships whose both ends exist on the target.
func copyMemberships(ctx context.Context, src, dst *pgx.Conn, existing map[string]bool, res *RolesResult) error {
	rows, err := src.Query(ctx, `SELECT r.rolname, m.rolname, am.admin_option FROM pg_auth_members am
		JOIN pg_roles r ON r.oid = am.roleid JOIN pg_roles m ON m.oid = am.member
		WHERE m.oid <> 10 ORDER BY 1, 2`)
	if err != nil {
		return fmt.Errorf("list source role memberships: %w", err)
	}
	type grant struct {
		role, member string
		admin        bool
	}
	var grants []grant
	for rows.Next() {
		var g grant
		if err := rows.Scan(&g.role, &g.member, &g.admin); err != nil {
			return err
		}
		grants = append(grants, g)
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("list source role memberships: %w", err)
	}
	for _, g := range grants {
		if strings.HasPrefix(g.member, "pg_") {
			continue // memberships among built-in roles come with the server
		}
		if !existing[g.role] || !existing[g.member] || reservedRole(g.member) {
			res.Notices = append(res.Notices, fmt.Sprintf("membership of %s in %s skipped: a role is missing on the target", g.member, g.role))
			continue
		}
		var already bool
		err := dst.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_auth_members am JOIN pg_roles r ON r.oid = am.roleid
			JOIN pg_roles m ON m.oid = am.member WHERE r.rolname = $1 AND m.rolname = $2)`, g.role, g.member).Scan(&already)
		if err != nil {
			return fmt.Errorf("check membership: %w", err)
		}
		if already {
			continue
		}
		sql := "GRANT " + pgx.Identifier{g.role}.Sanitize() + " TO " + pgx.Identifier{g.member}.Sanitize()
		if g.admin {
			sql += " WITH ADMIN OPTION"
		}
		if _, err := dst.Exec(ctx, sql); err != nil {
			res.Notices = append(res.Notices, fmt.Sprintf("membership of %s in %s not granted: %v", g.member, g.role, err))
			continue
		}
		res.Memberships++
	}
	return nil
}
