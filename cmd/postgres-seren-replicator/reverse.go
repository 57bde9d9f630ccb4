package main

import (
	"context"
	"fmt"
	"strings"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"

	"github.com/serenorg/postgres-seren-replicator/checkpoint"
	"github.com/serenorg/postgres-seren-replicator/internal/plan"
	"github.com/serenorg/postgres-seren-replicator/internal/preflight"
	"github.com/serenorg/postgres-seren-replicator/internal/selection"
	"github.com/serenorg/postgres-seren-replicator/internal/sqltext"
	"github.com/serenorg/postgres-seren-replicator/stream"
)

// The way back. At the fence, once drained, the target holds exactly the
// source's data and nothing writes to either, so a migration in the other
// direction needs no copy: a publication and a slot on the target, and on
// the source (the new target) the checkpoint at the slot's consistent point,
// the columns of each table and the migration's record, as init leaves
// them. sync --source TARGET --target SOURCE then streams every change the
// application makes on the new server back to the old one.

// reverseSuffix names the slot on the target that streams back.
const reverseSuffix = "_reverse"

// maxSlotName is PostgreSQL's NAMEDATALEN - 1.
const maxSlotName = 63

// reverseReport is what --reverse made for one database.
type reverseReport struct {
	Database    string `json:"database"`
	Slot        string `json:"slot"`
	Publication string `json:"publication"`
	// StartLSN is the slot's consistent point on the target: the source's
	// checkpoint, where the way back starts.
	StartLSN string `json:"start_lsn"`
}

// reverseSlot is the slot on the target that streams db back.
func (c *CutoverCmd) reverseSlot(db string) string { return c.SlotFor(db) + reverseSuffix }

// canReverse checks, before anything changes, that the target can be the
// source of a migration back (reverseChecks).
func (c *CutoverCmd) canReverse(ctx context.Context, db plan.Database) error {
	slot := c.reverseSlot(db.Name)
	if len(slot) > maxSlotName {
		return usageError("the way back's slot name %s is longer than %d characters: choose a shorter --slot", slot, maxSlotName)
	}
	checks, err := reverseChecks(ctx, db, slot, c.CheckpointSchema)
	if err != nil {
		return err
	}
	var problems []string
	for _, ch := range checks {
		if ch.Status == preflight.Fail {
			problems = append(problems, ch.Detail+": "+ch.Fix)
		}
	}
	if len(problems) > 0 {
		return fmt.Errorf("%w: --reverse: database %s: %s; or leave --reverse out", ErrCheckFailed, db.Name, strings.Join(problems, "; "))
	}
	return nil
}

// reverseChecks tells whether db's target can be the source of a
// migration back: wal_level = logical, a role that may replicate and
// publish the tables, a free slot, no slot or publication of the names
// the way back takes, and tables it reads whole (row-level security). Before
// init (no target database yet) it looks at the server through its
// maintenance database; schema is the tool's schema on the target.
func reverseChecks(ctx context.Context, db plan.Database, slot, schema string) ([]preflight.Check, error) {
	pub := stream.PublicationName(slot)
	conn, err := db.Target.Connect(ctx)
	exists := err == nil
	if err != nil {
		var merr error
		if conn, merr = db.Target.WithDatabase(selection.MaintenanceDatabase).Connect(ctx); merr != nil {
			return nil, err
		}
	}
	defer conn.Close(context.Background())
	var walLevel string
	var replicate, create bool
	var free int
	var slotExists, pubExists bool
	if err := conn.QueryRow(ctx, `SELECT current_setting('wal_level'),
			r.rolsuper OR r.rolreplication OR EXISTS (SELECT 1 FROM pg_roles g WHERE g.rolname = 'rds_replication' AND pg_has_role(current_user, g.oid, 'MEMBER')),
			r.rolsuper OR has_database_privilege(current_database(), 'CREATE'),
			current_setting('max_replication_slots')::int - (SELECT count(*) FROM pg_replication_slots),
			EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = $1),
			EXISTS (SELECT 1 FROM pg_publication WHERE pubname = $2)
		FROM pg_roles r WHERE r.rolname = current_user`, slot, pub).Scan(&walLevel, &replicate, &create, &free, &slotExists, &pubExists); err != nil {
		return nil, fmt.Errorf("check the target of %s for the way back: %w", db.Name, err)
	}
	check := func(name string, ok bool, detail, fix string) preflight.Check {
		ch := preflight.Check{Name: "reverse: " + name, Database: db.Name, Status: preflight.Pass, Detail: detail}
		if !ok {
			ch.Status, ch.Fix = preflight.Fail, fix
		}
		return ch
	}
	checks := []preflight.Check{
		check("target wal_level", walLevel == "logical", "wal_level is "+walLevel+" on the target",
			"set wal_level = logical on the target and restart it (on a managed service: its logical replication setting)"),
		check("target role replicates", replicate, map[bool]string{true: "the target role may replicate", false: "the target role may not replicate"}[replicate],
			"ALTER ROLE … REPLICATION (on RDS: GRANT rds_replication TO the role)"),
		check("target role publishes", create, map[bool]string{true: "the target role may create a publication", false: "the target role may not create a publication"}[create],
			"GRANT CREATE ON DATABASE "+pgx.Identifier{db.Name}.Sanitize()+" TO the role"),
		check("target slot free", free >= 1, fmt.Sprintf("%d replication %s free on the target", max(free, 0), plural(max(free, 0), "slot")), "raise max_replication_slots on the target"),
	}
	if exists {
		checks = append(checks,
			check("target names free", !slotExists && !pubExists, fmt.Sprintf("slot %s: %s, publication %s: %s on the target", slot,
				map[bool]string{true: "exists", false: "free"}[slotExists], pub, map[bool]string{true: "exists", false: "free"}[pubExists]),
				fmt.Sprintf("an earlier way back? SELECT pg_drop_replication_slot('%s'); DROP PUBLICATION IF EXISTS %s", slot, pgx.Identifier{pub}.Sanitize())))
	}
	if exists && len(db.Tables) > 0 {
		names := make([]string, len(db.Tables))
		for i, t := range db.Tables {
			names[i] = pgx.Identifier{t.Schema, t.Name}.Sanitize()
		}
		// to_regclass: a table not yet on the target (before init) is
		// made by init, owned as on the source.
		rows, err := conn.Query(ctx, `SELECT c.oid::regclass::text FROM pg_class c, pg_roles r
			WHERE c.oid = ANY (SELECT to_regclass(n) FROM unnest($1::text[]) AS n) AND r.rolname = current_user AND NOT r.rolsuper
			AND NOT pg_has_role(current_user, c.relowner, 'USAGE')`, names)
		if err != nil {
			return nil, fmt.Errorf("check table owners on the target %s: %w", db.Name, err)
		}
		notOwned, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return nil, fmt.Errorf("check table owners on the target %s: %w", db.Name, err)
		}
		checks = append(checks, check("target tables owned", len(notOwned) == 0,
			map[bool]string{true: "the target role owns the selected tables", false: "the target role does not own " + listSome(notOwned, "table")}[len(notOwned) == 0],
			"a publication needs their owner: connect as the owner of the tables"))
		forced, err := forcedForReverse(ctx, conn, names, schema)
		if err != nil {
			return nil, fmt.Errorf("check row-level security on the target %s: %w", db.Name, err)
		}
		checks = append(checks, check("target tables readable", len(forced) == 0,
			map[bool]string{true: "no selected table is forced to row-level security for the target role", false: "FORCE ROW LEVEL SECURITY (held without it while the migration runs, put back at cutover) closes " + listSome(forced, "table") + " to the target role, which the way back reads and verifies as"}[len(forced) == 0],
			"as a superuser on the target: ALTER ROLE "+pgx.Identifier{db.Target.User()}.Sanitize()+" BYPASSRLS"))
	}
	return checks, nil
}

// forcedForReverse lists the tables (quoted names) that will be forced to
// row-level security on the target after cutover, forced now or held
// without FORCE in schema's table of holds, for a role that does not
// bypass row security.
func forcedForReverse(ctx context.Context, conn *pgx.Conn, names []string, schema string) ([]string, error) {
	held := pgx.Identifier{schema, "held"}.Sanitize()
	var exists bool
	if err := conn.QueryRow(ctx, `SELECT to_regclass($1) IS NOT NULL`, held).Scan(&exists); err != nil {
		return nil, err
	}
	heldSQL := "false"
	if exists {
		heldSQL = `EXISTS (SELECT 1 FROM ` + held + ` h WHERE h.kind = 'row security' AND h.schema_name = n.nspname AND h.table_name = c.relname)`
	}
	rows, err := conn.Query(ctx, `SELECT c.oid::regclass::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace, pg_roles r
		WHERE c.oid = ANY (SELECT to_regclass(x) FROM unnest($1::text[]) AS x) AND r.rolname = current_user
		AND NOT (r.rolsuper OR r.rolbypassrls) AND c.relrowsecurity AND (c.relforcerowsecurity OR `+heldSQL+`)
		ORDER BY 1`, names)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[string])
}

// prepareReverse makes the way back for every database; on failure it
// removes what it made and returns the error.
func (c *CutoverCmd) prepareReverse(ctx context.Context, p plan.Plan) ([]reverseReport, error) {
	var made []reverseReport
	var names []string
	for _, db := range p.Databases {
		names = append(names, db.Name)
	}
	for _, db := range p.Databases {
		r, err := c.reverseOne(ctx, db, names)
		if err != nil {
			for _, m := range append(made, r) {
				if m.Publication == "" {
					continue
				}
				if uerr := c.dropReverse(context.WithoutCancel(ctx), p, m); uerr != nil {
					err = fmt.Errorf("%w; and the way back's slot %s and publication %s could not be removed from the target (%v): drop them by hand", err, m.Slot, m.Publication, uerr)
				}
			}
			return nil, err
		}
		made = append(made, r)
	}
	return made, nil
}

// reverseOne makes the publication and slot on db's target, then the
// checkpoint, columns and record on its source. The report it returns
// names what exists, also on error.
func (c *CutoverCmd) reverseOne(ctx context.Context, db plan.Database, dbs []string) (reverseReport, error) {
	r := reverseReport{Database: db.Name}
	slot := c.reverseSlot(db.Name)
	pub := stream.PublicationName(slot)
	dst, err := db.Target.Connect(ctx)
	if err != nil {
		return r, err
	}
	defer dst.Close(context.Background())
	if err := stream.EnsurePublication(ctx, dst, pub, db.Tables); err != nil {
		return r, fmt.Errorf("way back: %w", err)
	}
	r.Slot, r.Publication = slot, pub
	var text string
	// Its consistent point follows every change the drain applied: nothing
	// before it is sent back.
	if err := dst.QueryRow(ctx, `SELECT lsn::text FROM pg_create_logical_replication_slot($1, 'pgoutput')`, slot).Scan(&text); err != nil {
		return r, fmt.Errorf("way back: create slot %s on the target: %w", slot, err)
	}
	lsn, err := pglogrepl.ParseLSN(text)
	if err != nil {
		return r, fmt.Errorf("way back: slot %s: %w", slot, err)
	}
	r.StartLSN = lsn.String()
	cols, err := targetColumns(ctx, dst, db.Tables)
	if err != nil {
		return r, err
	}
	include := make([]string, len(db.Tables))
	for i, t := range db.Tables {
		include[i] = selection.QuoteName(db.Name) + "." + selection.QuoteName(t.Schema) + "." + selection.QuoteName(t.Name)
	}
	// The source is fenced: this session may write.
	src, err := fenceSession(ctx, db)
	if err != nil {
		return r, err
	}
	defer src.Close(context.Background())
	store := checkpoint.Store{Schema: c.CheckpointSchema}
	err = pgx.BeginFunc(ctx, src, func(tx pgx.Tx) error {
		if err := store.Ensure(ctx, tx); err != nil {
			return err
		}
		if err := store.Save(ctx, tx, checkpoint.Position{Slot: slot, EndLSN: lsn}); err != nil {
			return err
		}
		if err := store.EnsureTables(ctx, tx); err != nil {
			return err
		}
		for relid, cs := range cols {
			if err := store.RecordColumns(ctx, tx, slot, relid, cs); err != nil {
				return err
			}
		}
		return store.SaveSettings(ctx, tx, checkpoint.Settings{Slot: slot, Database: db.Name, Databases: dbs,
			IncludeTables: include, Publication: pub})
	})
	if err != nil {
		return r, fmt.Errorf("way back: record its checkpoint on the source %s: %w", db.Name, err)
	}
	return r, nil
}

// targetColumns reads the attribute numbers of each table's columns on
// the target, the source of the way back, as init records the source's.
func targetColumns(ctx context.Context, conn *pgx.Conn, tables []selection.Table) (map[uint32]checkpoint.SourceColumns, error) {
	out := map[uint32]checkpoint.SourceColumns{}
	for _, t := range tables {
		var relid uint32
		var nums []int16
		var names []string
		if err := conn.QueryRow(ctx, `SELECT c.oid, array_agg(a.attnum ORDER BY a.attnum), array_agg(a.attname::text ORDER BY a.attnum)
			FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid
			WHERE c.oid = $1::regclass AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = '' GROUP BY c.oid`,
			pgx.Identifier{t.Schema, t.Name}.Sanitize()).Scan(&relid, &nums, &names); err != nil {
			return nil, fmt.Errorf("way back: columns of %s on the target: %w", t, err)
		}
		cols := checkpoint.SourceColumns{}
		for i, n := range nums {
			cols[n] = names[i]
		}
		out[relid] = cols
	}
	return out, nil
}

// dropReverse removes a way back: the slot and publication on the target,
// the checkpoint and record on the source.
func (c *CutoverCmd) dropReverse(ctx context.Context, p plan.Plan, r reverseReport) error {
	for _, db := range p.Databases {
		if db.Name != r.Database {
			continue
		}
		dst, err := db.Target.Connect(ctx)
		if err != nil {
			return err
		}
		defer dst.Close(context.Background())
		if _, err := dst.Exec(ctx, `SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1`, r.Slot); err != nil {
			return err
		}
		if _, err := stream.DropPublication(ctx, dst, r.Publication); err != nil {
			return err
		}
		src, err := fenceSession(ctx, db)
		if err != nil {
			return err
		}
		defer src.Close(context.Background())
		store := checkpoint.Store{Schema: c.CheckpointSchema}
		for _, table := range []string{"checkpoint", "migration"} {
			if _, err := src.Exec(ctx, fmt.Sprintf(`DO $$ BEGIN DELETE FROM %s WHERE slot_name = %s; EXCEPTION WHEN undefined_table OR invalid_schema_name THEN NULL; END $$`,
				store.Ident(table), sqltext.Literal(r.Slot))); err != nil {
				return err
			}
		}
	}
	return nil
}

// A rollback is a cutover back onto a server an earlier cutover fenced: its
// database is read-only for new sessions until the hand-over lifts that.

// targetWritable refuses, before anything changes, a target whose sessions
// are read-only: sync, sequences and the restore could not write there.
func targetWritable(ctx context.Context, db plan.Database) error {
	conn, err := db.Target.Connect(ctx)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	var ro string
	if err := conn.QueryRow(ctx, `SELECT current_setting('default_transaction_read_only')`).Scan(&ro); err != nil {
		return fmt.Errorf("check the target %s: %w", db.Name, err)
	}
	if ro == "on" {
		return fmt.Errorf("%w: the target database %s is read-only for new sessions (fenced by an earlier cutover?): run cutover with PGOPTIONS='-c default_transaction_read_only=off' in its environment so that its own sessions write; the hand-over then makes the database writable",
			ErrCheckFailed, db.Name)
	}
	return nil
}

// liftTargetFence makes the target database writable for new sessions
// when an earlier cutover left it read-only, and tells whether it did.
func liftTargetFence(ctx context.Context, db plan.Database) (bool, error) {
	conn, err := db.Target.ConnectWith(ctx, map[string]string{"default_transaction_read_only": "off"})
	if err != nil {
		return false, err
	}
	defer conn.Close(context.Background())
	var fenced bool
	if err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase, unnest(s.setconfig) AS c
		WHERE d.datname = current_database() AND s.setrole = 0
		AND lower(c) IN ('default_transaction_read_only=on', 'default_transaction_read_only=true', 'default_transaction_read_only=yes', 'default_transaction_read_only=1'))`).Scan(&fenced); err != nil {
		return false, fmt.Errorf("read the settings of the target %s: %w", db.Name, err)
	}
	if !fenced {
		return false, nil
	}
	if _, err := conn.Exec(ctx, "ALTER DATABASE "+pgx.Identifier{db.Name}.Sanitize()+" RESET default_transaction_read_only"); err != nil {
		return false, fmt.Errorf("make the target %s writable: %w", db.Name, err)
	}
	return true, nil
}
