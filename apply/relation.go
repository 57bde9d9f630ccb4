package apply

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/serenorg/postgres-seren-replicator/stream"
)

// relation is what the applier knows of one published table: the source's
// latest Relation message and the statements prepared for it on the target.
type relation struct {
	msg    *stream.Relation
	name   string   // schema.table, for messages
	target string   // quoted "schema"."table"
	cols   []string // quoted column names, in message order
	key    []int    // indexes of replica identity columns
	full   bool     // REPLICA IDENTITY FULL: match whole rows, one at a time
	types  []string // column types, for casts in multi-row statements
	// mergeable: changes may be merged into set-based statements (merge.go).
	mergeable bool
	// cascadeTarget: a foreign key of this table deletes its rows when the
	// referenced row goes (ON DELETE CASCADE on the target).
	cascadeTarget bool
	stmts         map[string]string
}

func newRelation(msg *stream.Relation) *relation {
	r := &relation{
		msg:    msg,
		name:   msg.Namespace + "." + msg.Name,
		target: pgx.Identifier{msg.Namespace, msg.Name}.Sanitize(),
		full:   msg.ReplicaIdentity == 'f',
		stmts:  map[string]string{},
	}
	for i, c := range msg.Columns {
		r.cols = append(r.cols, pgx.Identifier{c.Name}.Sanitize())
		if c.Key {
			r.key = append(r.key, i)
		}
	}
	return r
}

// targetColumn is a column of the target table.
type targetColumn struct {
	typ       string
	generated bool
}

// reconcile compares a Relation message with the target table. Columns the
// source added are added on the target (pgoutput carries no DDL); any other
// difference stops replication with an error naming the table and the fix,
// since guessing could lose data.
func (a *Applier) reconcile(ctx context.Context, msg *stream.Relation) (*relation, error) {
	r := newRelation(msg)
	name := msg.Namespace + "." + msg.Name
	qualified := pgx.Identifier{msg.Namespace, msg.Name}.Sanitize()
	rows, err := a.query(ctx, `SELECT a.attname, format_type(a.atttypid, a.atttypmod), a.attgenerated <> ''
		FROM pg_attribute a WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped`, qualified)
	if err != nil {
		return nil, fmt.Errorf("read target columns of %s: %w", name, err)
	}
	if len(rows) == 0 {
		return nil, permanent(fmt.Errorf("table %s is published on the source but does not exist on the target: create it there (re-run init, or run the source's CREATE TABLE on the target), then restart sync", name))
	}
	target := map[string]targetColumn{}
	for _, row := range rows {
		target[string(row[0])] = targetColumn{typ: string(row[1]), generated: string(row[2]) == "t"}
	}
	inStream := map[string]bool{}
	for _, c := range msg.Columns {
		inStream[c.Name] = true
		want, err := a.typeName(ctx, c.TypeOID, c.TypeMod)
		if err != nil {
			return nil, fmt.Errorf("table %s column %s: %w", name, c.Name, err)
		}
		r.types = append(r.types, want)
		have, ok := target[c.Name]
		switch {
		case !ok:
			if err := a.addColumn(ctx, name, qualified, c, want); err != nil {
				return nil, err
			}
		case have.typ != want:
			return nil, permanent(fmt.Errorf("table %s: column %s is %s on the source but %s on the target: run ALTER TABLE %s ALTER COLUMN %s TYPE %s on the target, then restart sync",
				name, c.Name, want, have.typ, qualified, pgx.Identifier{c.Name}.Sanitize(), want))
		}
	}
	for col, tc := range target {
		if !inStream[col] && !tc.generated {
			return nil, permanent(fmt.Errorf("table %s: column %s exists on the target but the source no longer sends it (dropped or renamed on the source): apply the same change on the target (ALTER TABLE %s DROP COLUMN or RENAME COLUMN), then restart sync",
				name, col, qualified))
		}
	}
	if err := a.holdTable(ctx, r); err != nil {
		return nil, err
	}
	if r.mergeable, err = a.mergeable(ctx, r, qualified); err != nil {
		return nil, err
	}
	cascade, err := a.query(ctx, `SELECT 1 FROM pg_constraint WHERE conrelid = to_regclass($1) AND contype = 'f' AND confdeltype = 'c'`, qualified)
	if err != nil {
		return nil, fmt.Errorf("read foreign keys of %s: %w", name, err)
	}
	r.cascadeTarget = len(cascade) > 0
	return r, nil
}

// mergeable reports whether the table's changes may be merged into
// set-based statements: identity by key (not FULL), every unique or
// exclusion constraint is exactly that key, and no trigger is set to fire
// even in replica mode.
func (a *Applier) mergeable(ctx context.Context, r *relation, qualified string) (bool, error) {
	if r.full || r.msg.ReplicaIdentity == 'n' && len(r.key) > 0 {
		return false, nil
	}
	rows, err := a.query(ctx, `SELECT i.indisexclusion OR i.indpred IS NOT NULL OR i.indexprs IS NOT NULL,
		(SELECT string_agg(a.attname, ',' ORDER BY a.attname) FROM pg_attribute a
		  WHERE a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey))
		FROM pg_index i WHERE i.indrelid = to_regclass($1) AND (i.indisunique OR i.indisexclusion)
		UNION ALL
		SELECT true, NULL FROM pg_trigger t WHERE t.tgrelid = to_regclass($1) AND t.tgenabled = 'A'`, qualified)
	if err != nil {
		return false, fmt.Errorf("read constraints of %s: %w", r.name, err)
	}
	keyCols := make([]string, len(r.key))
	for i, c := range r.key {
		keyCols[i] = r.msg.Columns[c].Name
	}
	sort.Strings(keyCols)
	key := strings.Join(keyCols, ",")
	for _, row := range rows {
		if string(row[0]) == "t" || string(row[1]) != key {
			return false, nil
		}
	}
	return true, nil
}

// typeName renders a source column type as format_type prints it on the
// source. The source's catalog is asked because pgoutput's Type message
// names a domain's base type, not the domain.
func (a *Applier) typeName(ctx context.Context, oid uint32, typmod int32) (string, error) {
	key := [2]int64{int64(oid), int64(typmod)}
	if name, ok := a.typeNames[key]; ok {
		return name, nil
	}
	if a.source == nil {
		conn, err := a.cfg.Source.ConnectWith(ctx, map[string]string{"search_path": "public"})
		if err != nil {
			return "", fmt.Errorf("connect to the source to describe types: %w", err)
		}
		a.source = conn
	}
	var name *string
	if err := a.source.QueryRow(ctx, `SELECT format_type($1::oid, $2::int)`, oid, typmod).Scan(&name); err != nil {
		return "", fmt.Errorf("look up source type %d: %w", oid, err)
	}
	if name == nil || *name == "???" {
		return "", permanent(fmt.Errorf("source type %d no longer exists", oid))
	}
	a.typeNames[key] = *name
	return *name, nil
}

// The statements below are built per relation, operation and "shape" (which
// columns are present, which old values are NULL) and prepared once.

func (r *relation) insertSQL() string {
	params := make([]string, len(r.cols))
	for i := range r.cols {
		params[i] = "$" + strconv.Itoa(i+1)
	}
	return fmt.Sprintf("INSERT INTO %s (%s) VALUES (%s)", r.target, strings.Join(r.cols, ", "), strings.Join(params, ", "))
}

// updateSQL sets the columns in set (unchanged TOAST columns are left out, so
// the target keeps its value) and matches the row by where.
func (r *relation) updateSQL(set []int, where matcher) string {
	parts := make([]string, len(set))
	for i, c := range set {
		parts[i] = r.cols[c] + " = $" + strconv.Itoa(i+1)
	}
	return fmt.Sprintf("UPDATE %s SET %s WHERE %s", r.target, strings.Join(parts, ", "), where.sql(r, len(set)+1))
}

func (r *relation) deleteSQL(where matcher) string {
	return fmt.Sprintf("DELETE FROM %s WHERE %s", r.target, where.sql(r, 1))
}

// matcher selects the row a change applies to: by key columns, or, under
// REPLICA IDENTITY FULL, exactly one row equal to the old tuple (tables
// without a key may hold duplicates; the source changed one of them).
type matcher struct {
	cols  []int  // columns compared, in parameter order
	nulls []bool // per cols entry: the old value is NULL
	full  bool
}

func (m matcher) key() string {
	var b strings.Builder
	for i, c := range m.cols {
		fmt.Fprintf(&b, "%d", c)
		if m.nulls[i] {
			b.WriteByte('n')
		}
		b.WriteByte(',')
	}
	return b.String()
}

func (m matcher) sql(r *relation, firstParam int) string {
	conds := make([]string, 0, len(m.cols))
	p := firstParam
	for i, c := range m.cols {
		switch {
		case m.nulls[i]:
			conds = append(conds, r.cols[c]+" IS NULL")
		case m.full:
			// Compare text forms: every type has one (json, point, xml have no
			// equality operator), and both sides print with the same settings.
			conds = append(conds, r.cols[c]+"::text = $"+strconv.Itoa(p)+"::text")
			p++
		default:
			conds = append(conds, r.cols[c]+" = $"+strconv.Itoa(p))
			p++
		}
	}
	cond := strings.Join(conds, " AND ")
	if m.full {
		return fmt.Sprintf("ctid = (SELECT ctid FROM %s WHERE %s LIMIT 1)", r.target, cond)
	}
	return cond
}
