package apply

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/serenorg/postgres-seren-replicator/stream"
)

// The merge path turns a batch's row changes into a few set-based
// statements per table: every change to one key collapses into its net
// effect (insert, update, delete, or delete-then-insert), then the table gets
// one multi-row DELETE, INSERT (or COPY) and UPDATE ... FROM unnest(...) each.
//
// That reorders changes, which is safe only where nothing can observe the
// order: the session runs with session_replication_role = replica (no
// triggers, no foreign-key checks), and the table's only unique or exclusion
// constraint is its replica identity key, so rows with different keys never
// conflict. Everything else (REPLICA IDENTITY FULL, other unique indexes,
// ALWAYS triggers, key changes, TRUNCATE, schema changes) takes the ordered
// path, one statement per change in source order.

// maxRowsPerStatement bounds the rows of one multi-row statement, so that
// one statement's arrays stay a modest size.
const maxRowsPerStatement = 2000

// copyThreshold is how many inserted rows of one table go by COPY instead
// of multi-row INSERT (COPY parses faster; its set-up costs a round trip).
const copyThreshold = 64

// merge folds one change into the batch; it returns false when the change
// must take the ordered path instead (after the accumulated changes are
// emitted). What may merge is decided here; how changes fold is the
// merger's (fold.go).
func (a *Applier) merge(id uint32, r *relation, msg stream.Message) (bool, error) {
	if !a.replicaMode || !r.mergeable {
		return false, nil
	}
	switch m := msg.(type) {
	case *stream.Insert:
		row, err := values(r, m.New, "insert")
		if err != nil {
			return false, err
		}
		return true, a.merged.insert(id, r, row, m.New.Size())
	case *stream.Update:
		if m.OldKind != 0 || len(r.key) == 0 {
			return false, nil // the key changed: ordered path
		}
		if len(m.New) != len(r.cols) {
			return false, fmt.Errorf("update on table %s: %d values for %d columns", r.name, len(m.New), len(r.cols))
		}
		key := make([][]byte, len(r.key))
		for i, c := range r.key {
			if m.New[c].Kind != stream.ValueText {
				return false, nil // unsent or NULL key: ordered path reports it
			}
			key[i] = m.New[c].Data
		}
		return true, a.merged.update(id, r, key, m.New)
	case *stream.Delete:
		if m.OldKind != 'K' || len(r.key) == 0 {
			return false, nil
		}
		key := make([][]byte, len(r.key))
		for i, c := range r.key {
			if len(m.Old) != len(r.cols) || m.Old[c].Kind != stream.ValueText {
				return false, nil
			}
			key[i] = m.Old[c].Data
		}
		return true, a.merged.delete(id, r, key)
	}
	return false, nil
}

// emitMerged queues the set-based statements for everything merged so far:
// per table, deletes, then inserts, then updates grouped by the columns
// they set. Each statement's row count is checked.
func (a *Applier) emitMerged(ctx context.Context) error {
	for _, id := range a.merged.order {
		t := a.merged.tables[id]
		r := t.r
		p := t.plan()
		if err := a.emitDeletes(ctx, r, p.deletes); err != nil {
			return err
		}
		if err := a.emitInserts(ctx, r, p.inserts); err != nil {
			return err
		}
		for _, group := range p.updates {
			if err := a.emitUpdates(ctx, r, group); err != nil {
				return err
			}
		}
		if a.pipe.full(a.cfg.PipelineStatements, a.cfg.PipelineBytes) {
			if err := a.flush(ctx); err != nil {
				return err
			}
		}
	}
	a.merged.reset()
	return nil
}

// smallGroup is the size below which a group of merged rows goes as
// prepared one-row statements: they cost about the same for a few rows, and
// a failed one names the row's key.
const smallGroup = 8

// keyMatcher finds a row by its replica identity key.
func (r *relation) keyMatcher() matcher {
	return matcher{cols: r.key, nulls: make([]bool, len(r.key))}
}

func (a *Applier) emitDeletes(ctx context.Context, r *relation, keys [][][]byte) error {
	if len(keys) < smallGroup {
		where := r.keyMatcher()
		for _, key := range keys {
			name, err := a.prepare(ctx, r, "d/"+where.key(), func() string { return r.deleteSQL(where) })
			if err != nil {
				return err
			}
			a.pipe.add("", name, key, stmtInfo{table: r.name, op: "delete", want: 1, keyValues: describeKey(r, where, key)})
		}
		return nil
	}
	name, err := a.prepare(ctx, r, "D", r.arrayDeleteSQL)
	if err != nil {
		return err
	}
	for len(keys) > 0 {
		n := min(len(keys), maxRowsPerStatement)
		a.pipe.add("", name, arrays(keys[:n], len(r.key), nil), stmtInfo{table: r.name, op: "delete", want: int64(n)})
		keys = keys[n:]
	}
	return nil
}

func (a *Applier) emitInserts(ctx context.Context, r *relation, rows [][][]byte) error {
	switch {
	case len(rows) < smallGroup:
		for _, row := range rows {
			name, err := a.prepare(ctx, r, "i", r.insertSQL)
			if err != nil {
				return err
			}
			a.pipe.add("", name, row, stmtInfo{table: r.name, op: "insert"})
		}
		return nil
	case len(rows) >= copyThreshold:
		a.pipe.addCopy(r.copySQL(), rows, stmtInfo{table: r.name, op: "insert", want: int64(len(rows))})
		return nil
	}
	name, err := a.prepare(ctx, r, "I", r.arrayInsertSQL)
	if err != nil {
		return err
	}
	a.pipe.add("", name, arrays(rows, len(r.cols), nil), stmtInfo{table: r.name, op: "insert", want: int64(len(rows))})
	return nil
}

// emitUpdates writes updates that set the same columns. The key columns are
// never set: an update that changes its key takes the ordered path.
func (a *Applier) emitUpdates(ctx context.Context, r *relation, list []*netChange) error {
	set := r.nonKey(setColumns(list[0].set))
	if len(set) == 0 {
		return nil // only unchanged TOAST values or the key itself: nothing to write
	}
	if len(list) < smallGroup {
		where := r.keyMatcher()
		shape := "u" + setKey(set) + "/" + where.key()
		for _, nc := range list {
			name, err := a.prepare(ctx, r, shape, func() string { return r.updateSQL(set, where) })
			if err != nil {
				return err
			}
			params := make([][]byte, 0, len(set)+len(r.key))
			for _, c := range set {
				params = append(params, nc.row[c])
			}
			params = append(params, nc.key...)
			a.pipe.add("", name, params, stmtInfo{table: r.name, op: "update", want: 1, keyValues: describeKey(r, where, nc.key)})
		}
		return nil
	}
	name, err := a.prepare(ctx, r, "U"+setKey(set), func() string { return r.arrayUpdateSQL(set) })
	if err != nil {
		return err
	}
	for len(list) > 0 {
		n := min(len(list), maxRowsPerStatement)
		rows, keys := make([][][]byte, n), make([][][]byte, n)
		for i, nc := range list[:n] {
			rows[i], keys[i] = nc.row, nc.key
		}
		params := append(arrays(keys, len(r.key), nil), arrays(rows, len(r.cols), set)...)
		a.pipe.add("", name, params, stmtInfo{table: r.name, op: "update", want: int64(n)})
		list = list[n:]
	}
	return nil
}

// nonKey drops the replica identity columns from cols.
func (r *relation) nonKey(cols []int) []int {
	out := cols[:0:0]
	for _, c := range cols {
		if !slices.Contains(r.key, c) {
			out = append(out, c)
		}
	}
	return out
}

func setColumns(set []bool) []int {
	var out []int
	for i, s := range set {
		if s {
			out = append(out, i)
		}
	}
	return out
}

func describeVals(r *relation, key [][]byte) string {
	return describeKey(r, r.keyMatcher(), key)
}

func (r *relation) copySQL() string {
	return fmt.Sprintf("COPY %s (%s) FROM STDIN", r.target, strings.Join(r.cols, ", "))
}

// The multi-row statements take one text array per column and unnest
// them: one prepared statement per table and shape serves any number of
// rows, with no parsing or planning per batch, and the plan is always a
// nested loop over the key index (unnest of a parameter is estimated small).
// Elements are cast from text with the column's type, the same input
// function a one-row statement uses.

// castColumns renders "v.c0::type, ..." for cols, aliasing from first.
func (r *relation) castColumns(cols []int, first int) []string {
	out := make([]string, len(cols))
	for i, c := range cols {
		out[i] = fmt.Sprintf("v.c%d::%s", first+i, r.types[c])
	}
	return out
}

// unnestFrom renders "unnest($1::text[], ...) AS v(c0, ...)" for n arrays.
func unnestFrom(n int) string {
	args := make([]string, n)
	alias := make([]string, n)
	for i := range n {
		args[i] = fmt.Sprintf("$%d::text[]", i+1)
		alias[i] = "c" + strconv.Itoa(i)
	}
	return fmt.Sprintf("unnest(%s) AS v(%s)", strings.Join(args, ", "), strings.Join(alias, ", "))
}

// keyMatch renders "t.k0 = v.c0::type AND ..." for the key columns, which
// are the first arrays.
func (r *relation) keyMatch() string {
	casts := r.castColumns(r.key, 0)
	match := make([]string, len(r.key))
	for i, c := range r.key {
		match[i] = "t." + r.cols[c] + " = " + casts[i]
	}
	return strings.Join(match, " AND ")
}

func (r *relation) arrayDeleteSQL() string {
	return fmt.Sprintf("DELETE FROM %s AS t USING %s WHERE %s", r.target, unnestFrom(len(r.key)), r.keyMatch())
}

func (r *relation) arrayInsertSQL() string {
	all := make([]int, len(r.cols))
	for i := range all {
		all[i] = i
	}
	return fmt.Sprintf("INSERT INTO %s (%s) SELECT %s FROM %s", r.target, strings.Join(r.cols, ", "),
		strings.Join(r.castColumns(all, 0), ", "), unnestFrom(len(r.cols)))
}

func (r *relation) arrayUpdateSQL(set []int) string {
	casts := r.castColumns(set, len(r.key))
	assign := make([]string, len(set))
	for i, c := range set {
		assign[i] = r.cols[c] + " = " + casts[i]
	}
	return fmt.Sprintf("UPDATE %s AS t SET %s FROM %s WHERE %s", r.target, strings.Join(assign, ", "),
		unnestFrom(len(r.key)+len(set)), r.keyMatch())
}

// arrays turns rows into one text array literal per column: of every
// column (cols nil) when rows are whole, or of cols.
func arrays(rows [][][]byte, width int, cols []int) [][]byte {
	if cols == nil {
		cols = make([]int, width)
		for i := range cols {
			cols[i] = i
		}
	}
	out := make([][]byte, len(cols))
	for i, c := range cols {
		size := 2
		for _, row := range rows {
			size += len(row[c]) + 3
		}
		b := make([]byte, 0, size+size/16)
		b = append(b, '{')
		for j, row := range rows {
			if j > 0 {
				b = append(b, ',')
			}
			b = appendArrayElement(b, row[c])
		}
		out[i] = append(b, '}')
	}
	return out
}

// appendArrayElement quotes one value as an element of a text array
// literal; nil is NULL.
func appendArrayElement(b, v []byte) []byte {
	if v == nil {
		return append(b, "NULL"...)
	}
	b = append(b, '"')
	for {
		i := indexQuoteOrBackslash(v)
		if i < 0 {
			break
		}
		b = append(b, v[:i]...)
		b = append(b, '\\', v[i])
		v = v[i+1:]
	}
	b = append(b, v...)
	return append(b, '"')
}

func indexQuoteOrBackslash(v []byte) int {
	q := bytes.IndexByte(v, '"')
	s := bytes.IndexByte(v, '\\')
	if q < 0 || s >= 0 && s < q {
		return s
	}
	return q
}
