package snapshot

import (
	"context"
	"errors"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"

	"github.com/serenorg/postgres-seren-replicator/checkpoint"
	"github.com/serenorg/postgres-seren-replicator/internal/plan"
	"github.com/serenorg/postgres-seren-replicator/internal/selection"
	"github.com/serenorg/postgres-seren-replicator/stream"
)

// An init that stops before its checkpoint (killed, or failed with
// --keep-failed) leaves its slot on the source and, on the target, the
// schema, the tables whose copy completed (each recorded as copied at the
// slot's consistent point as its last piece commits) and some half-copied
// ones. Running init again resumes it: the slot and the complete tables are
// kept, the rest are emptied and copied again at a fresh snapshot through
// the path that adds tables to a running migration (so the stream skips
// their changes that the new copy holds), the steps after the copy run, and
// the checkpoint is recorded last at the slot's consistent point, as a
// whole init does.

// Markers in init_progress: the pre-data schema was restored; the post-data
// schema was started. Piece keys are quoted names and never begin with ':'.
const (
	markPreData  = ":pre-data"
	markPostData = ":post-data"
)

// mark records that a step of init was reached.
func (t *progressTable) mark(ctx context.Context, dst *pgx.Conn, key string) error {
	_, err := dst.Exec(ctx, `INSERT INTO `+t.ident()+` (slot_name, piece, snapshot) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING`,
		t.slot, key, t.snapshot)
	if err != nil {
		return fmt.Errorf("record init progress: %w", err)
	}
	return nil
}

// tableTally records a selected table as copied when the last of its
// pieces has committed. The record is a transaction of its own after the
// piece's: an init stopped in between copies that table again on resume.
type tableTally struct {
	mu     sync.Mutex
	left   map[selection.Table]int
	record func(ctx context.Context, q checkpoint.Querier, t selection.Table) error
}

func newTableTally(pieces []piece, record func(context.Context, checkpoint.Querier, selection.Table) error) *tableTally {
	t := &tableTally{left: map[selection.Table]int{}, record: record}
	for _, p := range pieces {
		t.left[p.table.sel]++
	}
	return t
}

// pieceDone counts one piece of a table as committed.
func (t *tableTally) pieceDone(ctx context.Context, dst *pgx.Conn, p piece) error {
	if t == nil {
		return nil
	}
	t.mu.Lock()
	t.left[p.table.sel]--
	last := t.left[p.table.sel] == 0
	t.mu.Unlock()
	if !last {
		return nil
	}
	return t.record(ctx, dst, p.table.sel)
}

// ResumePlan says whether an unfinished init can be resumed, and how.
type ResumePlan struct {
	// Reason is why the init cannot be resumed (it must start over); empty
	// when it can.
	Reason string
	// Started is when the unfinished init began.
	Started time.Time
	// ConsistentPoint is the slot's: the checkpoint the resumed init records.
	ConsistentPoint pglogrepl.LSN
	// Kept are the tables whose copy completed; Copy are the tables copied
	// again (and any the selection gained since).
	Kept, Copy []selection.Table

	snapshot         string // the unfinished init's, naming its progress rows
	largeObjectsDone bool
	postDataStarted  bool
}

// Resumable reports whether the unfinished init can be resumed.
func (p ResumePlan) Resumable() bool { return p.Reason == "" }

// PlanResume reads what an unfinished init of db left, on the target and
// in its slot on the source, and decides whether it can be resumed.
func PlanResume(ctx context.Context, db plan.Database, schema, slot string) (ResumePlan, error) {
	var rp ResumePlan
	dst, err := db.Target.Connect(ctx)
	if err != nil {
		return rp, err
	}
	defer dst.Close(context.Background())
	progress := pgx.Identifier{schema, "init_progress"}.Sanitize()
	var markers []string
	err = dst.QueryRow(ctx, `SELECT s.snapshot, s.finished_at, ARRAY(SELECT piece FROM `+progress+` p
		WHERE p.slot_name = s.slot_name AND p.snapshot = s.snapshot AND p.piece IN ($2, $3, 'large objects'))
		FROM `+progress+` s WHERE s.slot_name = $1 AND s.piece = ''`, slot, markPreData, markPostData).Scan(&rp.snapshot, &rp.Started, &markers)
	switch {
	case isUndefined(err), errors.Is(err, pgx.ErrNoRows):
		rp.Reason = "no record of its progress"
		return rp, nil
	case err != nil:
		return rp, fmt.Errorf("read init progress: %w", err)
	}
	rp.largeObjectsDone = slices.Contains(markers, "large objects")
	rp.postDataStarted = slices.Contains(markers, markPostData)
	if !slices.Contains(markers, markPreData) {
		rp.Reason = "it stopped before the schema was restored"
		return rp, nil
	}

	src, err := db.Source.Connect(ctx)
	if err != nil {
		return rp, err
	}
	defer src.Close(context.Background())
	st, err := stream.LookupSlot(ctx, src, slot)
	switch {
	case errors.Is(err, stream.ErrSlotMissing):
		rp.Reason = fmt.Sprintf("its replication slot %s is gone from the source", slot)
		return rp, nil
	case err != nil:
		return rp, err
	case st.Active:
		return rp, fmt.Errorf("replication slot %s is in use on the source (is sync or another init running?): stop it first", slot)
	case st.WALStatus == "lost":
		rp.Reason = fmt.Sprintf("the source removed WAL its replication slot %s needs", slot)
		return rp, nil
	case st.Plugin != "pgoutput" || st.Database != db.Source.Database():
		rp.Reason = fmt.Sprintf("replication slot %s is not the one init creates (plugin %s, database %s)", slot, st.Plugin, st.Database)
		return rp, nil
	}
	// Nothing streams from the slot before init's checkpoint exists, so its
	// confirmed position is still the consistent point it was created at.
	rp.ConsistentPoint = st.ConfirmedFlush

	states, err := checkpoint.Store{Schema: schema}.LoadTables(ctx, dst, slot)
	if err != nil {
		return rp, err
	}
	selected := map[[2]string]bool{}
	for _, t := range db.Tables {
		selected[[2]string{t.Schema, t.Name}] = true
	}
	copied := map[[2]string]bool{}
	for _, s := range states {
		name := selection.Table{Schema: s.Schema, Name: s.Name}.Qualified()
		if !selected[[2]string{s.Schema, s.Name}] {
			rp.Reason = fmt.Sprintf("the selection has changed: %s was being copied and is no longer selected", name)
			return rp, nil
		}
		if s.State != checkpoint.TableCopied {
			continue
		}
		if s.CopyLSN < rp.ConsistentPoint {
			rp.Reason = fmt.Sprintf("replication slot %s has moved past the copy of %s (%s, copied at %s)", slot, name, rp.ConsistentPoint, s.CopyLSN)
			return rp, nil
		}
		copied[[2]string{s.Schema, s.Name}] = true
	}
	if len(copied) == 0 {
		rp.Reason = "no table's copy had completed"
		return rp, nil
	}
	for _, t := range db.Tables {
		if copied[[2]string{t.Schema, t.Name}] {
			rp.Kept = append(rp.Kept, t)
		} else {
			rp.Copy = append(rp.Copy, t)
		}
	}
	return rp, nil
}

// ResumeDatabase finishes an unfinished init of db that PlanResume found
// resumable: the tables not copied are emptied and copied again at a new
// snapshot (AddTables), large objects are copied if they were not, the
// post-data schema is built from a new dump (with the foreign keys that
// touch a table copied again made only once the stream has passed that
// copy), privileges, owners and sequences follow, and last the checkpoint
// is recorded at the slot's consistent point. The slot is kept whatever
// happens: running init again resumes again.
func ResumeDatabase(ctx context.Context, db plan.Database, o Options, rp ResumePlan) (res Result, err error) {
	res = Result{Database: db.Name, Slot: o.Slot, ConsistentPoint: rp.ConsistentPoint, Resumed: true, Kept: rp.Kept}
	if !rp.Resumable() {
		return res, fmt.Errorf("init cannot be resumed: %s", rp.Reason)
	}
	log := o.Log.With("db", db.Name)
	o.Jobs = max(o.Jobs, 1)
	src, err := db.Source.Connect(ctx)
	if err != nil {
		return res, err
	}
	defer src.Close(context.Background())
	dst, err := db.Target.Connect(ctx)
	if err != nil {
		return res, err
	}
	defer dst.Close(context.Background())
	store := checkpoint.Store{Schema: o.CheckpointSchema}
	progress := &progressTable{schema: o.CheckpointSchema, slot: o.Slot, snapshot: rp.snapshot}

	// Tables the target does not have (the selection gained them) are made
	// by the add, with their indexes: the new dump leaves them out.
	var made []selection.Table
	if err := res.timed("data", func() error {
		if len(rp.Copy) == 0 {
			return nil
		}
		if err := pgx.BeginFunc(ctx, dst, func(tx pgx.Tx) error {
			for _, t := range rp.Copy {
				// Without a state, the add keeps the (emptied) table's
				// definition, on which views and the like may depend.
				if err := store.ForgetTable(ctx, tx, o.Slot, t.Schema, t.Name); err != nil {
					return err
				}
				var exists bool
				ident := pgx.Identifier{t.Schema, t.Name}.Sanitize()
				if err := tx.QueryRow(ctx, `SELECT to_regclass($1) IS NOT NULL`, ident).Scan(&exists); err != nil {
					return fmt.Errorf("look up %s on the target: %w", t.Qualified(), err)
				}
				if !exists {
					made = append(made, t)
					continue
				}
				if _, err := tx.Exec(ctx, "TRUNCATE "+ident); err != nil {
					return fmt.Errorf("empty %s on the target to copy it again: %w", t.Qualified(), err)
				}
			}
			return nil
		}); err != nil {
			return err
		}
		log.Info("copying again the tables whose copy did not complete", "tables", len(rp.Copy), "kept", len(rp.Kept))
		ar, err := AddTables(ctx, db, rp.Copy, AddOptions{
			Slot: o.Slot, Publication: o.Publication, CheckpointSchema: o.CheckpointSchema,
			Jobs: o.Jobs, Tools: o.Tools, Target: o.Target, Progress: o.Progress, Log: o.Log,
		})
		res.Rows, res.Bytes, res.CopyLSN = ar.Rows, ar.Bytes, ar.CopyLSN
		res.Copied, res.Tables = ar.Added, len(ar.Added)
		res.Notices = append(res.Notices, ar.Notices...)
		for _, t := range ar.Gone {
			res.Notices = append(res.Notices, "table "+t.Qualified()+" was dropped on the source before it could be copied again: its definition is left empty on the target")
		}
		return err
	}); err != nil {
		return res, err
	}
	if !rp.largeObjectsDone {
		if err := res.timed("large objects", func() error {
			tx, err := src.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
			if err != nil {
				return fmt.Errorf("read large objects: %w", err)
			}
			defer tx.Rollback(context.Background())
			n, _, notices, err := copyLargeObjects(ctx, tx, dst, progress)
			res.LargeObjects = n
			res.Notices = append(res.Notices, notices...)
			return err
		}); err != nil {
			return res, err
		}
	}

	dir, err := os.MkdirTemp("", "seren-init-")
	if err != nil {
		return res, fmt.Errorf("temporary directory: %w", err)
	}
	defer os.RemoveAll(dir)
	var dump *schemaDump
	var ropts restoreOptions
	if err := res.timed("schema (post-data)", func() error {
		// The snapshot of the pre-data schema is gone: the post-data schema
		// is dumped anew, as it is on the source now.
		excl, err := dumpExclusions(ctx, src, db, o.CheckpointSchema)
		if err != nil {
			return err
		}
		for _, t := range made {
			tree, err := partitionTree(ctx, src, t)
			if err != nil {
				return err
			}
			for _, p := range tree {
				excl = append(excl, "--exclude-table="+p)
			}
		}
		if dump, err = dumpSchema(ctx, o.Tools, db.Source, "", dir, excl); err != nil {
			return err
		}
		var notices []string
		if ropts, notices, err = restorePlan(ctx, dst, dump, o.Target, o.Jobs); err != nil {
			return err
		}
		res.Notices = append(res.Notices, notices...)
		states, err := store.LoadTables(ctx, dst, o.Slot)
		if err != nil {
			return err
		}
		joining := map[[2]string]checkpoint.Table{}
		for _, s := range states {
			if s.State == checkpoint.TableCopied && s.CopyLSN > rp.ConsistentPoint {
				joining[[2]string{s.Schema, s.Name}] = s
			}
		}
		ropts.skipForeignKeys = len(joining) > 0
		// What the unfinished init built (or an add that an earlier resume
		// made, with its indexes) is kept; the rest is built.
		if ropts.present, err = presentEntries(ctx, src, dst, dump); err != nil {
			return err
		}
		if rp.postDataStarted {
			log.Info("finishing the post-data schema the unfinished init started", "built", len(ropts.present))
		}
		if err := progress.mark(ctx, dst, markPostData); err != nil {
			return err
		}
		if err := dump.restorePostData(ctx, db.Target, dir, ropts); err != nil {
			return err
		}
		if len(joining) > 0 {
			return deferForeignKeys(ctx, src, dst, store, o.Slot, db.Tables, joining)
		}
		return nil
	}); err != nil {
		return res, err
	}
	if err := finishInit(ctx, db, src, dst, dump, dir, ropts, o, store, &res, rp.ConsistentPoint); err != nil {
		return res, err
	}
	log.Info("init complete (resumed)", "slot", o.Slot, "checkpoint", rp.ConsistentPoint.String(),
		"kept", len(rp.Kept), "copied_again", len(res.Copied), "copy_lsn", res.CopyLSN.String())
	return res, nil
}

// saveInitCheckpoint is init's last step: in one transaction, the tables
// copied at the slot's consistent point become streaming and the checkpoint
// is recorded there.
func saveInitCheckpoint(ctx context.Context, dst *pgx.Conn, store checkpoint.Store, slot string, at pglogrepl.LSN) error {
	if err := store.Ensure(ctx, dst); err != nil {
		return err
	}
	return pgx.BeginFunc(ctx, dst, func(tx pgx.Tx) error {
		if err := store.StreamCopied(ctx, tx, slot, at); err != nil {
			return err
		}
		return store.Save(ctx, tx, checkpoint.Position{Slot: slot, EndLSN: at})
	})
}

// deferForeignKeys makes the foreign keys between the selected tables that
// the post-data restore left out: at once between tables copied at the
// slot's consistent point, and, for a key that touches a table copied
// later (joining), as that table's pending statements, made once the
// stream has passed its copy (FinishTables). Checked earlier, the key would
// compare rows of two different moments.
func deferForeignKeys(ctx context.Context, src, dst *pgx.Conn, store checkpoint.Store, slot string, tables []selection.Table, joining map[[2]string]checkpoint.Table) error {
	keys, err := foreignKeysAmong(ctx, src, tables)
	if err != nil {
		return err
	}
	return pgx.BeginFunc(ctx, dst, func(tx pgx.Tx) error {
		changed := map[[2]string]bool{}
		for _, k := range keys {
			holder := k.from
			if _, ok := joining[holder]; !ok {
				holder = k.to
			}
			t, ok := joining[holder]
			if !ok {
				var made bool
				if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_constraint WHERE conrelid = to_regclass(format('%I.%I', $1::text, $2::text)) AND conname = $3)`,
					k.rel[0], k.rel[1], k.name).Scan(&made); err != nil {
					return fmt.Errorf("look up foreign key %s on the target: %w", k.name, err)
				}
				if made { // by the unfinished init's post-data schema
					continue
				}
				if _, err := tx.Exec(ctx, k.sql); err != nil {
					return fmt.Errorf("%s: %w", k.sql, err)
				}
				continue
			}
			if !slices.Contains(t.Pending, k.sql) {
				t.Pending = append(t.Pending, k.sql)
				joining[holder] = t
				changed[holder] = true
			}
		}
		for name := range changed {
			if err := store.SetTable(ctx, tx, slot, joining[name]); err != nil {
				return err
			}
		}
		return nil
	})
}

// foreignKey is one foreign key constraint between selected tables, with
// the selected tables (partition roots) on each side.
type foreignKey struct {
	sql      string
	rel      [2]string // the table it is declared on
	name     string
	from, to [2]string
}

// foreignKeysAmong reads the foreign keys declared on the selected tables
// (or their partitions) on the source, as statements that make them.
func foreignKeysAmong(ctx context.Context, src *pgx.Conn, tables []selection.Table) ([]foreignKey, error) {
	var out []foreignKey
	err := pgx.BeginTxFunc(ctx, src, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SET LOCAL search_path = pg_catalog"); err != nil {
			return err
		}
		rows, err := tx.Query(ctx, `SELECT format('ALTER TABLE %I.%I ADD CONSTRAINT %I %s', n.nspname, cl.relname, c.conname, pg_get_constraintdef(c.oid)),
				n.nspname, cl.relname, c.conname, rn.nspname, r.relname, fn.nspname, f.relname
			FROM pg_constraint c
			JOIN pg_class cl ON cl.oid = c.conrelid JOIN pg_namespace n ON n.oid = cl.relnamespace
			JOIN pg_class r ON r.oid = COALESCE(pg_partition_root(c.conrelid), c.conrelid) JOIN pg_namespace rn ON rn.oid = r.relnamespace
			JOIN pg_class f ON f.oid = COALESCE(pg_partition_root(c.confrelid), c.confrelid) JOIN pg_namespace fn ON fn.oid = f.relnamespace
			WHERE c.contype = 'f' AND c.conparentid = 0
			ORDER BY n.nspname, cl.relname, c.conname`)
		if err != nil {
			return err
		}
		selected := map[[2]string]bool{}
		for _, t := range tables {
			selected[[2]string{t.Schema, t.Name}] = true
		}
		for rows.Next() {
			var k foreignKey
			if err := rows.Scan(&k.sql, &k.rel[0], &k.rel[1], &k.name, &k.from[0], &k.from[1], &k.to[0], &k.to[1]); err != nil {
				return err
			}
			if selected[k.from] && selected[k.to] {
				out = append(out, k)
			}
		}
		return rows.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("read foreign keys on the source: %w", err)
	}
	return out, nil
}

// Catalogs of the post-data objects a resumed init looks for on the target,
// by the OID pg_restore --list shows for an entry's catalog.
const (
	pgClass        = 1259 // indexes
	pgConstraint   = 2606
	pgTrigger      = 2620
	pgRewrite      = 2618 // rules
	pgPolicy       = 3256
	pgStatisticExt = 3381
	pgEventTrigger = 3466
)

// postDataKinds are the entries presentEntries looks for. INDEX ATTACH is
// left out: attaching an attached index does nothing.
var postDataKinds = []string{"INDEX ", "CONSTRAINT ", "FK CONSTRAINT ", "TRIGGER ", "RULE ", "POLICY ", "STATISTICS ", "EVENT TRIGGER "}

var tocIDs = regexp.MustCompile(`^\d+; (\d+) (\d+) `)

// presentEntries finds the post-data entries of d whose objects the target
// already has, built by an init that stopped while restoring them: each is
// named on the source by the OID its entry carries, and looked for on the
// target by that name. Entries of other kinds (comments, index attachments)
// can be run again.
func presentEntries(ctx context.Context, src, dst *pgx.Conn, d *schemaDump) (map[string]bool, error) {
	// Objects of a table: its schema, its name and the object's name.
	onTable := map[uint32][2]string{
		pgConstraint: {`SELECT n.nspname, c.relname, o.conname FROM pg_constraint o JOIN pg_class c ON c.oid = o.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace WHERE o.oid = $1`,
			`SELECT EXISTS (SELECT 1 FROM pg_constraint WHERE conrelid = to_regclass(format('%I.%I', $1::text, $2::text)) AND conname = $3)`},
		pgTrigger: {`SELECT n.nspname, c.relname, o.tgname FROM pg_trigger o JOIN pg_class c ON c.oid = o.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace WHERE o.oid = $1`,
			`SELECT EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = to_regclass(format('%I.%I', $1::text, $2::text)) AND tgname = $3)`},
		pgRewrite: {`SELECT n.nspname, c.relname, o.rulename FROM pg_rewrite o JOIN pg_class c ON c.oid = o.ev_class JOIN pg_namespace n ON n.oid = c.relnamespace WHERE o.oid = $1`,
			`SELECT EXISTS (SELECT 1 FROM pg_rewrite WHERE ev_class = to_regclass(format('%I.%I', $1::text, $2::text)) AND rulename = $3)`},
		pgPolicy: {`SELECT n.nspname, c.relname, o.polname FROM pg_policy o JOIN pg_class c ON c.oid = o.polrelid JOIN pg_namespace n ON n.oid = c.relnamespace WHERE o.oid = $1`,
			`SELECT EXISTS (SELECT 1 FROM pg_policy WHERE polrelid = to_regclass(format('%I.%I', $1::text, $2::text)) AND polname = $3)`},
	}
	// Objects of a schema, or of none: their schema ('' for none) and name.
	named := map[uint32][2]string{
		pgClass: {`SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = $1`,
			`SELECT to_regclass(format('%I.%I', $1::text, $2::text)) IS NOT NULL`},
		pgStatisticExt: {`SELECT n.nspname, s.stxname FROM pg_statistic_ext s JOIN pg_namespace n ON n.oid = s.stxnamespace WHERE s.oid = $1`,
			`SELECT EXISTS (SELECT 1 FROM pg_statistic_ext s JOIN pg_namespace n ON n.oid = s.stxnamespace WHERE n.nspname = $1 AND s.stxname = $2)`},
		pgEventTrigger: {`SELECT '', evtname FROM pg_event_trigger WHERE oid = $1`,
			`SELECT EXISTS (SELECT 1 FROM pg_event_trigger WHERE evtname = $2 AND $1::text = '')`},
	}
	present := map[string]bool{}
	for _, e := range d.entries {
		m := tocIDs.FindStringSubmatch(e.line)
		if m == nil || strings.HasPrefix(e.rest, "INDEX ATTACH ") ||
			!slices.ContainsFunc(postDataKinds, func(k string) bool { return strings.HasPrefix(e.rest, k) }) {
			continue
		}
		catalog, _ := strconv.ParseUint(m[1], 10, 32)
		oid, _ := strconv.ParseUint(m[2], 10, 32)
		var exists bool
		if q, ok := onTable[uint32(catalog)]; ok {
			var schema, table, name string
			err := src.QueryRow(ctx, q[0], uint32(oid)).Scan(&schema, &table, &name)
			if errors.Is(err, pgx.ErrNoRows) {
				continue
			}
			if err != nil {
				return nil, fmt.Errorf("look up %s on the source: %w", e.rest, err)
			}
			if err := dst.QueryRow(ctx, q[1], schema, table, name).Scan(&exists); err != nil {
				return nil, fmt.Errorf("look up %s on the target: %w", e.rest, err)
			}
		} else if q, ok := named[uint32(catalog)]; ok {
			var schema, name string
			err := src.QueryRow(ctx, q[0], uint32(oid)).Scan(&schema, &name)
			if errors.Is(err, pgx.ErrNoRows) {
				continue
			}
			if err != nil {
				return nil, fmt.Errorf("look up %s on the source: %w", e.rest, err)
			}
			if err := dst.QueryRow(ctx, q[1], schema, name).Scan(&exists); err != nil {
				return nil, fmt.Errorf("look up %s on the target: %w", e.rest, err)
			}
		}
		if exists {
			present[e.line] = true
		}
	}
	return present, nil
}
