package checkpoint

import (
	"context"
	"fmt"
)

// The source's attribute numbers of each replicated table's columns, as the
// target's copy last matched them. pgoutput names columns but does not
// number them; an attribute number survives a column's rename and is never
// reused, so comparing the numbers the source's catalog gives a Relation
// message's columns with these tells a rename (same number, new name) from a
// drop and an add (a number gone, a new one), and a name reused by a new
// column from the old column that carried it.

func (s Store) columnsTable() string { return s.Ident("source_columns") }

// ensureColumnsSQL creates the table of source attribute numbers.
func (s Store) ensureColumnsSQL() string {
	return fmt.Sprintf(`CREATE TABLE IF NOT EXISTS %s (
	slot_name    text NOT NULL,
	source_relid oid NOT NULL,
	attnum       int2 NOT NULL,
	column_name  text NOT NULL,
	PRIMARY KEY (slot_name, source_relid, attnum))`, s.columnsTable())
}

// SourceColumns maps a table's source attribute numbers to the names its
// target copy has for them.
type SourceColumns map[int16]string

// LoadColumns returns the recorded source columns of the slot's tables by
// source OID; none when nothing is recorded.
func (s Store) LoadColumns(ctx context.Context, q Rows, slot string) (map[uint32]SourceColumns, error) {
	rows, err := q.Query(ctx, fmt.Sprintf(`SELECT source_relid, attnum, column_name FROM %s WHERE slot_name = $1`, s.columnsTable()), slot)
	if isUndefinedTable(err) {
		return map[uint32]SourceColumns{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("load source columns of slot %s: %w", slot, err)
	}
	defer rows.Close()
	out := map[uint32]SourceColumns{}
	for rows.Next() {
		var relid uint32
		var attnum int16
		var name string
		if err := rows.Scan(&relid, &attnum, &name); err != nil {
			return nil, fmt.Errorf("load source columns of slot %s: %w", slot, err)
		}
		if out[relid] == nil {
			out[relid] = SourceColumns{}
		}
		out[relid][attnum] = name
	}
	if err := rows.Err(); err != nil && !isUndefinedTable(err) {
		return nil, fmt.Errorf("load source columns of slot %s: %w", slot, err)
	}
	return out, nil
}

// ForgetColumnsSQL removes a table's recorded columns (parameters in text
// form: slot, source OID); RecordColumnSQL then records each column (slot,
// source OID, attribute number, name).
func (s Store) ForgetColumnsSQL() string {
	return fmt.Sprintf(`DELETE FROM %s WHERE slot_name = $1::text AND source_relid = $2::text::oid`, s.columnsTable())
}

// RecordColumnSQL records one column; see ForgetColumnsSQL.
func (s Store) RecordColumnSQL() string {
	return fmt.Sprintf(`INSERT INTO %s (slot_name, source_relid, attnum, column_name) VALUES ($1::text, $2::text::oid, $3::text::int2, $4::text)`, s.columnsTable())
}

// RecordColumns records a table's source columns in the caller's
// transaction, replacing what was recorded.
func (s Store) RecordColumns(ctx context.Context, q Querier, slot string, relid uint32, cols SourceColumns) error {
	id := fmt.Sprint(relid)
	if _, err := q.Exec(ctx, s.ForgetColumnsSQL(), slot, id); err != nil {
		return fmt.Errorf("record source columns of table OID %d: %w", relid, err)
	}
	for num, name := range cols {
		if _, err := q.Exec(ctx, s.RecordColumnSQL(), slot, id, fmt.Sprint(num), name); err != nil {
			return fmt.Errorf("record source columns of table OID %d: %w", relid, err)
		}
	}
	return nil
}
