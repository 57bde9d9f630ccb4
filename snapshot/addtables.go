package snapshot

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/serenorg/postgres-seren-replicator/checkpoint"
	"github.com/serenorg/postgres-seren-replicator/internal/pgtools"
	"github.com/serenorg/postgres-seren-replicator/internal/plan"
	"github.com/serenorg/postgres-seren-replicator/internal/selection"
	"github.com/serenorg/postgres-seren-replicator/stream"
)

// AddOptions configure AddTables.
type AddOptions struct {
	// Slot is the migration's replication slot; the table states are kept
	// under its name.
	Slot string
	// Publication is the migration's publication; the tables are added to it.
	Publication string
	// CheckpointSchema holds the table states on the target.
	CheckpointSchema string
	// Jobs is the number of parallel copy sessions.
	Jobs int
	// Tools are the pg_dump and pg_restore to run.
	Tools pgtools.Tools
	// Target is what the target role may do (see TargetCapabilities).
	Target Capabilities
	// Progress, when set, reports the copy as init's does.
	Progress *Progress
	Log      *slog.Logger
}

// AddResult is what AddTables did.
type AddResult struct {
	// Added are the tables copied; they stream from CopyLSN on.
	Added []selection.Table
	// Gone are tables dropped on the source before they could be copied.
	Gone []selection.Table
	// CopyLSN is the consistent point of the copy's snapshot.
	CopyLSN     pglogrepl.LSN
	Rows, Bytes int64
	// Notices are the things skipped (privileges, owners), one line each.
	Notices []string
}

// ErrNotPublishable means a table cannot join the stream as it is: it is
// unlogged (never decoded) or has no key (publishing it would make the
// source reject UPDATE and DELETE on it).
var ErrNotPublishable = errors.New("table cannot be replicated as it is")

// AddTables makes tables that are not part of a running migration join it,
// while sync is not streaming: their state is recorded as copying on the
// target, they are added to the publication, a temporary slot exports a
// snapshot, their definitions (pg_dump -t) and rows are copied at it, and
// their state becomes copied at the snapshot's consistent point. The stream
// then skips their changes in transactions that committed before that point
// (apply does), so each change reaches the target exactly once.
//
// A table that already exists on the target keeps its definition there when
// it is empty; one an unfinished add made, or the kept copy of a table the
// source dropped and has now created again, is made again. A table with
// rows that no copy put there is refused.
func AddTables(ctx context.Context, db plan.Database, tables []selection.Table, o AddOptions) (res AddResult, err error) {
	if len(tables) == 0 {
		return res, nil
	}
	log := o.Log.With("db", db.Name)
	store := checkpoint.Store{Schema: o.CheckpointSchema}
	if err := CheckAddable(ctx, db, tables); err != nil {
		return res, err
	}
	dst, err := db.Target.Connect(ctx)
	if err != nil {
		return res, err
	}
	defer dst.Close(context.Background())
	src, err := db.Source.Connect(ctx)
	if err != nil {
		return res, err
	}
	defer src.Close(context.Background())

	// The state goes first: if anything below fails, the next start sees
	// the tables as unfinished and copies them again.
	earlier, err := store.LoadTables(ctx, dst, o.Slot)
	if err != nil {
		return res, err
	}
	unfinished := map[string]bool{}
	pendingOf := map[string][]string{}
	for _, t := range earlier {
		pendingOf[t.Schema+"."+t.Name] = t.Pending
		if t.State == checkpoint.TableCopying {
			unfinished[t.Schema+"."+t.Name] = true
		}
	}
	dropped := map[string]bool{}
	for _, t := range earlier {
		dropped[t.Schema+"."+t.Name] = t.State == checkpoint.TableDropped
	}
	refill, err := checkTargetTables(ctx, dst, tables, unfinished, dropped)
	if err != nil {
		return res, err
	}
	relids := make([]uint32, len(tables))
	for i, t := range tables {
		var relid *uint32
		if err := src.QueryRow(ctx, `SELECT to_regclass($1)::oid`, pgx.Identifier{t.Schema, t.Name}.Sanitize()).Scan(&relid); err != nil {
			return res, fmt.Errorf("look up %s on the source: %w", t.Qualified(), err)
		}
		if relid != nil {
			relids[i] = *relid
		}
	}
	if err := pgx.BeginFunc(ctx, dst, func(tx pgx.Tx) error {
		if err := store.EnsureTables(ctx, tx); err != nil {
			return err
		}
		for i, t := range tables {
			if err := store.SetTable(ctx, tx, o.Slot, checkpoint.Table{Schema: t.Schema, Name: t.Name, RelID: relids[i], State: checkpoint.TableCopying, Pending: pendingOf[t.Schema+"."+t.Name]}); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		return res, err
	}
	if err := publish(ctx, src, o.Publication, tables); err != nil {
		return res, err
	}

	repl, err := db.Source.ConnectReplication(ctx)
	if err != nil {
		return res, err
	}
	// Closing the connection drops the temporary slot and its snapshot.
	defer repl.Close(context.Background())
	slot, err := stream.CreateTemporarySlot(ctx, repl, addSlotName(o.Slot))
	if err != nil {
		return res, err
	}
	res.CopyLSN = slot.ConsistentPoint
	snap, err := beginSnapshot(ctx, src, slot.SnapshotName)
	if err != nil {
		return res, err
	}
	defer snap.Rollback(context.Background())

	var present, create []selection.Table
	columns := map[selection.Table]tableColumns{}
	// Other tables' keys to a table made again, kept in its state until the
	// stream has passed its copy.
	referencing := map[selection.Table][]string{}
	for _, t := range tables {
		referencing[t] = pendingOf[t.Schema+"."+t.Name]
	}
	for _, t := range tables {
		var exists bool
		ident := pgx.Identifier{t.Schema, t.Name}.Sanitize()
		if err := snap.QueryRow(ctx, `SELECT to_regclass($1) IS NOT NULL`, ident).Scan(&exists); err != nil {
			return res, fmt.Errorf("look up %s on the source: %w", t.Qualified(), err)
		}
		if !exists {
			res.Gone = append(res.Gone, t)
			if err := store.ForgetTable(ctx, dst, o.Slot, t.Schema, t.Name); err != nil {
				return res, err
			}
			continue
		}
		present = append(present, t)
		if columns[t], err = readTableColumns(ctx, snap, ident); err != nil {
			return res, err
		}
		switch state, ok := refill[t]; {
		case !ok:
			create = append(create, t)
		case state == targetPartial:
			// Made by an add that did not finish (perhaps without its
			// indexes and constraints), or the copy of a table the source
			// dropped and created again: made again.
			// Other tables' keys to it go with it, in one transaction
			// that keeps the statements to make them again in its state.
			if err := pgx.BeginFunc(ctx, dst, func(tx pgx.Tx) error {
				refs, err := dropReferences(ctx, tx, ident)
				if err != nil {
					return err
				}
				referencing[t] = mergeStatements(referencing[t], refs)
				if _, err := tx.Exec(ctx, "DROP TABLE "+ident); err != nil {
					return err
				}
				return store.SetTable(ctx, tx, o.Slot, checkpoint.Table{Schema: t.Schema, Name: t.Name, State: checkpoint.TableCopying, Pending: referencing[t]})
			}); err != nil {
				return res, fmt.Errorf("drop %s on the target (left by an add that did not finish, or the copy of a table the source dropped and created again) to copy it again: %w", t.Qualified(), err)
			}
			log.Info("replacing the target's copy of the table: it is the old one of a table the source dropped and created again, or an unfinished add", "table", t.Qualified())
			create = append(create, t)
		}
	}
	if len(present) == 0 {
		return res, nil
	}
	if err := makeTypes(ctx, snap, dst, create, present, log); err != nil {
		return res, err
	}

	dir, err := os.MkdirTemp("", "seren-add-")
	if err != nil {
		return res, fmt.Errorf("temporary directory: %w", err)
	}
	defer os.RemoveAll(dir)
	var dump *schemaDump
	var ropts restoreOptions
	foreignKeys := map[selection.Table][]string{}
	if len(create) > 0 {
		args, err := tableDumpArgs(ctx, snap, create)
		if err != nil {
			return res, err
		}
		if dump, err = dumpSchema(ctx, o.Tools, db.Source, slot.SnapshotName, dir, args); err != nil {
			return res, err
		}
		var notices []string
		if ropts, notices, err = restorePlan(ctx, dst, dump, o.Target, o.Jobs); err != nil {
			return res, err
		}
		ropts.skipForeignKeys = true
		if foreignKeys, err = foreignKeysOf(ctx, snap, create); err != nil {
			return res, err
		}
		res.Notices = append(res.Notices, notices...)
		for _, s := range schemasOf(create) {
			// CREATE SCHEMA IF NOT EXISTS needs CREATE on the database even
			// when the schema exists, which a managed target's role may lack.
			var exists bool
			if err := dst.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)`, s).Scan(&exists); err != nil {
				return res, fmt.Errorf("look up schema %s on the target: %w", s, err)
			}
			if exists {
				continue
			}
			if _, err := dst.Exec(ctx, "CREATE SCHEMA "+pgx.Identifier{s}.Sanitize()); err != nil {
				return res, fmt.Errorf("create schema %s on the target: %w", s, err)
			}
		}
		if err := dump.restorePreData(ctx, db.Target, dir, ropts); err != nil {
			return res, err
		}
	}

	copyTables, err := listCopyTables(ctx, snap, present)
	if err != nil {
		return res, err
	}
	jobs := max(o.Jobs, 1)
	pieces := planPieces(copyTables, jobs, DefaultChunkBytes, minPieceBytes, serverMajor(src.PgConn()) >= 14)
	hold := make([]string, len(present))
	for i, t := range present {
		hold[i] = pgx.Identifier{t.Schema, t.Name}.Sanitize()
	}
	progress := &progressTable{schema: o.CheckpointSchema, slot: addSlotName(o.Slot), snapshot: slot.SnapshotName}
	if err := progress.ensure(ctx, dst); err != nil {
		return res, err
	}
	var total int64
	for _, t := range copyTables {
		total += t.Bytes
	}
	o.Progress.begin(db.Name, total, pieces)
	c := &copier{src: db.Source, dst: db.Target, snapshot: slot.SnapshotName, hold: hold, progress: progress, report: o.Progress, log: log}
	stats, err := c.run(ctx, pieces, jobs)
	o.Progress.end()
	res.Rows, res.Bytes = stats.Rows, stats.Bytes
	if err != nil {
		return res, err
	}
	_ = snap.Rollback(ctx)
	repl.Close(ctx)

	if dump != nil {
		if err := dump.restorePostData(ctx, db.Target, dir, ropts); err != nil {
			return res, err
		}
		notices, err := dump.restoreACLs(ctx, db.Target, dir, ropts)
		res.Notices = append(res.Notices, notices...)
		if err != nil {
			return res, err
		}
		if ropts.noOwner {
			pending, err := restoreOwners(ctx, src, dst, o.CheckpointSchema)
			for _, sql := range pending {
				res.Notices = append(res.Notices, "owner not restored (the target role cannot become that role; an administrator can run): "+sql)
			}
			if err != nil {
				return res, err
			}
		}
	}
	if _, err := SyncSequences(ctx, src, dst); err != nil {
		return res, err
	}
	if err := pgx.BeginFunc(ctx, dst, func(tx pgx.Tx) error {
		for _, t := range present {
			if err := store.SetTable(ctx, tx, o.Slot, checkpoint.Table{Schema: t.Schema, Name: t.Name, State: checkpoint.TableCopied, CopyLSN: slot.ConsistentPoint, Pending: mergeStatements(foreignKeys[t], referencing[t])}); err != nil {
				return err
			}
			if err := columns[t].record(ctx, tx, store, o.Slot); err != nil {
				return err
			}
		}
		_, err := tx.Exec(ctx, `DELETE FROM `+progress.ident()+` WHERE slot_name = $1`, progress.slot)
		return err
	}); err != nil {
		return res, err
	}
	res.Added = present
	log.Info("tables added to the migration", "tables", len(present), "copy_lsn", slot.ConsistentPoint.String(), "rows", res.Rows)
	return res, nil
}

// targetTable is what the target holds of a table being added.
type targetTable int

const (
	targetEmpty   targetTable = iota // created beforehand by the user, empty
	targetPartial                    // made by an add that did not finish
)

// checkTargetTables finds the tables that already exist on the target. One
// holding rows that no unfinished add put there is refused before anything
// changes: the copy would have to delete them.
func checkTargetTables(ctx context.Context, dst *pgx.Conn, tables []selection.Table, unfinished, dropped map[string]bool) (map[selection.Table]targetTable, error) {
	out := map[selection.Table]targetTable{}
	for _, t := range tables {
		ident := pgx.Identifier{t.Schema, t.Name}.Sanitize()
		var onTarget, hasRows bool
		if err := dst.QueryRow(ctx, `SELECT to_regclass($1) IS NOT NULL`, ident).Scan(&onTarget); err != nil {
			return nil, fmt.Errorf("look up %s on the target: %w", t.Qualified(), err)
		}
		if !onTarget {
			continue
		}
		if err := dst.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM `+ident+`)`).Scan(&hasRows); err != nil {
			return nil, fmt.Errorf("read %s on the target: %w", t.Qualified(), err)
		}
		switch {
		case unfinished[t.Schema+"."+t.Name], dropped[t.Schema+"."+t.Name]:
			// Made by an add that did not finish, or the kept copy of a
			// table dropped on the source that is now created again there.
			out[t] = targetPartial
		case hasRows:
			return nil, fmt.Errorf("%w: %s already exists on the target and holds rows that no copy put there: empty or drop it on the target, or leave it out with --exclude-tables", ErrNotPublishable, t.Qualified())
		default:
			out[t] = targetEmpty
		}
	}
	return out, nil
}

// foreignKeysOf reads, in the snapshot, the foreign keys of tables (and of
// their partitions, declared there): the statements that make them on the
// target once the stream has passed the copy (FinishTables). Made with the
// copy, they would be checked against tables still behind it, and their
// cascades would carry those tables' older changes into the copy.
func foreignKeysOf(ctx context.Context, snap pgx.Tx, tables []selection.Table) (map[selection.Table][]string, error) {
	if _, err := snap.Exec(ctx, "SET LOCAL search_path = pg_catalog"); err != nil {
		return nil, fmt.Errorf("read foreign keys: %w", err)
	}
	out := map[selection.Table][]string{}
	for _, t := range tables {
		rows, err := snap.Query(ctx, `SELECT format('ALTER TABLE %I.%I ADD CONSTRAINT %I %s', n.nspname, cl.relname, c.conname, pg_get_constraintdef(c.oid))
			FROM pg_constraint c JOIN pg_class cl ON cl.oid = c.conrelid JOIN pg_namespace n ON n.oid = cl.relnamespace
			WHERE c.contype = 'f' AND c.conparentid = 0
			  AND c.conrelid IN (SELECT $1::regclass UNION SELECT relid FROM pg_partition_tree($1::regclass))
			ORDER BY c.conname`, pgx.Identifier{t.Schema, t.Name}.Sanitize())
		if err != nil {
			return nil, fmt.Errorf("read foreign keys of %s: %w", t.Qualified(), err)
		}
		sqls, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return nil, fmt.Errorf("read foreign keys of %s: %w", t.Qualified(), err)
		}
		out[t] = sqls
	}
	return out, nil
}

// FinishTables makes what tables added to the migration still wait for
// (their foreign keys) once the checkpoint has passed their copy, each
// table in one transaction. It returns the tables finished; a statement the
// target refuses (its rows do not satisfy the key: the target has diverged)
// is returned as an error, and the table stays pending.
func FinishTables(ctx context.Context, dst *pgx.Conn, store checkpoint.Store, slot string, checkpointLSN pglogrepl.LSN) ([]string, error) {
	states, err := store.LoadTables(ctx, dst, slot)
	if err != nil {
		return nil, err
	}
	var done []string
	for _, t := range states {
		if t.State != checkpoint.TableCopied || len(t.Pending) == 0 || t.CopyLSN > checkpointLSN {
			continue
		}
		err := pgx.BeginFunc(ctx, dst, func(tx pgx.Tx) error {
			for _, sql := range t.Pending {
				// A key made meanwhile (sync follows the source's new
				// constraints by definition) is there already.
				if _, err := tx.Exec(ctx, "SAVEPOINT seren_finish"); err != nil {
					return err
				}
				if _, err := tx.Exec(ctx, sql); err != nil {
					var pgErr *pgconn.PgError
					if !errors.As(err, &pgErr) || pgErr.Code != "42710" {
						return fmt.Errorf("%s: %w", sql, err)
					}
					if _, err := tx.Exec(ctx, "ROLLBACK TO SAVEPOINT seren_finish"); err != nil {
						return err
					}
				}
			}
			t.Pending = nil
			return store.SetTable(ctx, tx, slot, t)
		})
		if err != nil {
			return done, fmt.Errorf("table %s.%s: %w", t.Schema, t.Name, err)
		}
		done = append(done, t.Schema+"."+t.Name)
	}
	return done, nil
}

// addSlotName is the temporary slot an add creates beside the migration's.
func addSlotName(slot string) string {
	const suffix = "_add"
	if len(slot) > 63-len(suffix) {
		slot = slot[:63-len(suffix)]
	}
	return slot + suffix
}

// CheckAddable refuses, with ErrNotPublishable, tables the stream cannot
// carry, like init does: unlogged tables, tables without a key, and
// partitioned tables on a source older than PostgreSQL 13, which cannot
// publish them.
func CheckAddable(ctx context.Context, db plan.Database, tables []selection.Table) error {
	est, err := EstimateDatabase(ctx, plan.Database{Name: db.Name, Source: db.Source, Target: db.Target, Tables: tables})
	if err != nil {
		return err
	}
	if est.SourceMajor < 13 {
		conn, err := db.Source.Connect(ctx)
		if err != nil {
			return err
		}
		defer conn.Close(context.Background())
		for _, t := range tables {
			var partitioned bool
			if err := conn.QueryRow(ctx, `SELECT relkind = 'p' FROM pg_class WHERE oid = to_regclass($1)`, pgx.Identifier{t.Schema, t.Name}.Sanitize()).Scan(&partitioned); err != nil && !errors.Is(err, pgx.ErrNoRows) {
				return fmt.Errorf("look up %s on the source: %w", t.Qualified(), err)
			}
			if partitioned {
				return fmt.Errorf("%w: %s is a partitioned table, which PostgreSQL %d cannot publish (13 and later can): leave it out with --exclude-tables", ErrNotPublishable, t.Qualified(), est.SourceMajor)
			}
		}
	}
	if len(est.Unlogged) > 0 {
		return fmt.Errorf("%w: %s is unlogged, and logical decoding never sees its changes: run ALTER TABLE … SET LOGGED on the source, or leave it out with --exclude-tables",
			ErrNotPublishable, joinTables(est.Unlogged))
	}
	if len(est.NoKey) > 0 {
		return fmt.Errorf("%w: %s has no primary key or replica identity, and once published the source would reject UPDATE and DELETE on it: add a primary key (or ALTER TABLE … REPLICA IDENTITY FULL) on the source, or leave it out with --exclude-tables",
			ErrNotPublishable, joinTables(est.NoKey))
	}
	return nil
}

func joinTables(ts []selection.Table) string {
	names := make([]string, len(ts))
	for i, t := range ts {
		names[i] = t.Qualified()
	}
	return strings.Join(names, ", ")
}

// publish adds the tables the publication does not cover yet.
func publish(ctx context.Context, src *pgx.Conn, publication string, tables []selection.Table) error {
	var missing []string
	for _, t := range tables {
		var in bool
		if err := src.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_publication_rel pr JOIN pg_publication p ON p.oid = pr.prpubid
			WHERE p.pubname = $1 AND pr.prrelid = to_regclass($2))`, publication, pgx.Identifier{t.Schema, t.Name}.Sanitize()).Scan(&in); err != nil {
			return fmt.Errorf("publication %s: %w", publication, err)
		}
		if !in {
			missing = append(missing, pgx.Identifier{t.Schema, t.Name}.Sanitize())
		}
	}
	if len(missing) == 0 {
		return nil
	}
	pub := pgx.Identifier{publication}.Sanitize()
	if _, err := src.Exec(ctx, "ALTER PUBLICATION "+pub+" ADD TABLE "+strings.Join(missing, ", ")); err != nil {
		return fmt.Errorf("add %s to publication %s: %w", strings.Join(missing, ", "), publication, err)
	}
	// A walsender that decoded a change to one of these tables before they
	// were published keeps it marked unpublished until the publication
	// itself changes (PostgreSQL before 15 ignores the table's own
	// invalidation there), and would then leave out its later changes.
	// Rewriting the publication's options, unchanged, marks every table
	// for a new look, in the WAL before the copy's snapshot.
	if _, err := src.Exec(ctx, "ALTER PUBLICATION "+pub+" SET (publish = 'insert, update, delete, truncate')"); err != nil {
		return fmt.Errorf("publication %s: %w", publication, err)
	}
	return nil
}

// tableDumpArgs are the pg_dump arguments that dump exactly tables, with the
// partitions of partitioned ones (pg_dump -t alone leaves them out).
func tableDumpArgs(ctx context.Context, q querier, tables []selection.Table) ([]string, error) {
	var args []string
	for _, t := range tables {
		tree, err := partitionTree(ctx, q, t)
		if err != nil {
			return nil, err
		}
		for _, p := range tree {
			args = append(args, "--table="+p)
		}
	}
	return args, nil
}

func schemasOf(tables []selection.Table) []string {
	seen := map[string]bool{}
	var out []string
	for _, t := range tables {
		if !seen[t.Schema] {
			seen[t.Schema] = true
			out = append(out, t.Schema)
		}
	}
	return out
}

// dropReferences drops on the target the foreign keys of other tables that
// reference a table about to be made again (DROP TABLE refuses while they
// exist), and returns the statements that make them again: they wait, with
// the table's own keys, until the stream has passed its copy.
func dropReferences(ctx context.Context, dst pgx.Tx, ident string) ([]string, error) {
	rows, err := dst.Query(ctx, `SELECT format('ALTER TABLE %I.%I ADD CONSTRAINT %I %s', n.nspname, cl.relname, c.conname, pg_get_constraintdef(c.oid)),
			format('ALTER TABLE %I.%I DROP CONSTRAINT %I', n.nspname, cl.relname, c.conname)
		FROM pg_constraint c JOIN pg_class cl ON cl.oid = c.conrelid JOIN pg_namespace n ON n.oid = cl.relnamespace
		WHERE c.contype = 'f' AND c.conparentid = 0 AND c.confrelid = $1::regclass AND c.conrelid <> c.confrelid
		ORDER BY 1`, ident)
	if err != nil {
		return nil, fmt.Errorf("read the foreign keys that reference %s on the target: %w", ident, err)
	}
	var add, drop []string
	for rows.Next() {
		var a, d string
		if err := rows.Scan(&a, &d); err != nil {
			rows.Close()
			return nil, fmt.Errorf("read the foreign keys that reference %s on the target: %w", ident, err)
		}
		add, drop = append(add, a), append(drop, d)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read the foreign keys that reference %s on the target: %w", ident, err)
	}
	for _, d := range drop {
		if _, err := dst.Exec(ctx, d); err != nil {
			return nil, fmt.Errorf("%s: %w", d, err)
		}
	}
	return add, nil
}

// mergeStatements is a followed by the statements of b it lacks.
func mergeStatements(a, b []string) []string {
	out := slices.Clone(a)
	for _, s := range b {
		if !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	return out
}
