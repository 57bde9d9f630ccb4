package verify

import (
	"context"
	"errors"
	"fmt"
	"math/big"
	"slices"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/serenorg/postgres-seren-replicator/internal/conninfo"
	"github.com/serenorg/postgres-seren-replicator/internal/plan"
)

// Mark is a point on both sides of a database: the oldest transaction ID
// still running there, or the next one when none runs. Every transaction
// below it had ended at the mark, so a row whose xmin is older has not
// changed since; one written by a transaction running at the mark, or
// later, carries an xmin at or past it.
type Mark struct {
	Source, Target uint64 // full (epoch-qualified) transaction IDs
}

// MarkNow marks both sides of db.
func MarkNow(ctx context.Context, db plan.Database) (Mark, error) {
	var m Mark
	for _, side := range []struct {
		conn *conninfo.Conn
		xid  *uint64
		name string
	}{{db.Source, &m.Source, "source"}, {db.Target, &m.Target, "target"}} {
		c, err := side.conn.Connect(ctx)
		if err != nil {
			return m, err
		}
		err = c.QueryRow(ctx, `SELECT txid_snapshot_xmin(txid_current_snapshot())`).Scan(side.xid)
		c.Close(context.Background())
		if err != nil {
			return m, fmt.Errorf("mark the %s of %s: %w", side.name, db.Name, err)
		}
	}
	return m, nil
}

// changedSince is the SQL condition of a row version written at or after
// the mark xid; age() compares transaction IDs modulo 2^32 and gives frozen
// and bootstrap rows the largest age.
func changedSince(xid uint64) string {
	return fmt.Sprintf("age(%s.xmin) <= age('%d'::xid)", rowAlias, xid&0xFFFFFFFF)
}

// rowAlias names the compared table in the queries of Since.
const rowAlias = "seren_verify_row"

// Since compares db's selected tables after a full comparison, before,
// that began after the mark m and found no difference it could not name.
// Both sides must hold still (the source fenced, the target drained).
// Rows written since the mark on either side, and the rows before named,
// are compared one by one; the rows unchanged since the mark on both sides
// were equal in before, so their number and the sum of their keys' hashes
// must agree. A table without a key is compared whole. Differences are in
// the report, as from Database.
func (v *Verifier) Since(ctx context.Context, db plan.Database, m Mark, before DatabaseReport) (DatabaseReport, error) {
	v.defaults()
	rep := DatabaseReport{Name: db.Name, Source: db.Source.String(), Target: db.Target.String(), Tables: []TableReport{},
		Consistency: "both sides still: rows changed since the comparison before the fence, compared row by row"}
	w, err := openWorker(ctx, db)
	if err != nil {
		return rep, err
	}
	defer w.close()
	st := &dbState{v: v, db: db.Name, log: v.Log.With("db", db.Name)}
	if st.hash, err = chooseHash(ctx, w); err != nil {
		return rep, err
	}
	if st.hash.name != before.Hash {
		return rep, fmt.Errorf("verify %s: the comparison before used %s, the servers now agree on %s", db.Name, before.Hash, st.hash.name)
	}
	rep.Hash = st.hash.name
	earlier := map[[2]string]TableReport{}
	for _, t := range before.Tables {
		earlier[[2]string{t.Schema, t.Name}] = t
	}
	for _, t := range db.Tables {
		if v.Checkpoint.Schema != "" && t.Schema == v.Checkpoint.Schema {
			continue
		}
		tj := &tableJob{rep: TableReport{Schema: t.Schema, Name: t.Name, Key: []string{}, Status: StatusMatch, Chunks: 1}}
		prev, ok := earlier[[2]string{t.Schema, t.Name}]
		switch {
		case !ok:
			tj.fail(errors.New("not compared before the fence"))
		case prev.Status == StatusError:
			tj.fail(fmt.Errorf("not compared before the fence: %s", prev.Error))
		case prev.Status == StatusMismatch && len(prev.Key) > 0 && !prev.Complete:
			tj.fail(errors.New("the comparison before the fence could not name every differing row"))
		default:
			if err := st.since(ctx, w, tj, m, prev); err != nil {
				if !tableLevel(err) {
					return rep, err
				}
				tj.fail(err)
			}
		}
		tj.finish()
		rep.Tables = append(rep.Tables, tj.rep)
	}
	return rep, nil
}

// sinceRow is a row of one side as Since reads it.
type sinceRow struct {
	hash    int64
	keyHash int64
	changed bool // written since the mark
}

// since compares one table (see Since).
func (st *dbState) since(ctx context.Context, w *worker, t *tableJob, m Mark, prev TableReport) error {
	if err := st.describe(ctx, w, t); err != nil {
		return err
	}
	if len(t.key) == 0 || !slices.Equal(t.cols, prev.cols) {
		// Without a key, or with columns that changed since the comparison
		// before (a column added with a default changes no xmin): whole.
		src, dst, err := readDirect(ctx, w, func(ctx context.Context, q querier) (rangeHash, error) {
			return st.hashRange(ctx, q, t, keyRange{})
		})
		if err != nil {
			return err
		}
		t.counted(src.count, dst.count)
		if src != dst {
			t.addRange(RangeDiff{SourceRows: src.count, TargetRows: dst.count, SourceHash: src.sum, TargetHash: dst.sum, Rows: []RowDiff{}})
		}
		return nil
	}
	// The keys to compare one by one: written since the mark on a side, or
	// named before.
	keys := map[string][]string{}
	for _, r := range prev.Ranges {
		for _, d := range r.Rows {
			keys[strings.Join(d.Key, "\x00")] = d.Key
		}
	}
	var unchanged [2]unchangedRows
	var changed [2][][]string
	err := bothSides(w, m, func(i int, c *pgx.Conn, xid uint64) error {
		var err error
		if changed[i], err = st.changedKeys(ctx, c, t, xid); err != nil {
			return err
		}
		unchanged[i], err = st.unchangedRows(ctx, c, t, xid)
		return err
	})
	if err != nil {
		return err
	}
	for _, side := range changed {
		for _, k := range side {
			keys[strings.Join(k, "\x00")] = k
		}
	}
	list := make([][]string, 0, len(keys))
	for _, k := range keys {
		list = append(list, k)
	}
	var rows [2]map[string]sinceRow
	err = bothSides(w, m, func(i int, c *pgx.Conn, xid uint64) error {
		var err error
		rows[i], err = st.rowsByKey(ctx, c, t, list, xid)
		return err
	})
	if err != nil {
		return err
	}
	var total [2]int64
	for i := range rows {
		// The named rows that had not changed leave the unchanged sums: what
		// remains was equal before.
		total[i] = unchanged[i].count
		for _, r := range rows[i] {
			if r.changed {
				total[i]++
				continue
			}
			unchanged[i].count--
			unchanged[i].sum.Sub(unchanged[i].sum, big.NewInt(r.keyHash))
		}
	}
	t.counted(total[0], total[1])
	var diffs []RowDiff
	for _, k := range list {
		id := strings.Join(k, "\x00")
		s, inSrc := rows[0][id]
		d, inDst := rows[1][id]
		switch {
		case inSrc && !inDst:
			diffs = append(diffs, RowDiff{Kind: MissingOnTarget, Key: k})
		case !inSrc && inDst:
			diffs = append(diffs, RowDiff{Kind: ExtraOnTarget, Key: k})
		case inSrc && inDst && s.hash != d.hash:
			diffs = append(diffs, RowDiff{Kind: Changed, Key: k})
		}
	}
	rest := unchanged[0].count == unchanged[1].count && unchanged[0].sum.Cmp(unchanged[1].sum) == 0
	if len(diffs) == 0 && rest {
		return nil
	}
	d := RangeDiff{SourceRows: total[0], TargetRows: total[1], Rows: diffs, Complete: rest}
	if !rest {
		// A row deleted on one side only, among those unchanged since the
		// mark: verify can find it.
		d.SourceHash, d.TargetHash = unchanged[0].sum.String(), unchanged[1].sum.String()
	}
	t.addRange(d)
	return nil
}

// bothSides runs f for the source (i = 0) and the target (i = 1) at once.
func bothSides(w *worker, m Mark, f func(i int, c *pgx.Conn, xid uint64) error) error {
	done := make(chan error, 1)
	go func() { done <- f(0, w.src, m.Source) }()
	err := f(1, w.dst, m.Target)
	return errors.Join(<-done, err)
}

// unchangedRows is the number of a side's rows not written since the mark
// and the sum of their keys' hashes.
type unchangedRows struct {
	count int64
	sum   *big.Int
}

func (st *dbState) unchangedRows(ctx context.Context, c *pgx.Conn, t *tableJob, xid uint64) (unchangedRows, error) {
	var u unchangedRows
	var sum string
	q := fmt.Sprintf(`SELECT count(*), coalesce(sum(%s), 0)::text FROM %s AS %s WHERE NOT (%s)`,
		st.keyHash(t), t.ident, rowAlias, changedSince(xid))
	if err := c.QueryRow(ctx, q).Scan(&u.count, &sum); err != nil {
		return u, fmt.Errorf("rows of %s unchanged since the mark: %w", t.ident, err)
	}
	var ok bool
	if u.sum, ok = new(big.Int).SetString(sum, 10); !ok {
		return u, fmt.Errorf("rows of %s unchanged since the mark: sum %q", t.ident, sum)
	}
	return u, nil
}

// keyHash is the SQL of the hash of a row's key.
func (st *dbState) keyHash(t *tableJob) string {
	exprs := make([]string, len(t.key))
	for i, c := range t.key {
		exprs[i] = rowAlias + "." + c.expr()
	}
	return st.hash.sql("ROW(" + strings.Join(exprs, ", ") + ")::text")
}

// changedKeys returns the keys of the rows written since the mark xid.
func (st *dbState) changedKeys(ctx context.Context, c *pgx.Conn, t *tableJob, xid uint64) ([][]string, error) {
	rows, err := c.Query(ctx, fmt.Sprintf(`SELECT %s FROM %s AS %s WHERE %s`,
		keyTextList(t.key, rowAlias+"."), t.ident, rowAlias, changedSince(xid)))
	if err != nil {
		return nil, fmt.Errorf("rows of %s changed since the mark: %w", t.ident, err)
	}
	keys, err := pgx.CollectRows(rows, scanKey(len(t.key)))
	if err != nil {
		return nil, fmt.Errorf("rows of %s changed since the mark: %w", t.ident, err)
	}
	return keys, nil
}

// rowsByKey reads the rows with the given keys, by key joined with NUL.
func (st *dbState) rowsByKey(ctx context.Context, c *pgx.Conn, t *tableJob, keys [][]string, xid uint64) (map[string]sinceRow, error) {
	out := map[string]sinceRow{}
	if len(keys) == 0 {
		return out, nil
	}
	arrays := make([]any, len(t.key))
	casts := make([]string, len(t.key))
	names := make([]string, len(t.key))
	for i, k := range t.key {
		col := make([]string, len(keys))
		for j, key := range keys {
			col[j] = key[i]
		}
		arrays[i] = col
		names[i] = "k" + strconv.Itoa(i)
		casts[i] = "u." + names[i] + "::" + k.typ
	}
	q := fmt.Sprintf(`SELECT %s, %s, %s, %s FROM %s AS %s
		WHERE (%s) IN (SELECT %s FROM unnest(%s) AS u(%s))`,
		keyTextList(t.key, rowAlias+"."), st.rowHashOf(t), st.keyHash(t), changedSince(xid), t.ident, rowAlias,
		keyList(t.key, rowAlias+"."), strings.Join(casts, ", "), params(len(t.key)), strings.Join(names, ", "))
	rows, err := c.Query(ctx, q, arrays...)
	if err != nil {
		return nil, fmt.Errorf("rows of %s by key: %w", t.ident, err)
	}
	defer rows.Close()
	for rows.Next() {
		key := make([]string, len(t.key))
		var r sinceRow
		dest := make([]any, 0, len(key)+3)
		for i := range key {
			dest = append(dest, &key[i])
		}
		if err := rows.Scan(append(dest, &r.hash, &r.keyHash, &r.changed)...); err != nil {
			return nil, fmt.Errorf("rows of %s by key: %w", t.ident, err)
		}
		out[strings.Join(key, "\x00")] = r
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("rows of %s by key: %w", t.ident, err)
	}
	return out, nil
}

// rowHashOf is rowHash over the columns qualified with rowAlias.
func (st *dbState) rowHashOf(t *tableJob) string {
	exprs := make([]string, len(t.cols))
	for i, c := range t.cols {
		exprs[i] = rowAlias + "." + c.expr()
	}
	return st.hash.sql("ROW(" + strings.Join(exprs, ", ") + ")::text")
}

// params is "$1::text[], $2::text[], …" for n arrays.
func params(n int) string {
	p := make([]string, n)
	for i := range p {
		p[i] = "$" + strconv.Itoa(i+1) + "::text[]"
	}
	return strings.Join(p, ", ")
}
