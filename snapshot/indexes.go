package snapshot

import (
	"context"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/serenorg/postgres-seren-replicator/internal/selection"
	"github.com/serenorg/postgres-seren-replicator/internal/sqltext"
)

// SchemaObject is an index or a constraint that the source has on a table
// of the migration and the target lacks: made on the source after the
// table's copy. Its statements make it on the target without blocking the
// stream's writes for long (CREATE INDEX CONCURRENTLY, constraints added
// NOT VALID and validated apart), each in a transaction of its own.
type SchemaObject struct {
	Table selection.Table
	// Kind is "index" or "constraint"; Name its name on the source.
	Kind, Name string
	// Key identifies it with its definition, for callers that remember
	// objects across polls.
	Key string
	// SQL makes it; when the target has an index of the same definition
	// under another name, it renames that one instead.
	SQL []string
	// Early: safe to make before the stream has passed the source position
	// where it was seen (a new enum label only widens what the target
	// accepts).
	Early bool
	// dropOnFailure is the index a failed CREATE INDEX CONCURRENTLY leaves
	// behind, invalid, to drop.
	dropOnFailure string
}

// sourceIndex is an index of a table with the constraint it backs, if any.
type sourceIndex struct {
	name, quoted, def             string
	conName, conType, conDef      string
	valid, partitionedOrInherited bool
}

const indexesSQL = `SELECT ic.relname, quote_ident(ic.relname), pg_get_indexdef(i.indexrelid),
		COALESCE(c.conname, ''), COALESCE(c.contype::text, ''), COALESCE(pg_get_constraintdef(c.oid), ''), i.indisvalid,
		t.relkind = 'p' OR ic.relkind = 'I'
	FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid JOIN pg_class t ON t.oid = i.indrelid
	LEFT JOIN pg_constraint c ON c.conindid = i.indexrelid AND c.conrelid = i.indrelid AND c.contype IN ('p', 'u', 'x')
	WHERE i.indrelid = $1::regclass ORDER BY 1`

// constraintsSQL lists a table's check constraints and foreign keys (those
// declared on it, not inherited from a partitioned parent).
const constraintsSQL = `SELECT conname, quote_ident(conname), contype::text, pg_get_constraintdef(oid), convalidated
	FROM pg_constraint WHERE conrelid = $1::regclass AND contype IN ('c', 'f') AND conparentid = 0 AND NOT (contype = 'c' AND coninhcount > 0)
	ORDER BY 1`

func readIndexes(ctx context.Context, conn *pgx.Conn, table string) ([]sourceIndex, error) {
	rows, err := conn.Query(ctx, indexesSQL, table)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []sourceIndex
	for rows.Next() {
		var ix sourceIndex
		if err := rows.Scan(&ix.name, &ix.quoted, &ix.def, &ix.conName, &ix.conType, &ix.conDef, &ix.valid, &ix.partitionedOrInherited); err != nil {
			return nil, err
		}
		out = append(out, ix)
	}
	return out, rows.Err()
}

// shape is an index definition without its name.
func (ix sourceIndex) shape() string {
	return strings.Replace(ix.def, " "+ix.quoted+" ON ", " ON ", 1)
}

// MissingObjects compares the indexes, check constraints and foreign keys
// of tables (named alike on both sides) and returns what the target lacks.
// Partitioned tables and their partitions' inherited indexes are left out
// (CREATE INDEX CONCURRENTLY cannot build those). Both sessions get
// search_path = pg_catalog, so definitions name every object by schema.
func MissingObjects(ctx context.Context, src, dst *pgx.Conn, tables []selection.Table) ([]SchemaObject, error) {
	for _, c := range []*pgx.Conn{src, dst} {
		if _, err := c.Exec(ctx, "SET search_path = pg_catalog"); err != nil {
			return nil, fmt.Errorf("set search_path: %w", err)
		}
	}
	idents := make([]string, len(tables))
	for i, t := range tables {
		idents[i] = pgx.Identifier{t.Schema, t.Name}.Sanitize()
	}
	want, err := readFingerprints(ctx, src, idents)
	if err != nil {
		return nil, fmt.Errorf("read the indexes and constraints of the tables on the source: %w", err)
	}
	have, err := readFingerprints(ctx, dst, idents)
	if err != nil {
		return nil, fmt.Errorf("read the indexes and constraints of the tables on the target: %w", err)
	}
	var out []SchemaObject
	for i, t := range tables {
		w, ok := want[i]
		if !ok || w.kind != "r" {
			continue // gone, or partitioned
		}
		h, ok := have[i]
		if !ok || h.objects == w.objects {
			continue // not on the target (yet), or nothing missing
		}
		objs, err := missingOn(ctx, src, dst, t, idents[i])
		if err != nil {
			return nil, fmt.Errorf("compare the indexes and constraints of %s: %w", t.Qualified(), err)
		}
		out = append(out, objs...)
	}
	return out, nil
}

// fingerprintSQL reads, for each table of $1 (quoted names) that exists,
// its relkind and the names of what missingOn compares: indexes, check
// constraints and foreign keys, and the labels of the enums its columns
// use. Where both sides read alike, the target lacks none of them; only
// tables that differ are compared in detail, so a poll of many tables
// costs one query per side.
const fingerprintSQL = `SELECT t.i, c.relkind::text, concat_ws(' | ',
		(SELECT string_agg(ic.relname, ',' ORDER BY ic.relname) FROM pg_index x JOIN pg_class ic ON ic.oid = x.indexrelid WHERE x.indrelid = c.oid),
		(SELECT string_agg(conname, ',' ORDER BY conname) FROM pg_constraint
			WHERE conrelid = c.oid AND contype IN ('c', 'f') AND conparentid = 0 AND NOT (contype = 'c' AND coninhcount > 0)),
		(SELECT string_agg(format('%I.%I', n.nspname, e.typname) || ':' ||
				(SELECT string_agg(enumlabel::text, ',' ORDER BY enumlabel::text) FROM pg_enum WHERE enumtypid = e.oid), ';' ORDER BY n.nspname, e.typname)
			FROM pg_type e JOIN pg_namespace n ON n.oid = e.typnamespace
			WHERE e.typtype = 'e' AND e.oid IN (SELECT b.oid FROM pg_attribute a JOIN pg_type b ON b.oid = a.atttypid OR b.typarray = a.atttypid
				WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped)))
	FROM unnest($1::text[]) WITH ORDINALITY AS t(ident, i) JOIN pg_class c ON c.oid = to_regclass(t.ident)`

// fingerprint is one table's line of fingerprintSQL.
type fingerprint struct{ kind, objects string }

// readFingerprints reads fingerprintSQL, by index in idents.
func readFingerprints(ctx context.Context, conn *pgx.Conn, idents []string) (map[int]fingerprint, error) {
	rows, err := conn.Query(ctx, fingerprintSQL, idents)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[int]fingerprint{}
	for rows.Next() {
		var i int
		var f fingerprint
		if err := rows.Scan(&i, &f.kind, &f.objects); err != nil {
			return nil, err
		}
		out[i-1] = f
	}
	return out, rows.Err()
}

func missingOn(ctx context.Context, src, dst *pgx.Conn, t selection.Table, ident string) ([]SchemaObject, error) {
	want, err := readIndexes(ctx, src, ident)
	if err != nil {
		return nil, err
	}
	have, err := readIndexes(ctx, dst, ident)
	if err != nil {
		return nil, err
	}
	haveName := map[string]bool{}
	for _, ix := range have {
		haveName[ix.name] = true
	}
	wantName := map[string]bool{}
	for _, ix := range want {
		wantName[ix.name] = true
	}
	var out []SchemaObject
	for _, ix := range want {
		if haveName[ix.name] || !ix.valid || ix.partitionedOrInherited {
			continue
		}
		o := SchemaObject{Table: t, Kind: "index", Name: ix.name, Key: t.Qualified() + "|" + ix.def + "|" + ix.conDef}
		if ix.conName != "" {
			o.Kind = "constraint"
		}
		renamed := false
		for _, h := range have {
			if !wantName[h.name] && h.shape() == ix.shape() && h.conType == ix.conType {
				// Renamed on the source: rename the target's.
				if h.conName != "" {
					o.SQL = []string{fmt.Sprintf("ALTER TABLE %s RENAME CONSTRAINT %s TO %s", ident, h.quoted, ix.quoted)}
				} else {
					o.SQL = []string{fmt.Sprintf("ALTER INDEX %s RENAME TO %s", pgx.Identifier{t.Schema, h.name}.Sanitize(), ix.quoted)}
				}
				renamed = true
				break
			}
		}
		switch {
		case renamed:
		case ix.conType == "x":
			o.SQL = []string{fmt.Sprintf("ALTER TABLE %s ADD CONSTRAINT %s %s", ident, ix.quoted, ix.conDef)}
		default:
			create := strings.Replace(ix.def, "INDEX ", "INDEX CONCURRENTLY ", 1)
			o.SQL = []string{create}
			o.dropOnFailure = pgx.Identifier{t.Schema, ix.name}.Sanitize()
			if ix.conType == "p" || ix.conType == "u" {
				add := "UNIQUE"
				if ix.conType == "p" {
					add = "PRIMARY KEY"
				}
				add = fmt.Sprintf("ALTER TABLE %s ADD CONSTRAINT %s %s USING INDEX %s", ident, pgx.Identifier{ix.conName}.Sanitize(), add, ix.quoted)
				switch {
				case strings.Contains(ix.conDef, "INITIALLY DEFERRED"):
					add += " DEFERRABLE INITIALLY DEFERRED"
				case strings.Contains(ix.conDef, "DEFERRABLE") && !strings.Contains(ix.conDef, "NOT DEFERRABLE"):
					add += " DEFERRABLE"
				}
				o.SQL = append(o.SQL, add)
			}
		}
		out = append(out, o)
	}
	cons, err := missingConstraints(ctx, src, dst, t, ident)
	if err != nil {
		return nil, err
	}
	labels, err := missingLabels(ctx, src, dst, t, ident)
	return append(append(out, cons...), labels...), err
}

// enumTypesSQL lists the enum types a table's columns use, directly or as
// array elements.
const enumTypesSQL = `SELECT DISTINCT format('%I.%I', n.nspname, e.typname),
		ARRAY(SELECT enumlabel::text FROM pg_enum WHERE enumtypid = e.oid ORDER BY enumsortorder)
	FROM pg_attribute a JOIN pg_type e ON e.oid = a.atttypid OR e.typarray = a.atttypid JOIN pg_namespace n ON n.oid = e.typnamespace
	WHERE a.attrelid = $1::regclass AND a.attnum > 0 AND NOT a.attisdropped AND e.typtype = 'e'`

// missingLabels finds the labels added on the source (ALTER TYPE … ADD
// VALUE) to the enums a table uses that the target's enums lack: rows with
// them would be refused. Each is added in the source's order.
func missingLabels(ctx context.Context, src, dst querier, t selection.Table, ident string) ([]SchemaObject, error) {
	rows, err := src.Query(ctx, enumTypesSQL, ident)
	if err != nil {
		return nil, err
	}
	type enum struct {
		name   string
		labels []string
	}
	enums, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (enum, error) {
		var e enum
		return e, r.Scan(&e.name, &e.labels)
	})
	if err != nil {
		return nil, err
	}
	var out []SchemaObject
	for _, e := range enums {
		var have []string
		if err := dst.QueryRow(ctx, `SELECT ARRAY(SELECT enumlabel::text FROM pg_enum WHERE enumtypid = to_regtype($1) ORDER BY enumsortorder)`, e.name).Scan(&have); err != nil {
			return nil, err
		}
		if len(have) == 0 {
			continue // not on the target: made with the column that uses it
		}
		o := SchemaObject{Table: t, Kind: "enum label", Name: e.name, Early: true}
		known := map[string]bool{}
		for _, l := range have {
			known[l] = true
		}
		for i, l := range e.labels {
			if known[l] {
				continue
			}
			where := ""
			for j := i - 1; j >= 0 && where == ""; j-- {
				if known[e.labels[j]] {
					where = " AFTER " + sqltext.Literal(e.labels[j])
				}
			}
			for j := i + 1; j < len(e.labels) && where == ""; j++ {
				if known[e.labels[j]] {
					where = " BEFORE " + sqltext.Literal(e.labels[j])
				}
			}
			o.SQL = append(o.SQL, fmt.Sprintf("ALTER TYPE %s ADD VALUE IF NOT EXISTS %s%s", e.name, sqltext.Literal(l), where))
			known[l] = true
		}
		if len(o.SQL) > 0 {
			o.Key = t.Qualified() + "|" + e.name + "|" + strings.Join(o.SQL, ";")
			out = append(out, o)
		}
	}
	return out, nil
}

func missingConstraints(ctx context.Context, src, dst *pgx.Conn, t selection.Table, ident string) ([]SchemaObject, error) {
	type constraint struct {
		name, quoted, kind, def string
		valid                   bool
	}
	read := func(conn *pgx.Conn) (map[string]constraint, []constraint, error) {
		rows, err := conn.Query(ctx, constraintsSQL, ident)
		if err != nil {
			return nil, nil, err
		}
		defer rows.Close()
		byName := map[string]constraint{}
		var list []constraint
		for rows.Next() {
			var c constraint
			if err := rows.Scan(&c.name, &c.quoted, &c.kind, &c.def, &c.valid); err != nil {
				return nil, nil, err
			}
			byName[c.name] = c
			list = append(list, c)
		}
		return byName, list, rows.Err()
	}
	_, want, err := read(src)
	if err != nil {
		return nil, err
	}
	have, _, err := read(dst)
	if err != nil {
		return nil, err
	}
	var out []SchemaObject
	for _, c := range want {
		if _, ok := have[c.name]; ok {
			continue
		}
		def := c.def
		if !strings.HasSuffix(def, " NOT VALID") {
			def += " NOT VALID"
		}
		o := SchemaObject{Table: t, Kind: "constraint", Name: c.name, Key: t.Qualified() + "|" + c.name + "|" + c.def,
			SQL: []string{fmt.Sprintf("ALTER TABLE %s ADD CONSTRAINT %s %s", ident, c.quoted, def)}}
		if c.valid {
			o.SQL = append(o.SQL, fmt.Sprintf("ALTER TABLE %s VALIDATE CONSTRAINT %s", ident, c.quoted))
		}
		out = append(out, o)
	}
	return out, nil
}

// Make runs the object's statements on the target, each in a transaction
// of its own; an index a failed concurrent build left invalid is dropped.
func (o SchemaObject) Make(ctx context.Context, dst *pgx.Conn) error {
	for _, sql := range o.SQL {
		if _, err := dst.Exec(ctx, sql); err != nil {
			if o.dropOnFailure != "" {
				_, _ = dst.Exec(context.WithoutCancel(ctx), "DROP INDEX CONCURRENTLY IF EXISTS "+o.dropOnFailure)
			}
			return fmt.Errorf("%s: %w", sql, err)
		}
	}
	return nil
}
