package apply

import (
	"context"
	"fmt"
	"sort"
	"strconv"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"

	"github.com/serenorg/postgres-seren-replicator/checkpoint"
	"github.com/serenorg/postgres-seren-replicator/stream"
)

// sourceAttr is one column of a source table as the source's catalog has it
// now.
type sourceAttr struct {
	num      int16
	name     string
	notNull  bool
	def      string // default expression, "" for none
	identity bool
}

// sourceShape is a source table's columns now, with the source's WAL
// position when they were read.
type sourceShape struct {
	attrs []sourceAttr
	// matches: the columns are the Relation message's columns, in the same
	// order, so their attribute numbers describe the message (no later
	// change to the table's columns has committed yet).
	matches bool
	// at is the source's WAL insert position when the catalog was read: a
	// schema change seen there has committed at or before it.
	at pglogrepl.LSN
	// found: the table still exists on the source.
	found bool
}

func (s sourceShape) byName(name string) (sourceAttr, bool) {
	for _, at := range s.attrs {
		if at.name == name {
			return at, true
		}
	}
	return sourceAttr{}, false
}

// readSourceShape reads, by OID, the columns of the table a Relation message
// describes (those pgoutput sends: not generated ones).
func (a *Applier) readSourceShape(ctx context.Context, msg *stream.Relation) (sourceShape, error) {
	var s sourceShape
	src, err := a.sourceConn(ctx)
	if err != nil {
		return s, err
	}
	rows, err := src.Query(ctx, `SELECT a.attnum, a.attname, a.attnotnull, COALESCE(pg_get_expr(d.adbin, d.adrelid), ''), a.attidentity <> '',
			pg_current_wal_lsn()::text
		FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
		WHERE a.attrelid = $1::oid AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''
		ORDER BY a.attnum`, msg.ID)
	if err != nil {
		return s, fmt.Errorf("read the columns of %s.%s on the source: %w", msg.Namespace, msg.Name, err)
	}
	var at string
	for rows.Next() {
		var c sourceAttr
		if err := rows.Scan(&c.num, &c.name, &c.notNull, &c.def, &c.identity, &at); err != nil {
			rows.Close()
			return s, fmt.Errorf("read the columns of %s.%s on the source: %w", msg.Namespace, msg.Name, err)
		}
		s.attrs = append(s.attrs, c)
	}
	if err := rows.Err(); err != nil {
		return s, fmt.Errorf("read the columns of %s.%s on the source: %w", msg.Namespace, msg.Name, err)
	}
	s.found = len(s.attrs) > 0
	if s.found {
		if s.at, err = pglogrepl.ParseLSN(at); err != nil {
			return s, fmt.Errorf("source WAL position %q: %w", at, err)
		}
	}
	s.matches = len(s.attrs) == len(msg.Columns)
	for i := 0; s.matches && i < len(s.attrs); i++ {
		s.matches = s.attrs[i].name == msg.Columns[i].Name
	}
	return s, nil
}

// rename is a column the source renamed: the same attribute number under a
// new name.
type rename struct{ from, to string }

// alignColumns gives each column of a Relation message the source
// attribute number it had then. Only the source's catalog now can tell, and
// only while it has exactly the message's columns: once a later change to
// the table's columns has committed, names may have moved in any way, and
// it reports false.
//
// Matching names are not enough when, since the record, some column is gone
// from the source and another is new: a column dropped and one added under
// the same name (or a name moved onto the new one) after the message leave
// the names as they were, on other attribute numbers.
func alignColumns(shape sourceShape, recorded checkpoint.SourceColumns) ([]int16, bool) {
	if !shape.matches {
		return nil, false
	}
	if recorded != nil {
		alive := map[int16]bool{}
		fresh := false
		for _, c := range shape.attrs {
			alive[c.num] = true
			if _, ok := recorded[c.num]; !ok {
				fresh = true
			}
		}
		for num := range recorded {
			if !alive[num] && fresh {
				return nil, false
			}
		}
	}
	nums := make([]int16, len(shape.attrs))
	for i, c := range shape.attrs {
		nums[i] = c.num
	}
	return nums, true
}

// columnChanges compares the recorded columns of the target's copy with a
// Relation message's aligned columns: a recorded number under a new name is
// a rename, a recorded number the message lacks a drop. It reports false
// when some target column has no recorded number (the record cannot speak
// for it).
func columnChanges(target map[string]targetColumn, recorded checkpoint.SourceColumns, cols []string, nums []int16) (drops []string, renames []rename, ok bool) {
	known := map[string]bool{}
	for _, name := range recorded {
		known[name] = true
	}
	for name, tc := range target {
		if !tc.generated && !known[name] {
			return nil, nil, false
		}
	}
	at := map[int16]string{}
	for i, num := range nums {
		if num != 0 {
			at[num] = cols[i]
		}
	}
	for num, name := range recorded {
		if _, ok := target[name]; !ok {
			continue // changed on the target by hand already
		}
		switch now, ok := at[num]; {
		case !ok:
			drops = append(drops, name)
		case now != name:
			renames = append(renames, rename{from: name, to: now})
		}
	}
	sort.Strings(drops)
	sort.Slice(renames, func(i, j int) bool { return renames[i].from < renames[j].from })
	return drops, renames, true
}

// followColumnRenames renames on the target the columns the source renamed
// (columnChanges). Renames that swap names go through temporary names.
func (a *Applier) followColumnRenames(ctx context.Context, name, qualified string, todo []rename, target map[string]targetColumn) error {
	if len(todo) == 0 {
		return nil
	}
	if a.cfg.SchemaChanges == SchemaChangesStop {
		rn := todo[0]
		return permanent(fmt.Errorf("table %s: column %s was renamed on the source to %s, and schema changes stop replication: run ALTER TABLE %s RENAME COLUMN %s TO %s on the target, then restart sync",
			name, rn.from, rn.to, qualified, pgx.Identifier{rn.from}.Sanitize(), pgx.Identifier{rn.to}.Sanitize()))
	}
	clash := false
	for _, rn := range todo {
		if _, taken := target[rn.to]; taken {
			clash = true
		}
	}
	alter := "ALTER TABLE " + qualified + " RENAME COLUMN "
	var ddl []string
	if clash {
		for i, rn := range todo {
			ddl = append(ddl, alter+pgx.Identifier{rn.from}.Sanitize()+" TO "+pgx.Identifier{tempColumn(target, i)}.Sanitize())
		}
		for i, rn := range todo {
			ddl = append(ddl, alter+pgx.Identifier{tempColumn(target, i)}.Sanitize()+" TO "+pgx.Identifier{rn.to}.Sanitize())
		}
	} else {
		for _, rn := range todo {
			ddl = append(ddl, alter+pgx.Identifier{rn.from}.Sanitize()+" TO "+pgx.Identifier{rn.to}.Sanitize())
		}
	}
	if err := a.inBatch(ctx, func() error { return a.runDDL(ctx, ddl) }); err != nil {
		return fmt.Errorf("table %s: rename the columns the source renamed: %w", name, err)
	}
	moved := map[string]targetColumn{}
	for _, rn := range todo {
		moved[rn.to] = target[rn.from]
		delete(target, rn.from)
	}
	for col, tc := range moved {
		target[col] = tc
	}
	for _, rn := range todo {
		a.log.Info("column renamed on the source: renamed on the target too", "table", name, "from", rn.from, "to", rn.to)
	}
	return nil
}

// tempColumn is a name for the i-th column of a swap that the target's
// table does not have.
func tempColumn(target map[string]targetColumn, i int) string {
	for n := i; ; n += 1000 {
		name := "seren_replicator_rename_" + strconv.Itoa(n)
		if _, taken := target[name]; !taken {
			return name
		}
	}
}

// recordColumns records the attribute numbers of a Relation message's
// columns, when known (alignColumns), in the batch's transaction: the
// target's columns match them from here on.
func (a *Applier) recordColumns(ctx context.Context, id uint32, cols []string, nums []int16) error {
	if nums == nil {
		return nil
	}
	want := checkpoint.SourceColumns{}
	for i, num := range nums {
		want[num] = cols[i]
	}
	if have, ok := a.srcCols[id]; ok && sameColumns(have, want) {
		return nil
	}
	relid := strconv.FormatUint(uint64(id), 10)
	err := a.inBatch(ctx, func() error {
		if _, err := a.query(ctx, a.cfg.Store.ForgetColumnsSQL(), a.cfg.Slot, relid); err != nil {
			return err
		}
		for num, name := range want {
			if _, err := a.query(ctx, a.cfg.Store.RecordColumnSQL(), a.cfg.Slot, relid, strconv.Itoa(int(num)), name); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("record the source columns of table OID %d: %w", id, err)
	}
	a.srcCols[id] = want
	return nil
}

func sameColumns(a, b checkpoint.SourceColumns) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// nameMoved fails when names decide (the catalog is past the message) and a
// column the message and the target's copy both name is, by the record, not
// the source's column of that name now: the source renamed or dropped the
// column the copy has and gave its name to a new one, before or after the
// message; names cannot tell which.
func nameMoved(name string, msg *stream.Relation, target map[string]targetColumn, recorded checkpoint.SourceColumns, shape sourceShape) error {
	if recorded == nil {
		return nil
	}
	was := map[string]int16{}
	for num, col := range recorded {
		was[col] = num
	}
	for _, c := range msg.Columns {
		now, ok := shape.byName(c.Name)
		if _, there := target[c.Name]; !there || !ok || was[c.Name] == 0 || was[c.Name] == now.num {
			continue
		}
		return cannotFollowError{
			why: fmt.Sprintf("column %s on the target is the source's column number %d, the source's column of that name is now number %d, and its catalog has changed again since", c.Name, was[c.Name], now.num),
			stop: fmt.Errorf("table %s: column %s on the target is no longer the source's column of that name (the source renamed or dropped it and a new column took the name): make the target's columns match the source's by hand (RENAME COLUMN, DROP COLUMN, ADD COLUMN with the source's values), or copy everything again with init --drop-existing; then restart sync",
				name, c.Name),
		}
	}
	return nil
}
