package health

import (
	"context"
	"fmt"
	"slices"

	"github.com/jackc/pgx/v5"

	"github.com/serenorg/postgres-seren-replicator/internal/plan"
	"github.com/serenorg/postgres-seren-replicator/internal/selection"
)

// sequencesSQL lists user sequences with their last value, direction and
// the table owning them (serial and identity columns), if any.
const sequencesSQL = `SELECT s.schemaname, s.sequencename, s.last_value, s.increment_by,
		tn.nspname, t.relname
	FROM pg_sequences s
	JOIN pg_namespace n ON n.nspname = s.schemaname
	JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = s.sequencename
	LEFT JOIN pg_depend d ON d.classid = 'pg_class'::regclass AND d.objid = c.oid
		AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i')
	LEFT JOIN pg_class t ON t.oid = d.refobjid
	LEFT JOIN pg_namespace tn ON tn.oid = t.relnamespace
	WHERE s.schemaname NOT IN ('pg_catalog', 'information_schema', 'seren_replicator')`

type sequence struct {
	last      *int64
	increment int64
	owner     *selection.Table
}

func listSequences(ctx context.Context, conn *pgx.Conn) (map[string]sequence, error) {
	rows, err := conn.Query(ctx, sequencesSQL)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := make(map[string]sequence)
	for rows.Next() {
		var schema, name string
		var ownerSchema, ownerName *string
		var s sequence
		if err := rows.Scan(&schema, &name, &s.last, &s.increment, &ownerSchema, &ownerName); err != nil {
			return nil, err
		}
		if ownerSchema != nil && ownerName != nil {
			s.owner = &selection.Table{Schema: *ownerSchema, Name: *ownerName}
		}
		out[pgx.Identifier{schema, name}.Sanitize()] = s
	}
	return out, rows.Err()
}

// sequencesBehind compares the sequences of the selected tables, and those
// no table owns, between source and target. Logical decoding does not carry
// sequence values, so while streaming they are expected to be behind until
// cutover copies them; this only reports.
func sequencesBehind(ctx context.Context, src, dst *pgx.Conn, db plan.Database) ([]string, error) {
	srcSeqs, err := listSequences(ctx, src)
	if err != nil {
		return nil, fmt.Errorf("list sequences on %s: %w", db.Source, err)
	}
	if len(srcSeqs) == 0 {
		return nil, nil
	}
	dstSeqs, err := listSequences(ctx, dst)
	if err != nil {
		return nil, fmt.Errorf("list sequences on %s: %w", db.Target, err)
	}
	selected := make(map[[2]string]bool, len(db.Tables))
	for _, t := range db.Tables {
		selected[[2]string{t.Schema, t.Name}] = true
	}
	var behind []string
	for name, s := range srcSeqs {
		if s.owner != nil && !selected[[2]string{s.owner.Schema, s.owner.Name}] {
			continue
		}
		if s.last == nil { // never used, or not readable
			continue
		}
		d, ok := dstSeqs[name]
		switch {
		case !ok, d.last == nil:
			behind = append(behind, name)
		case s.increment >= 0 && *d.last < *s.last, s.increment < 0 && *d.last > *s.last:
			behind = append(behind, name)
		}
	}
	slices.Sort(behind)
	return behind, nil
}
