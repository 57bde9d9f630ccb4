// Package snapshot performs init: the consistent initial copy of a database.
// A logical slot is created with an exported snapshot; the schema (pg_dump)
// and every row (parallel COPY) are read inside that snapshot, so the copy
// holds exactly the transactions committed before the slot's consistent
// point and streaming from that point continues without loss or overlap.
package snapshot

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/serenorg/postgres-seren-replicator/checkpoint"
	"github.com/serenorg/postgres-seren-replicator/internal/ddlcapture"
	"github.com/serenorg/postgres-seren-replicator/internal/pgtools"
	"github.com/serenorg/postgres-seren-replicator/internal/plan"
	"github.com/serenorg/postgres-seren-replicator/internal/selection"
	"github.com/serenorg/postgres-seren-replicator/internal/sqltext"
	"github.com/serenorg/postgres-seren-replicator/stream"
)

// Defaults for Options.
const (
	// DefaultChunkBytes is the size of the block ranges big tables are cut into.
	DefaultChunkBytes = 128 << 20
	// minPieceBytes keeps ranges from becoming so small that their overhead shows.
	minPieceBytes = 16 << 20
)

// Options configure InitDatabase.
type Options struct {
	// Slot is the replication slot to create on the source.
	Slot string
	// Publication is created (or changed) to cover exactly the selected tables.
	Publication string
	// CheckpointSchema holds the checkpoint and init_progress tables on the target.
	CheckpointSchema string
	// Jobs is the number of parallel copy workers (and pg_restore jobs).
	Jobs int
	// ChunkBytes is the range size for splitting big tables; DefaultChunkBytes when zero.
	ChunkBytes int64
	// DropStaleSlot allows dropping an inactive slot of the same name left
	// by an earlier run; otherwise an existing slot is an error.
	DropStaleSlot bool
	// Tools are the pg_dump and pg_restore to run (pgtools.Find).
	Tools pgtools.Tools
	// KeepOnFailure leaves the slot and publication of a failed init in
	// place, so that running init again resumes it (see PlanResume).
	KeepOnFailure bool
	// IdentityFull are tables to give REPLICA IDENTITY FULL on the source
	// before they are published (they have no key to identify rows by).
	IdentityFull []selection.Table
	// DDLCapture installs the capture of DDL statements on the source
	// (internal/ddlcapture) before the slot, so that every DDL command
	// after its consistent point reaches sync; without it, a capture left
	// by an earlier migration that no other publication uses is removed.
	DDLCapture bool
	// Target is what the target role may do (see TargetCapabilities).
	Target   Capabilities
	Progress *Progress
	Log      *slog.Logger
}

// Step is one timed phase of init.
type Step struct {
	Name     string
	Duration time.Duration
}

// Result is what InitDatabase did.
type Result struct {
	Database        string
	Slot            string
	ConsistentPoint pglogrepl.LSN
	Tables, Pieces  int
	Rows, Bytes     int64
	LargeObjects    int
	Sequences       int
	Matviews        int
	Steps           []Step
	// Notices are the things skipped (privileges, owners, extensions), one line each.
	Notices []string
	// Resumed is set when an unfinished init was resumed (ResumeDatabase):
	// the tables in Kept kept their copy, those in Copied were copied again
	// at CopyLSN.
	Resumed      bool
	Kept, Copied []selection.Table
	CopyLSN      pglogrepl.LSN
}

func (r *Result) timed(name string, f func() error) error {
	start := time.Now()
	err := f()
	r.Steps = append(r.Steps, Step{Name: name, Duration: time.Since(start)})
	return err
}

// InitDatabase copies one database: publication, slot with exported
// snapshot, pre-data schema, parallel data copy, large objects, post-data
// schema, privileges, sequences, and last the checkpoint at the slot's
// consistent point. The target database must exist and be empty (see
// InspectTarget, CreateDatabase, ResetTarget). Each table is recorded as
// copied at the consistent point as its copy completes. On failure the slot
// is dropped unless KeepOnFailure; the target keeps an init_progress table
// without a checkpoint, which the next run recognises as an unfinished init,
// and resumes while the slot is there (PlanResume, ResumeDatabase).
func InitDatabase(ctx context.Context, db plan.Database, o Options) (res Result, err error) {
	res = Result{Database: db.Name, Slot: o.Slot}
	log := o.Log.With("db", db.Name)
	if o.ChunkBytes <= 0 {
		o.ChunkBytes = DefaultChunkBytes
	}
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

	pubExisted, err := publicationExists(ctx, src, o.Publication)
	if err != nil {
		return res, err
	}
	if err := prepareSource(ctx, src, db, o, log); err != nil {
		return res, err
	}
	defer func() {
		if err != nil && !pubExisted && !o.KeepOnFailure {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if conn, cerr := db.Source.Connect(ctx); cerr == nil {
				if dropped, derr := stream.DropPublication(ctx, conn, o.Publication); derr == nil && dropped {
					log.Info("dropped the publication of the failed init", "publication", o.Publication)
				}
				if o.DDLCapture {
					if r, rerr := ddlcapture.Remove(ctx, conn, o.Publication); rerr == nil && r.Dropped {
						log.Info("removed the DDL capture of the failed init")
					}
				}
				conn.Close(ctx)
			}
		}
	}()
	repl, err := db.Source.ConnectReplication(ctx)
	if err != nil {
		return res, err
	}
	// The exported snapshot lives as long as repl stays open and idle.
	defer repl.Close(context.Background())
	var slot stream.SlotInfo
	if err := res.timed("slot", func() (err error) {
		slot, err = stream.CreateSlot(ctx, repl, o.Slot, true)
		return err
	}); err != nil {
		return res, err
	}
	res.ConsistentPoint = slot.ConsistentPoint
	log.Info("created replication slot", "slot", o.Slot, "consistent_point", slot.ConsistentPoint.String(), "snapshot", slot.SnapshotName)
	defer func() {
		if err != nil && !o.KeepOnFailure { // kept, the next init resumes from it
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			repl.Close(ctx)
			if conn, cerr := db.Source.Connect(ctx); cerr == nil {
				if _, derr := stream.DropSlot(ctx, conn, o.Slot); derr == nil {
					log.Info("dropped the replication slot of the failed init", "slot", o.Slot)
				}
				conn.Close(ctx)
			}
		}
	}()
	snap, err := beginSnapshot(ctx, src, slot.SnapshotName)
	if err != nil {
		return res, err
	}
	defer snap.Rollback(context.Background())
	progress := &progressTable{schema: o.CheckpointSchema, slot: o.Slot, snapshot: slot.SnapshotName}
	if err := progress.ensure(ctx, dst); err != nil {
		return res, err
	}
	store := checkpoint.Store{Schema: o.CheckpointSchema}
	if err := store.EnsureTables(ctx, dst); err != nil {
		return res, err
	}
	if err := store.ForgetTables(ctx, dst, o.Slot); err != nil {
		return res, err
	}

	dir, err := os.MkdirTemp("", "seren-init-")
	if err != nil {
		return res, fmt.Errorf("temporary directory: %w", err)
	}
	defer os.RemoveAll(dir)
	var dump *schemaDump
	var ropts restoreOptions
	if err := res.timed("schema (pre-data)", func() error {
		excl, err := dumpExclusions(ctx, src, db, o.CheckpointSchema)
		if err != nil {
			return err
		}
		if dump, err = dumpSchema(ctx, o.Tools, db.Source, slot.SnapshotName, dir, excl); err != nil {
			return err
		}
		var notices []string
		if ropts, notices, err = restorePlan(ctx, dst, dump, o.Target, o.Jobs); err != nil {
			return err
		}
		res.Notices = append(res.Notices, notices...)
		if err := dump.restorePreData(ctx, db.Target, dir, ropts); err != nil {
			return err
		}
		return progress.mark(ctx, dst, markPreData)
	}); err != nil {
		return res, err
	}

	if err := res.timed("data", func() error {
		tables, err := listCopyTables(ctx, snap, db.Tables)
		if err != nil {
			return err
		}
		pieces := planPieces(tables, o.Jobs, o.ChunkBytes, min(minPieceBytes, o.ChunkBytes), serverMajor(src.PgConn()) >= 14)
		var total int64
		for _, t := range tables {
			total += t.Bytes
		}
		res.Tables, res.Pieces = len(tables), len(pieces)
		log.Info("copying data", "tables", len(tables), "pieces", len(pieces), "bytes", total, "jobs", o.Jobs)
		o.Progress.begin(db.Name, total, pieces)
		hold := make([]string, len(db.Tables))
		for i, t := range db.Tables {
			hold[i] = pgx.Identifier{t.Schema, t.Name}.Sanitize()
		}
		relids := map[selection.Table]uint32{}
		columns := map[selection.Table]tableColumns{}
		for _, t := range db.Tables {
			var relid uint32
			if err := snap.QueryRow(ctx, `SELECT $1::regclass::oid`, pgx.Identifier{t.Schema, t.Name}.Sanitize()).Scan(&relid); err != nil {
				return fmt.Errorf("look up %s on the source: %w", t.Qualified(), err)
			}
			relids[t] = relid
			if columns[t], err = readTableColumns(ctx, snap, pgx.Identifier{t.Schema, t.Name}.Sanitize()); err != nil {
				return err
			}
		}
		copied := func(ctx context.Context, q checkpoint.Querier, t selection.Table) error {
			if err := columns[t].record(ctx, q, store, o.Slot); err != nil {
				return err
			}
			return store.SetTable(ctx, q, o.Slot, checkpoint.Table{Schema: t.Schema, Name: t.Name, RelID: relids[t],
				State: checkpoint.TableCopied, CopyLSN: slot.ConsistentPoint})
		}
		tally := newTableTally(pieces, copied)
		for _, t := range db.Tables {
			if tally.left[t] == 0 { // no rows anywhere (a partitioned table without partitions)
				if err := copied(ctx, dst, t); err != nil {
					return err
				}
			}
		}
		c := &copier{src: db.Source, dst: db.Target, snapshot: slot.SnapshotName, hold: hold, progress: progress, report: o.Progress, log: log, tally: tally}
		stats, err := c.run(ctx, pieces, o.Jobs)
		o.Progress.end()
		res.Rows, res.Bytes = stats.Rows, stats.Bytes
		return err
	}); err != nil {
		return res, err
	}
	if err := res.timed("large objects", func() error {
		n, _, notices, err := copyLargeObjects(ctx, snap, dst, progress)
		res.LargeObjects = n
		res.Notices = append(res.Notices, notices...)
		return err
	}); err != nil {
		return res, err
	}
	// Every reader is done with the snapshot: let the source forget it.
	_ = snap.Rollback(ctx)
	repl.Close(ctx)

	if err := res.timed("schema (post-data)", func() error {
		if err := progress.mark(ctx, dst, markPostData); err != nil {
			return err
		}
		return dump.restorePostData(ctx, db.Target, dir, ropts)
	}); err != nil {
		return res, err
	}
	// Last: the checkpoint is what tells sync that init is complete.
	if err := finishInit(ctx, db, src, dst, dump, dir, ropts, o, store, &res, slot.ConsistentPoint); err != nil {
		return res, err
	}
	log.Info("init complete", "slot", o.Slot, "checkpoint", slot.ConsistentPoint.String(), "rows", res.Rows)
	return res, nil
}

// finishInit is init's closing steps once the post-data schema is built
// (the same for a first and a resumed init): materialized views refreshed,
// privileges and owners restored, sequences copied, and last the checkpoint
// at the slot's consistent point, which tells sync that init is complete.
func finishInit(ctx context.Context, db plan.Database, src, dst *pgx.Conn, dump *schemaDump, dir string, ropts restoreOptions, o Options, store checkpoint.Store, res *Result, at pglogrepl.LSN) error {
	if err := res.timed("materialized views", func() (err error) {
		res.Matviews, err = refreshMatviews(ctx, src, dst)
		return err
	}); err != nil {
		return err
	}
	if err := res.timed("privileges", func() error {
		notices, err := dump.restoreACLs(ctx, db.Target, dir, ropts)
		res.Notices = append(res.Notices, notices...)
		return err
	}); err != nil {
		return err
	}
	if ropts.noOwner {
		if err := res.timed("owners", func() error {
			pending, err := restoreOwners(ctx, src, dst, o.CheckpointSchema)
			for _, sql := range pending {
				res.Notices = append(res.Notices, "owner not restored (the target role cannot become that role; an administrator can run): "+sql)
			}
			return err
		}); err != nil {
			return err
		}
	}
	if err := res.timed("sequences", func() (err error) {
		res.Sequences, err = SyncSequences(ctx, src, dst)
		return err
	}); err != nil {
		return err
	}
	return saveInitCheckpoint(ctx, dst, store, o.Slot, at)
}

// ErrRewritten means a selected table was rewritten on the source (ALTER
// TABLE … TYPE, VACUUM FULL, CLUSTER, TRUNCATE) after the snapshot was taken
// and before init locked it: its rows as of the snapshot can no longer be
// read.
var ErrRewritten = errors.New("table rewritten on the source after the snapshot was taken")

// beginSnapshot opens a read-only transaction in the exported snapshot on
// src, for catalog reads and large objects. It sits idle while pg_dump and
// the copy run, so the server's idle-in-transaction timeout is turned off.
func beginSnapshot(ctx context.Context, src *pgx.Conn, snapshotName string) (pgx.Tx, error) {
	if _, err := src.Exec(ctx, "SET idle_in_transaction_session_timeout = 0"); err != nil {
		return nil, fmt.Errorf("configure snapshot session: %w", err)
	}
	snap, err := src.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return nil, fmt.Errorf("begin snapshot transaction: %w", err)
	}
	if _, err := snap.Exec(ctx, "SET TRANSACTION SNAPSHOT "+sqltext.Literal(snapshotName)); err != nil {
		snap.Rollback(context.Background())
		return nil, fmt.Errorf("import snapshot %s: %w", snapshotName, err)
	}
	return snap, nil
}

// holdTables locks tables (sanitized names) and their partitions in ACCESS
// SHARE mode in a copy session's snapshot transaction, as pg_dump does while
// it runs: a rewrite of a table waits until every session that may copy it
// is done. A rewrite that committed after the snapshot and before the lock
// is detected, since the table's file is then no longer the one the
// snapshot's catalog names, and its rows there are invisible or moved.
func holdTables(ctx context.Context, conn *pgconn.PgConn, tables []string) error {
	if len(tables) == 0 {
		return nil
	}
	if err := conn.Exec(ctx, "LOCK TABLE "+strings.Join(tables, ", ")+" IN ACCESS SHARE MODE").Close(); err != nil {
		return fmt.Errorf("lock the selected tables on the source: %w", err)
	}
	rels := make([]string, len(tables))
	for i, t := range tables {
		rels[i] = "(" + sqltext.Literal(t) + "::regclass)"
	}
	res := conn.ExecParams(ctx, `WITH s(rel) AS (VALUES `+strings.Join(rels, ", ")+`)
		SELECT c.oid::regclass::text FROM pg_class c
		WHERE c.relkind = 'r' AND c.relfilenode IS DISTINCT FROM pg_relation_filenode(c.oid)
		AND c.oid IN (SELECT rel FROM s UNION ALL SELECT p.relid FROM s, pg_partition_tree(s.rel) p)`, nil, nil, nil, nil).Read()
	if res.Err != nil {
		return fmt.Errorf("check the selected tables on the source: %w", res.Err)
	}
	if len(res.Rows) > 0 {
		names := make([]string, len(res.Rows))
		for i, row := range res.Rows {
			names[i] = string(row[0])
		}
		return fmt.Errorf("%w: %s", ErrRewritten, strings.Join(names, ", "))
	}
	return nil
}

func publicationExists(ctx context.Context, src *pgx.Conn, name string) (bool, error) {
	var exists bool
	if err := src.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = $1)`, name).Scan(&exists); err != nil {
		return false, fmt.Errorf("look up publication %s: %w", name, err)
	}
	return exists, nil
}

// prepareSource creates the publication and clears a stale slot.
func prepareSource(ctx context.Context, src *pgx.Conn, db plan.Database, o Options, log *slog.Logger) error {
	st, err := stream.LookupSlot(ctx, src, o.Slot)
	switch {
	case err == nil && st.Active:
		return fmt.Errorf("replication slot %s is in use on the source (is sync running?): stop it first", o.Slot)
	case err == nil && !o.DropStaleSlot:
		return fmt.Errorf("replication slot %s already exists on the source: run cleanup, pass --drop-existing to start over, or choose another --slot", o.Slot)
	case err == nil:
		if _, err := stream.DropSlot(ctx, src, o.Slot); err != nil {
			return err
		}
		log.Info("dropped the replication slot left by an earlier init", "slot", o.Slot)
	case !isSlotMissing(err):
		return err
	}
	for _, t := range o.IdentityFull {
		if _, err := src.Exec(ctx, "ALTER TABLE "+pgx.Identifier{t.Schema, t.Name}.Sanitize()+" REPLICA IDENTITY FULL"); err != nil {
			return fmt.Errorf("set REPLICA IDENTITY FULL on %s on the source: %w", t.Qualified(), err)
		}
		log.Info("set REPLICA IDENTITY FULL on the source", "table", t.Qualified())
	}
	if err := stream.EnsurePublication(ctx, src, o.Publication, db.Tables); err != nil {
		return err
	}
	return prepareDDLCapture(ctx, src, o, log)
}

// prepareDDLCapture installs the capture of DDL statements for the
// publication (its table joins the publication, which EnsurePublication
// has just set to the selected tables), or, without --ddl-capture, removes
// a capture an earlier migration left that no publication uses any more.
func prepareDDLCapture(ctx context.Context, src *pgx.Conn, o Options, log *slog.Logger) error {
	if o.DDLCapture {
		if err := ddlcapture.Install(ctx, src, o.Publication); err != nil {
			return err
		}
		log.Info("DDL capture installed on the source: each DDL statement is recorded and applied on the target in commit order",
			"table", ddlcapture.QualifiedTable, "publication", o.Publication)
		return nil
	}
	st, err := ddlcapture.Inspect(ctx, src, o.Publication)
	if err != nil || !st.Any() || len(st.Publications) > 0 {
		return err
	}
	if _, err := ddlcapture.Remove(ctx, src, ""); err != nil {
		log.Warn("a DDL capture that no publication uses is left on the source", "error", err)
		return nil
	}
	log.Info("removed a DDL capture that no publication used from the source")
	return nil
}

// dumpExclusions leaves out of pg_dump the tool's schema and the tables the
// selection leaves out (with their partitions).
func dumpExclusions(ctx context.Context, src *pgx.Conn, db plan.Database, schema string) ([]string, error) {
	args := []string{"--exclude-schema=" + dumpPattern(schema)}
	if schema != ddlcapture.Schema {
		// The capture of DDL statements (--ddl-capture) lives there.
		args = append(args, "--exclude-schema="+dumpPattern(ddlcapture.Schema))
	}
	all, err := plan.ListTables(ctx, db.Source)
	if err != nil {
		return nil, err
	}
	selected := map[string]bool{}
	for _, t := range db.Tables {
		selected[t.Schema+"\x00"+t.Name] = true
	}
	for _, t := range all {
		if selected[t.Schema+"\x00"+t.Name] {
			continue
		}
		tree, err := partitionTree(ctx, src, t)
		if err != nil {
			return nil, err
		}
		for _, p := range tree {
			args = append(args, "--exclude-table="+p)
		}
	}
	return args, nil
}

// partitionTree names a table and all its partitions, at every level, as
// pg_dump patterns.
func partitionTree(ctx context.Context, q querier, t selection.Table) ([]string, error) {
	rows, err := q.Query(ctx, `SELECT n.nspname, c.relname
		FROM (SELECT $1::regclass AS relid UNION SELECT relid FROM pg_partition_tree($1::regclass)) p
		JOIN pg_class c ON c.oid = p.relid JOIN pg_namespace n ON n.oid = c.relnamespace`, pgx.Identifier{t.Schema, t.Name}.Sanitize())
	if err != nil {
		return nil, fmt.Errorf("partitions of %s: %w", t.Qualified(), err)
	}
	var out []string
	for rows.Next() {
		var s, n string
		if err := rows.Scan(&s, &n); err != nil {
			return nil, err
		}
		out = append(out, dumpPattern(s)+"."+dumpPattern(n))
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("partitions of %s: %w", t.Qualified(), err)
	}
	return out, nil
}

// dumpPattern quotes a name for pg_dump's pattern syntax, where double
// quotes make every character literal.
func dumpPattern(name string) string { return pgx.Identifier{name}.Sanitize() }

func isSlotMissing(err error) bool { return errors.Is(err, stream.ErrSlotMissing) }
