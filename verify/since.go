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
	"github.com/serenorg/postgres-seren-replicator/internal/selection"
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

// maxChangedRows bounds the rows Since compares one by one in a table; a
// table with more (or whose schema moved) is compared range by range, as
// Database does, which with both sides still is exact and as fast.
const maxChangedRows = 100_000

// Since compares db's selected tables after a comparison, before, that
// began after the mark m (Database, or Narrow from an earlier mark). Both
// sides must hold still (the source fenced, the target drained). Rows
// written since the mark on either side, and the rows before named, are
// compared one by one; the rows unchanged since the mark on both sides were
// equal in before, so their number and the sum of their keys' hashes must
// agree. A table is compared range by range instead when it has no key,
// when its key, columns or catalog (types, indexes, a rename) changed on
// either side since the mark, when more than maxChangedRows of its rows
// changed, and when before could not name all its differing rows.
// Differences are in the report, as from Database.
func (v *Verifier) Since(ctx context.Context, db plan.Database, m Mark, before DatabaseReport) (DatabaseReport, error) {
	return v.sinceMark(ctx, db, m, before, false)
}

// Narrow is Since while both sides still move (the application writes, a
// sync daemon applies): it compares the rows written since m and the rows
// before named, and names those that differ now, in flight or not; a table
// Since would compare range by range it reports as differing beyond what
// it names, which leaves it to the check at the fence. Its report takes
// before's place with a mark taken before Narrow began: each row unchanged
// since that mark was equal in a comparison after it, or is named.
func (v *Verifier) Narrow(ctx context.Context, db plan.Database, m Mark, before DatabaseReport) (DatabaseReport, error) {
	return v.sinceMark(ctx, db, m, before, true)
}

func (v *Verifier) sinceMark(ctx context.Context, db plan.Database, m Mark, before DatabaseReport, moving bool) (DatabaseReport, error) {
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
	var whole []selection.Table
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
		default:
			// Rows the comparison before could not all name are compared
			// range by range.
			full := prev.Status == StatusMismatch && len(prev.Key) > 0 && !prev.Complete
			var err error
			if !full {
				full, err = st.since(ctx, w, tj, m, prev, moving)
			}
			switch {
			case err != nil && !tableLevel(err):
				return rep, err
			case err != nil:
				tj.fail(err)
			case full && moving:
				rep.Tables = append(rep.Tables, TableReport{Schema: t.Schema, Name: t.Name, Key: tj.rep.Key, Status: StatusMismatch, cols: tj.rep.cols})
				continue
			case full:
				whole = append(whole, t)
				rep.Tables = append(rep.Tables, TableReport{Schema: t.Schema, Name: t.Name})
				continue
			}
		}
		tj.finish()
		rep.Tables = append(rep.Tables, tj.rep)
	}
	if len(whole) == 0 {
		return rep, nil
	}
	// Both sides are still: one pass, no waiting, no reading again.
	ranged := *v
	ranged.Wait, ranged.Retries, ranged.RecheckTime = 0, 0, 0
	sub := db
	sub.Tables = whole
	d, err := ranged.Database(ctx, sub)
	if err != nil {
		return rep, err
	}
	for _, tr := range d.Tables {
		for i := range rep.Tables {
			if rep.Tables[i].Schema == tr.Schema && rep.Tables[i].Name == tr.Name {
				rep.Tables[i] = tr
			}
		}
	}
	return rep, nil
}

// sinceRow is a row of one side as Since reads it.
type sinceRow struct {
	key     []string
	hash    int64
	keyHash int64
	changed bool // written since the mark
}

// since compares one table (see Since); full asks for the comparison range
// by range instead.
func (st *dbState) since(ctx context.Context, w *worker, t *tableJob, m Mark, prev TableReport, moving bool) (full bool, err error) {
	if err := st.describe(ctx, w, t); err != nil {
		return false, err
	}
	if len(t.key) == 0 || !slices.Equal(t.cols, prev.cols) || !slices.Equal(t.rep.Key, prev.Key) {
		// A column added with a default, or a key added or moved, changes
		// no row's xmin.
		return true, nil
	}
	var moved [2]bool
	var counts [2]sideCounts
	var changed [2][]sinceRow
	err = bothSides(ctx, w, m, func(ctx context.Context, i int, c *pgx.Conn, xid uint64) error {
		var err error
		if moved[i], err = schemaMoved(ctx, c, t.ident, xid); err != nil || moved[i] {
			return err
		}
		if changed[i], err = st.changedRows(ctx, c, t, xid); err != nil || len(changed[i]) > maxChangedRows || moving {
			return err
		}
		counts[i], err = st.sideCounts(ctx, c, t, xid)
		return err
	})
	if err != nil {
		return false, err
	}
	if moved[0] || moved[1] || len(changed[0]) > maxChangedRows || len(changed[1]) > maxChangedRows {
		return true, nil
	}
	// The keys to compare one by one: written since the mark on a side, or
	// named before.
	keys := map[string][]string{}
	for _, r := range prev.Ranges {
		for _, d := range r.Rows {
			keys[strings.Join(d.Key, "\x00")] = d.Key
		}
	}
	var known [2]map[string]bool
	for i, side := range changed {
		known[i] = make(map[string]bool, len(side))
		for _, r := range side {
			id := strings.Join(r.key, "\x00")
			keys[id] = r.key
			known[i][id] = true
		}
	}
	if len(keys) > maxChangedRows {
		return true, nil
	}
	// Each side reads the rows of the keys it has not read yet.
	rows := changed
	err = bothSides(ctx, w, m, func(ctx context.Context, i int, c *pgx.Conn, xid uint64) error {
		var missing [][]string
		for id, k := range keys {
			if !known[i][id] {
				missing = append(missing, k)
			}
		}
		more, err := st.rowsByKey(ctx, c, t, missing, xid)
		rows[i] = append(rows[i], more...)
		return err
	})
	if err != nil {
		return false, err
	}
	list := make([][]string, 0, len(keys))
	for _, k := range keys {
		list = append(list, k)
	}
	var diffs []RowDiff
	var byKey [2]map[string]sinceRow
	for i := range rows {
		byKey[i] = make(map[string]sinceRow, len(rows[i]))
		for _, r := range rows[i] {
			id := strings.Join(r.key, "\x00")
			if _, dup := byKey[i][id]; dup {
				// A second row with the key: the side's table lacks the
				// source's unique key.
				diffs = append(diffs, RowDiff{Kind: map[int]string{0: MissingOnTarget, 1: ExtraOnTarget}[i], Key: r.key})
			}
			byKey[i][id] = r
			if !r.changed && !moving {
				// The named rows that had not changed leave the unchanged
				// sums: what remains was equal before.
				counts[i].unchanged--
				counts[i].keySum.Sub(counts[i].keySum, big.NewInt(r.keyHash))
			}
		}
	}
	for _, k := range list {
		id := strings.Join(k, "\x00")
		s, inSrc := byKey[0][id]
		d, inDst := byKey[1][id]
		switch {
		case inSrc && !inDst:
			diffs = append(diffs, RowDiff{Kind: MissingOnTarget, Key: k})
		case !inSrc && inDst:
			diffs = append(diffs, RowDiff{Kind: ExtraOnTarget, Key: k})
		case inSrc && inDst && s.hash != d.hash:
			diffs = append(diffs, RowDiff{Kind: Changed, Key: k})
		}
	}
	if moving {
		// Rows still move: only the keys compared are named.
		if len(diffs) > 0 {
			t.addRange(RangeDiff{Rows: diffs, Complete: true})
		}
		return false, nil
	}
	t.counted(counts[0].total, counts[1].total)
	rest := counts[0].unchanged == counts[1].unchanged && counts[0].keySum.Cmp(counts[1].keySum) == 0
	if len(diffs) == 0 && rest && counts[0].total == counts[1].total {
		return false, nil
	}
	d := RangeDiff{SourceRows: counts[0].total, TargetRows: counts[1].total, Rows: diffs, Complete: rest}
	if !rest {
		// A row deleted on one side only, among those unchanged since the
		// mark: verify can find it.
		d.SourceHash, d.TargetHash = counts[0].keySum.String(), counts[1].keySum.String()
	}
	t.addRange(d)
	return false, nil
}

// bothSides runs f for the source (i = 0) and the target (i = 1) at once
// and returns the source's error, else the target's. Neither is cancelled
// when the other fails: a cancelled query closes its session, which the
// next table needs.
func bothSides(ctx context.Context, w *worker, m Mark, f func(ctx context.Context, i int, c *pgx.Conn, xid uint64) error) error {
	done := make(chan error, 1)
	go func() {
		defer func() {
			// A panic here would end the process with the source fenced.
			if p := recover(); p != nil {
				done <- fmt.Errorf("internal error reading the source: %v", p)
			}
		}()
		done <- f(ctx, 0, w.src, m.Source)
	}()
	err := f(ctx, 1, w.dst, m.Target)
	if srcErr := <-done; srcErr != nil {
		return srcErr
	}
	return err
}

// sideCounts are a side's rows, those of them not written since the mark,
// and the sum of the latter's keys' hashes.
type sideCounts struct {
	total, unchanged int64
	keySum           *big.Int
}

func (st *dbState) sideCounts(ctx context.Context, c *pgx.Conn, t *tableJob, xid uint64) (sideCounts, error) {
	var n sideCounts
	var sum string
	q := fmt.Sprintf(`SELECT count(*), count(*) FILTER (WHERE NOT (%[4]s)), coalesce(sum(%[1]s) FILTER (WHERE NOT (%[4]s)), 0)::text FROM %[2]s AS %[3]s`,
		st.keyHash(t), t.ident, rowAlias, changedSince(xid))
	if err := c.QueryRow(ctx, q).Scan(&n.total, &n.unchanged, &sum); err != nil {
		return n, fmt.Errorf("rows of %s unchanged since the mark: %w", t.ident, err)
	}
	var ok bool
	if n.keySum, ok = new(big.Int).SetString(sum, 10); !ok {
		return n, fmt.Errorf("rows of %s unchanged since the mark: sum %q", t.ident, sum)
	}
	return n, nil
}

// schemaMovedSQL tells whether the catalog rows that shape a table's rows
// as text changed since a mark ($2, a 32-bit transaction ID): the pg_class,
// pg_attribute and pg_index rows of the table and of the tables it reads
// through (partitions, inheritance children), their schemas' pg_namespace
// rows (a schema swapped in by rename), and the types of its
// columns, through arrays, domains, ranges and composite types, with their
// enum labels. A column of a reg* type, whose text names another catalog
// object, counts as moved. Changes of this kind (a column dropped and
// added again, a key moved, a label renamed, a table swapped in by rename)
// write no row, so no row's xmin shows them. %s is the extra type step of
// PostgreSQL 14 and later (multiranges).
const schemaMovedSQL = `WITH RECURSIVE rels(oid) AS (
	SELECT $1::regclass::oid
	UNION SELECT i.inhrelid FROM pg_inherits i JOIN rels r ON i.inhparent = r.oid
),
types(oid) AS (
	SELECT a.atttypid FROM pg_attribute a WHERE a.attrelid IN (SELECT oid FROM rels) AND a.attnum > 0
	UNION
	SELECT n.x FROM types t JOIN pg_type y ON y.oid = t.oid
	CROSS JOIN LATERAL (SELECT y.typelem UNION ALL SELECT y.typbasetype
		UNION ALL SELECT a.atttypid FROM pg_attribute a WHERE a.attrelid = y.typrelid AND a.attnum > 0
		UNION ALL SELECT r.rngsubtype FROM pg_range r WHERE r.rngtypid = y.oid%s) n(x)
	WHERE n.x <> 0
),
shaping AS (SELECT oid FROM rels UNION SELECT y.typrelid FROM pg_type y WHERE y.oid IN (SELECT oid FROM types) AND y.typrelid <> 0)
SELECT EXISTS (SELECT 1 FROM pg_class c WHERE c.oid IN (SELECT oid FROM shaping) AND age(c.xmin) <= age($2::xid))
	OR EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid IN (SELECT oid FROM shaping) AND age(a.xmin) <= age($2::xid))
	OR EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid IN (SELECT oid FROM rels) AND age(i.xmin) <= age($2::xid))
	OR EXISTS (SELECT 1 FROM pg_inherits i WHERE i.inhparent IN (SELECT oid FROM rels) AND age(i.xmin) <= age($2::xid))
	OR EXISTS (SELECT 1 FROM pg_namespace n JOIN pg_class c ON c.relnamespace = n.oid WHERE c.oid IN (SELECT oid FROM rels) AND age(n.xmin) <= age($2::xid))
	OR EXISTS (SELECT 1 FROM pg_type y WHERE y.oid IN (SELECT oid FROM types) AND age(y.xmin) <= age($2::xid))
	OR EXISTS (SELECT 1 FROM pg_enum e WHERE e.enumtypid IN (SELECT oid FROM types) AND age(e.xmin) <= age($2::xid))
	OR EXISTS (SELECT 1 FROM pg_range r WHERE r.rngtypid IN (SELECT oid FROM types) AND age(r.xmin) <= age($2::xid))
	OR EXISTS (SELECT 1 FROM pg_type y WHERE y.oid IN (SELECT oid FROM types) AND y.typnamespace = 'pg_catalog'::regnamespace
		AND y.typname IN ('regclass', 'regtype', 'regproc', 'regprocedure', 'regoper', 'regoperator', 'regconfig',
			'regdictionary', 'regnamespace', 'regrole', 'regcollation'))`

// schemaMoved runs schemaMovedSQL for the table ident on one side.
func schemaMoved(ctx context.Context, c *pgx.Conn, ident string, xid uint64) (bool, error) {
	multirange := `
		UNION ALL SELECT r.rngtypid FROM pg_range r WHERE r.rngmultitypid = y.oid`
	if serverMajor(c) < 14 {
		multirange = ""
	}
	var moved bool
	if err := c.QueryRow(ctx, fmt.Sprintf(schemaMovedSQL, multirange), ident, strconv.FormatUint(xid&0xFFFFFFFF, 10)).Scan(&moved); err != nil {
		return false, fmt.Errorf("catalog of %s since the mark: %w", ident, err)
	}
	return moved, nil
}

// serverMajor is the server's major version (12 for 12.22), from the
// server_version the server reports at connection.
func serverMajor(c *pgx.Conn) int {
	v := c.PgConn().ParameterStatus("server_version")
	major, _ := strconv.Atoi(v[:strings.IndexFunc(v+".", func(r rune) bool { return r < '0' || r > '9' })])
	return major
}

// keyHash is the SQL of the hash of a row's key: of an integer key as a
// bigint, else of its text, or of the text of the row of its columns.
func (st *dbState) keyHash(t *tableJob) string {
	if len(t.key) == 1 && st.hash.name == hashExtended.name {
		switch t.key[0].base {
		case "pg_catalog.int2", "pg_catalog.int4", "pg_catalog.int8":
			// The same hash whatever the width on either side, without
			// printing the number.
			return "hashint8extended((" + rowAlias + "." + t.key[0].ident() + ")::int8, 0)"
		}
	}
	if len(t.key) == 1 {
		return st.hash.sql("(" + rowAlias + "." + t.key[0].expr() + ")::text")
	}
	exprs := make([]string, len(t.key))
	for i, c := range t.key {
		exprs[i] = rowAlias + "." + c.expr()
	}
	return st.hash.sql("ROW(" + strings.Join(exprs, ", ") + ")::text")
}

// changedRows reads the rows written since the mark xid, at most
// maxChangedRows + 1 of them.
func (st *dbState) changedRows(ctx context.Context, c *pgx.Conn, t *tableJob, xid uint64) ([]sinceRow, error) {
	return st.sinceRows(ctx, c, t, fmt.Sprintf(`SELECT %s, %s, %s, true FROM %s AS %s WHERE %s LIMIT %d`,
		keyTextList(t.key, rowAlias+"."), st.rowHashOf(t), st.keyHash(t), t.ident, rowAlias, changedSince(xid), maxChangedRows+1))
}

// sinceRows runs q, which selects a row's key columns as text, its hash,
// its key's hash and whether it changed since the mark.
func (st *dbState) sinceRows(ctx context.Context, c *pgx.Conn, t *tableJob, q string, args ...any) ([]sinceRow, error) {
	rows, err := c.Query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("rows of %s since the mark: %w", t.ident, err)
	}
	defer rows.Close()
	var out []sinceRow
	for rows.Next() {
		r := sinceRow{key: make([]string, len(t.key))}
		dest := make([]any, 0, len(r.key)+3)
		for i := range r.key {
			dest = append(dest, &r.key[i])
		}
		if err := rows.Scan(append(dest, &r.hash, &r.keyHash, &r.changed)...); err != nil {
			return nil, fmt.Errorf("rows of %s since the mark: %w", t.ident, err)
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("rows of %s since the mark: %w", t.ident, err)
	}
	return out, nil
}

// rowsByKey reads the rows with the given keys (each as long as the key),
// every row of a key the side holds twice included. The keys' text is cast
// to their types without length or precision, so a side whose column is
// wider finds the same values.
func (st *dbState) rowsByKey(ctx context.Context, c *pgx.Conn, t *tableJob, keys [][]string, xid uint64) ([]sinceRow, error) {
	if len(keys) == 0 {
		return nil, nil
	}
	arrays := make([]any, len(t.key))
	casts := make([]string, len(t.key))
	names := make([]string, len(t.key))
	for i, k := range t.key {
		col := make([]string, len(keys))
		for j, key := range keys {
			if len(key) != len(t.key) {
				return nil, fmt.Errorf("key %q of %s does not match its key columns %s", key, t.ident, strings.Join(t.rep.Key, ", "))
			}
			col[j] = key[i]
		}
		arrays[i] = col
		names[i] = "k" + strconv.Itoa(i)
		casts[i] = "u." + names[i] + "::" + k.base
	}
	q := fmt.Sprintf(`SELECT %s, %s, %s, %s FROM %s AS %s
		WHERE (%s) IN (SELECT %s FROM unnest(%s) AS u(%s))`,
		keyTextList(t.key, rowAlias+"."), st.rowHashOf(t), st.keyHash(t), changedSince(xid), t.ident, rowAlias,
		keyList(t.key, rowAlias+"."), strings.Join(casts, ", "), params(len(t.key)), strings.Join(names, ", "))
	return st.sinceRows(ctx, c, t, q, arrays...)
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
