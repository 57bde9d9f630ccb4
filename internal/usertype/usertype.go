// Package usertype makes on a target the user-defined types that a
// source's columns use and the target lacks: enums with their labels, and
// domains with their defaults, NOT NULL and checks. pg_dump -t dumps a
// table without the types it uses, and pgoutput names a new column's type
// only by OID, so both the copy of a table added to a migration and the
// stream's schema changes need them made apart.
package usertype

import (
	"context"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/serenorg/postgres-seren-replicator/internal/sqltext"
)

// Source reads the source's catalog: a *pgx.Conn or a pgx.Tx (at a
// snapshot, to see the types as a copy's rows have them).
type Source interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// Target answers a yes-or-no catalog query with one text parameter on the
// target.
type Target func(ctx context.Context, sql, arg string) (bool, error)

// Created is one type the target lacked, with the statements that make it
// (its schema first when the target lacks that too).
type Created struct {
	// Name is the type's qualified, quoted name.
	Name string
	// SQL makes it, in order.
	SQL []string
}

// UnsupportedError is a type the source has and the target lacks that this
// package cannot make: a base type from an extension, a composite, a range.
type UnsupportedError struct {
	// Name is the type's qualified, quoted name.
	Name string
	// Extension is the source's extension the type belongs to, if any.
	Extension string
}

func (e *UnsupportedError) Error() string {
	if e.Extension != "" {
		return fmt.Sprintf("type %s (of extension %s) does not exist on the target", e.Name, e.Extension)
	}
	return fmt.Sprintf("type %s does not exist on the target", e.Name)
}

// Fix is the statement, or the advice, that makes the type on the target.
func (e *UnsupportedError) Fix() string {
	if e.Extension != "" {
		return "CREATE EXTENSION " + pgx.Identifier{e.Extension}.Sanitize()
	}
	return "create it as on the source (pg_dump --schema-only of the source shows its definition)"
}

// Missing returns what makes on the target the source's type oid and the
// types it is made from (an array's element, a domain's base type) that the
// target lacks, in the order to run. Built-in types and types the target
// has return nothing. An enum the target has keeps its labels: adding
// labels is the caller's part, where its rows allow.
func Missing(ctx context.Context, src Source, dst Target, oid uint32) ([]Created, error) {
	var out []Created
	seen := map[uint32]bool{}
	var walk func(oid uint32) error
	walk = func(oid uint32) error {
		if oid == 0 || seen[oid] {
			return nil
		}
		seen[oid] = true
		var (
			kind, schema, name, base string
			elem, baseOID            uint32
			labels, checks           []string
			notNull                  bool
			def                      *string
		)
		err := src.QueryRow(ctx, `SELECT t.typtype::text, n.nspname, t.typname, CASE WHEN t.typcategory = 'A' THEN t.typelem ELSE 0 END,
				t.typbasetype, COALESCE(format_type(NULLIF(t.typbasetype, 0), t.typtypmod), ''), t.typnotnull, t.typdefault,
				ARRAY(SELECT e.enumlabel::text FROM pg_enum e WHERE e.enumtypid = t.oid ORDER BY e.enumsortorder),
				ARRAY(SELECT 'CONSTRAINT ' || quote_ident(c.conname) || ' ' || pg_get_constraintdef(c.oid) FROM pg_constraint c WHERE c.contypid = t.oid ORDER BY c.conname)
			FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace WHERE t.oid = $1`, oid).
			Scan(&kind, &schema, &name, &elem, &baseOID, &base, &notNull, &def, &labels, &checks)
		if err != nil {
			return fmt.Errorf("look up source type %d: %w", oid, err)
		}
		if schema == "pg_catalog" || schema == "information_schema" {
			return nil
		}
		if elem != 0 {
			return walk(elem)
		}
		qualified := pgx.Identifier{schema, name}.Sanitize()
		has, err := dst(ctx, `SELECT to_regtype($1) IS NOT NULL`, qualified)
		if err != nil {
			return fmt.Errorf("look up type %s on the target: %w", qualified, err)
		}
		if has {
			return nil
		}
		var create string
		switch kind {
		case "e":
			quoted := make([]string, len(labels))
			for i, l := range labels {
				quoted[i] = sqltext.Literal(l)
			}
			create = fmt.Sprintf("CREATE TYPE %s AS ENUM (%s)", qualified, strings.Join(quoted, ", "))
		case "d":
			if err := walk(baseOID); err != nil {
				return err
			}
			create = fmt.Sprintf("CREATE DOMAIN %s AS %s", qualified, base)
			if def != nil {
				create += " DEFAULT " + *def
			}
			if notNull {
				create += " NOT NULL"
			}
			if len(checks) > 0 {
				create += " " + strings.Join(checks, " ")
			}
		default:
			unsupported := &UnsupportedError{Name: qualified}
			err := src.QueryRow(ctx, `SELECT COALESCE((SELECT e.extname FROM pg_depend d JOIN pg_extension e ON e.oid = d.refobjid
				WHERE d.classid = 'pg_type'::regclass AND d.objid = $1 AND d.refclassid = 'pg_extension'::regclass AND d.deptype = 'e' LIMIT 1), '')`, oid).
				Scan(&unsupported.Extension)
			if err != nil {
				return fmt.Errorf("look up the extension of source type %s: %w", qualified, err)
			}
			return unsupported
		}
		c := Created{Name: qualified, SQL: []string{create}}
		if !schemaMade(out, schema) {
			hasSchema, err := dst(ctx, `SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)`, schema)
			if err != nil {
				return fmt.Errorf("look up schema %s on the target: %w", schema, err)
			}
			if !hasSchema {
				c.SQL = append([]string{"CREATE SCHEMA " + pgx.Identifier{schema}.Sanitize()}, c.SQL...)
			}
		}
		out = append(out, c)
		return nil
	}
	if err := walk(oid); err != nil {
		return nil, err
	}
	return out, nil
}

// schemaMade reports whether an earlier statement of out makes schema.
func schemaMade(out []Created, schema string) bool {
	want := "CREATE SCHEMA " + pgx.Identifier{schema}.Sanitize()
	for _, c := range out {
		for _, s := range c.SQL {
			if s == want {
				return true
			}
		}
	}
	return false
}
