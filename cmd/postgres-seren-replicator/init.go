package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/serenorg/postgres-seren-replicator/apply"
	"github.com/serenorg/postgres-seren-replicator/checkpoint"
	"github.com/serenorg/postgres-seren-replicator/internal/conninfo"
	"github.com/serenorg/postgres-seren-replicator/internal/pgtools"
	"github.com/serenorg/postgres-seren-replicator/internal/plan"
	"github.com/serenorg/postgres-seren-replicator/internal/preflight"
	"github.com/serenorg/postgres-seren-replicator/internal/selection"
	"github.com/serenorg/postgres-seren-replicator/snapshot"
)

// maxDefaultJobs caps the default --jobs: beyond it the source's disks,
// not the CPU count, limit a copy.
const maxDefaultJobs = 8

// InitCmd copies the selected databases from a consistent snapshot and
// prepares streaming from exactly that point.
type InitCmd struct {
	Common
	Interactive  bool `env:"SEREN_INTERACTIVE" help:"Choose databases and tables interactively."`
	Yes          bool `short:"y" env:"SEREN_YES" help:"Do not ask for confirmation."`
	DropExisting bool `name:"drop-existing" env:"SEREN_DROP_EXISTING" help:"Drop and recreate target databases that already exist."`
	Replication
	Jobs         int   `name:"jobs" short:"j" env:"SEREN_JOBS" help:"Parallel copy and index-build sessions (default: CPU count, at most 8)."`
	NoRoles      bool  `name:"no-roles" env:"SEREN_NO_ROLES" help:"Do not copy roles and memberships."`
	KeepFailed   bool  `name:"keep-failed" env:"SEREN_KEEP_FAILED" help:"Keep what a failed init created (the target database it created, the publication, the slot): running init again then resumes it. By default it is removed."`
	IdentityFull bool  `name:"replica-identity-full" env:"SEREN_REPLICA_IDENTITY_FULL" help:"Set REPLICA IDENTITY FULL on the source for selected tables that have no primary key or replica identity (without it, init refuses them: once published, the source would reject UPDATE and DELETE on them)."`
	DDLCapture   bool  `name:"ddl-capture" env:"SEREN_DDL_CAPTURE" help:"Install on each source database, before its slot, an event trigger that records every DDL statement into a table the publication carries, so that sync runs the statements on the target in commit order (needs a role that may create event triggers: a superuser, rds_superuser on RDS; validate --ddl-capture checks)."`
	ChunkBytes   int64 `name:"chunk-bytes" env:"SEREN_CHUNK_BYTES" hidden:"" help:"Split tables into block ranges of about this many bytes."`
	JobMetrics
}

// initTarget is what init does to one target database before copying.
type initTarget struct {
	db       plan.Database
	est      snapshot.Estimate
	deps     []preflight.Dependency // cut by the selection
	state    snapshot.TargetState
	create   bool
	reset    bool
	recreate bool
	note     string
	// resume is set to resume an unfinished init (resume.go);
	// whyNotResume says why one is started over instead.
	resume       *snapshot.ResumePlan
	whyNotResume string
}

// Run performs the initial copy.
func (c *InitCmd) Run(ctx context.Context, env *Env) error {
	if c.Jobs < 0 {
		return usageError("--jobs must be at least 1")
	}
	if c.Jobs == 0 {
		c.Jobs = min(runtime.NumCPU(), maxDefaultJobs)
	}
	if c.CheckpointSchema == "" {
		return usageError("--checkpoint-schema must not be empty")
	}
	jm, err := c.JobMetrics.serve(ctx, env)
	if err != nil {
		return err
	}
	defer jm.close(ctx, env)
	p, err := c.ResolveInteractive(ctx, env, c.Interactive)
	if err != nil {
		return err
	}
	if err := c.Replication.Check(p); err != nil {
		return err
	}
	start := time.Now()
	actions, err := c.inspect(ctx, p)
	if err != nil {
		return err
	}
	sourceMajor := 0
	for _, a := range actions {
		sourceMajor = max(sourceMajor, a.est.SourceMajor)
	}
	tools, err := pgtools.Find(ctx, sourceMajor)
	if err != nil {
		return usageError("no suitable pg_dump: %v: %s", err, pgtools.InstallHint(sourceMajor))
	}
	env.Log.Debug("client tools", "pg_dump", tools.PgDump, "version", tools.Major)
	printInitEstimate(env.Stdout, actions, c.Jobs, c.IdentityFull)
	if err := c.checkPublishable(actions); err != nil {
		return err
	}
	if err := c.confirm(ctx, env, actions); err != nil {
		return err
	}

	caps, err := c.targetCapabilities(ctx, p)
	if err != nil {
		return err
	}
	var rolesTook time.Duration
	if !c.NoRoles {
		t := time.Now()
		if err := c.copyRoles(ctx, env, p); err != nil {
			return err
		}
		rolesTook = time.Since(t)
	}
	progress := snapshot.NewProgress(env.Stderr, isTerminal(env.Stderr), env.Log, 0)
	progress.Observer = copyObserver{jm}
	var results []snapshot.Result
	for _, a := range actions {
		if err := c.prepareTarget(ctx, env, a); err != nil {
			return err
		}
		var identityFull []selection.Table
		if c.IdentityFull {
			identityFull = a.est.NoKey
		}
		opts := snapshot.Options{
			Slot:             c.SlotFor(a.db.Name),
			Publication:      c.PublicationFor(a.db.Name),
			CheckpointSchema: c.CheckpointSchema,
			Jobs:             c.Jobs,
			ChunkBytes:       c.ChunkBytes,
			DropStaleSlot:    a.reset || c.DropExisting,
			Tools:            tools,
			IdentityFull:     identityFull,
			KeepOnFailure:    c.KeepFailed,
			DDLCapture:       c.DDLCapture,
			Target:           caps,
			Progress:         progress,
			Log:              env.Log,
		}
		var res snapshot.Result
		if a.resume != nil {
			res, err = c.resumeDatabase(ctx, env, a, opts)
		} else {
			res, err = snapshot.InitDatabase(ctx, a.db, opts)
		}
		for _, n := range res.Notices {
			env.Log.Warn("skipped", "db", a.db.Name, "what", n)
		}
		if err != nil && a.create && !c.KeepFailed {
			// Nothing half-filled is left looking like a copy.
			if derr := snapshot.DropDatabase(context.WithoutCancel(ctx), a.db); derr == nil {
				env.Log.Info("dropped the target database the failed init created (--keep-failed keeps it)", "db", a.db.Target.Database())
			}
		}
		if errors.Is(err, snapshot.ErrRewritten) {
			return fmt.Errorf("init %s: %w: run init again", a.db.Name, err)
		}
		if err != nil && (a.resume != nil || c.KeepFailed) {
			return fmt.Errorf("init %s: %w (the slot and what was copied are kept: running init again resumes, --drop-existing starts over)", a.db.Name, err)
		}
		if err != nil {
			return fmt.Errorf("init %s: %w", a.db.Name, err)
		}
		results = append(results, res)
		if err := holdForcedTables(ctx, env, a.db, c.CheckpointSchema); err != nil {
			return fmt.Errorf("init %s: %w", a.db.Name, err)
		}
		if err := c.remember(ctx, p, a.db); err != nil {
			return err
		}
	}
	printInitSummary(env.Stdout, results, rolesTook, time.Since(start))
	printResumed(env.Stdout, results)
	next := c.syncCommand(true)
	fmt.Fprintf(env.Stdout, "\nInit is complete. Start streaming changes with:\n\n  %s\n", next)
	return nil
}

// inspect estimates every database and decides what to do with its target.
func (c *InitCmd) inspect(ctx context.Context, p plan.Plan) ([]initTarget, error) {
	var out []initTarget
	for _, db := range p.Databases {
		a := initTarget{db: db}
		var err error
		if a.est, err = snapshot.EstimateDatabase(ctx, db); err != nil {
			return nil, err
		}
		if a.deps, err = sourceDependencies(ctx, db, c.CheckpointSchema); err != nil {
			return nil, err
		}
		if a.state, err = snapshot.InspectTarget(ctx, db, c.CheckpointSchema, c.SlotFor(db.Name)); err != nil {
			return nil, err
		}
		if a.state.Exists {
			if err := refuseRunningSync(ctx, db, c.SlotFor(db.Name)); err != nil {
				return nil, err
			}
		}
		target := db.Target.Database()
		switch {
		case !a.state.Exists:
			a.create, a.note = true, "create"
		case a.state.Initialised && !c.DropExisting:
			return nil, usageError("target database %s was already initialised (checkpoint for slot %s exists): run sync, or pass --drop-existing to copy it again", target, c.SlotFor(db.Name))
		case !a.state.Unfinished.IsZero() && !c.DropExisting:
			if err := c.planResume(ctx, &a); err != nil {
				return nil, err
			}
		case !a.state.Empty() && !c.DropExisting:
			return nil, usageError("target database %s is not empty (it holds %d of: tables, views, sequences, large objects): pass --drop-existing to drop and recreate it", target, a.state.UserObjects)
		case !a.state.Empty() || a.state.Initialised || !a.state.Unfinished.IsZero():
			a.reset, a.recreate, a.note = true, p.Multi, "DROP and recreate"
			if !p.Multi {
				a.note = "DROP all its contents"
			}
		default:
			a.note = "use (empty)"
		}
		out = append(out, a)
	}
	return out, nil
}

// checkPublishable refuses, before anything is changed, a selection that
// cuts a dependency (restoring the schema would fail after the copy) and
// tables the stream cannot carry: partitioned tables on PostgreSQL 12
// (which cannot publish them), unlogged tables (never decoded), and
// tables without a key unless --replica-identity-full (publishing them
// would make the source reject UPDATE and DELETE on them).
func (c *InitCmd) checkPublishable(actions []initTarget) error {
	var unlogged, keyless, partitioned []string
	for _, a := range actions {
		for _, t := range a.est.Partitioned {
			partitioned = append(partitioned, t.String())
		}
		for _, t := range a.est.Unlogged {
			unlogged = append(unlogged, t.String())
		}
		if !c.IdentityFull {
			for _, t := range a.est.NoKey {
				keyless = append(keyless, t.String())
			}
		}
	}
	for _, a := range actions {
		if len(a.deps) > 0 {
			return usageError("database %s: the selection leaves out tables that selected objects need, so restoring the schema would fail: %s. Include those tables, or exclude what depends on them too",
				a.db.Name, preflight.DescribeDependencies(a.deps))
		}
	}
	if len(partitioned) > 0 {
		list := strings.Join(partitioned, ",")
		return usageError("partitioned: %s; PostgreSQL 12 cannot publish a partitioned table (13 and later can). Upgrade the source, or leave them out with --exclude-tables %s",
			list, list)
	}
	if len(unlogged) > 0 {
		list := strings.Join(unlogged, ",")
		return usageError("unlogged: %s; logical decoding never sees changes to unlogged tables. Run ALTER TABLE … SET LOGGED on the source, or leave them out with --exclude-tables %s",
			list, list)
	}
	if len(keyless) > 0 {
		list := strings.Join(keyless, ",")
		return usageError("no primary key or replica identity on %s: once published, the source would reject UPDATE and DELETE on them. Add a primary key, pass --replica-identity-full to have init set REPLICA IDENTITY FULL on them, or leave them out with --exclude-tables %s",
			list, list)
	}
	return nil
}

// refuseRunningSync fails when a sync is applying db's migration to its
// target: init would drop or overwrite what it writes.
func refuseRunningSync(ctx context.Context, db plan.Database, slot string) error {
	conn, err := db.Target.Connect(ctx)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	who, busy, err := apply.Holder(ctx, conn, slot)
	if err != nil || !busy {
		return err
	}
	return fmt.Errorf("a sync is applying slot %s to target database %s (%s): stop it before running init; nothing was changed", slot, db.Target.Database(), who)
}

// sourceDependencies lists what db's selection would copy that needs a
// table the selection leaves out.
func sourceDependencies(ctx context.Context, db plan.Database, checkpointSchema string) ([]preflight.Dependency, error) {
	conn, err := db.Source.Connect(ctx)
	if err != nil {
		return nil, err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	return preflight.Dependencies(ctx, conn, db, checkpointSchema)
}

func printInitEstimate(w io.Writer, actions []initTarget, jobs int, identityFull bool) {
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "DATABASE\tSIZE\tTO COPY\tINDEXES\tTABLES\tESTIMATE\tTARGET")
	var size, copyBytes, idx int64
	var tables int
	var took time.Duration
	for _, a := range actions {
		e := a.est
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%s %s\n", e.Database, snapshot.FormatBytes(e.DatabaseBytes), snapshot.FormatBytes(e.TableBytes), snapshot.FormatBytes(e.IndexBytes),
			e.Tables, initRound(e.Duration), a.db.Target.Database(), a.note)
		size, copyBytes, idx, tables, took = size+e.DatabaseBytes, copyBytes+e.TableBytes, idx+e.IndexBytes, tables+e.Tables, took+e.Duration
	}
	fmt.Fprintf(tw, "total\t%s\t%s\t%s\t%d\t%s\t\n", snapshot.FormatBytes(size), snapshot.FormatBytes(copyBytes), snapshot.FormatBytes(idx), tables, initRound(took))
	tw.Flush()
	fmt.Fprintf(w, "(a rough guide: the estimate assumes %s/s copy and %s/s index build, rates of a 2-core test machine, not measured on these servers; the copy's progress shows the real rate. Using %s.)\n",
		snapshot.FormatBytes(snapshot.CopyBytesPerSecond), snapshot.FormatBytes(snapshot.IndexBytesPerSecond), counted(jobs, "job"))
	if identityFull {
		for _, a := range actions {
			for _, t := range a.est.NoKey {
				fmt.Fprintf(w, "%s has no primary key or replica identity: init sets REPLICA IDENTITY FULL on it on the source.\n", t)
			}
		}
	}
}

// confirm asks before anything is changed, unless --yes. After
// --interactive, whose summary was confirmed already, it asks only before
// dropping target databases (--drop-existing). Ctrl-C at the question
// cancels (exit code 130); anything but y or yes declines.
func (c *InitCmd) confirm(ctx context.Context, env *Env, actions []initTarget) error {
	if c.Yes {
		return nil
	}
	drops := 0
	for _, a := range actions {
		if a.reset && c.DropExisting {
			drops++
		}
	}
	if c.Interactive && drops == 0 {
		return nil
	}
	if !isTerminal(os.Stdin) {
		return usageError("init needs confirmation but stdin is not a terminal: pass --yes to proceed without asking")
	}
	if drops > 0 {
		fmt.Fprintf(env.Stdout, "--drop-existing: %d target database(s) above will be emptied or dropped.\n", drops)
	}
	fmt.Fprint(env.Stdout, "Proceed with replication? [y/N] ")
	answer, err := readLine(ctx, os.Stdin)
	if err != nil {
		fmt.Fprintln(env.Stdout)
		return err
	}
	switch strings.ToLower(strings.TrimSpace(answer)) {
	case "y", "yes":
		return nil
	}
	return ErrCancelled
}

// readLine reads one line from in, or returns ErrInterrupted when ctx ends
// first: Ctrl-C on a terminal in line mode is a SIGINT, which ends ctx,
// while the read would wait for a line that never comes. The reading
// goroutine is left blocked; the process exits soon after.
func readLine(ctx context.Context, in io.Reader) (string, error) {
	line := make(chan string, 1)
	go func() {
		s, _ := bufio.NewReader(in).ReadString('\n')
		line <- s
	}()
	select {
	case s := <-line:
		return s, nil
	case <-ctx.Done():
		return "", ErrInterrupted
	}
}

// targetCapabilities reads what the target role may do, from the first
// target database that exists (or the maintenance database).
func (c *InitCmd) targetCapabilities(ctx context.Context, p plan.Plan) (snapshot.Capabilities, error) {
	conn, err := connectTargetServer(ctx, p)
	if err != nil {
		return snapshot.Capabilities{}, err
	}
	defer conn.Close(context.Background())
	return snapshot.TargetCapabilities(ctx, conn)
}

// connectTargetServer opens a session on the target server, for cluster-wide
// work: the first target database, else the maintenance database.
func connectTargetServer(ctx context.Context, p plan.Plan) (*pgx.Conn, error) {
	target := p.Databases[0].Target
	conn, err := target.Connect(ctx)
	if err == nil {
		return conn, nil
	}
	for _, db := range []string{"postgres", "template1"} {
		if conn, err2 := target.WithDatabase(db).Connect(ctx); err2 == nil {
			return conn, nil
		}
	}
	return nil, err
}

func (c *InitCmd) copyRoles(ctx context.Context, env *Env, p plan.Plan) error {
	src, err := p.Databases[0].Source.Connect(ctx)
	if err != nil {
		return err
	}
	defer src.Close(context.Background())
	dst, err := connectTargetServer(ctx, p)
	if err != nil {
		return err
	}
	defer dst.Close(context.Background())
	res, err := snapshot.CopyRoles(ctx, src, dst)
	if err != nil {
		return fmt.Errorf("copy roles: %w", err)
	}
	for _, n := range res.Notices {
		env.Log.Warn("role skipped", "what", n)
	}
	env.Log.Info("roles copied", "created", len(res.Created), "memberships", res.Memberships, "skipped", len(res.Notices))
	return nil
}

func (c *InitCmd) prepareTarget(ctx context.Context, env *Env, a initTarget) error {
	switch {
	case a.create:
		env.Log.Info("creating target database", "db", a.db.Target.Database())
		return snapshot.CreateDatabase(ctx, a.db, a.est.Encoding)
	case a.reset:
		if !a.state.Unfinished.IsZero() && !c.DropExisting {
			env.Log.Warn("an earlier init of this database did not finish and cannot be resumed: dropping what it created and starting over",
				"db", a.db.Name, "started", a.state.Unfinished, "why", a.whyNotResume)
		}
		return snapshot.ResetTarget(ctx, a.db, a.est.Encoding, a.recreate, env.Log)
	}
	return nil
}

func printInitSummary(w io.Writer, results []snapshot.Result, roles, total time.Duration) {
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "DATABASE\tSTEP\tDURATION\tDETAIL")
	if roles > 0 {
		fmt.Fprintf(tw, "(server)\troles\t%s\t\n", initRound(roles))
	}
	for _, r := range results {
		for _, s := range r.Steps {
			detail := ""
			switch s.Name {
			case "slot":
				detail = fmt.Sprintf("%s at %s", r.Slot, r.ConsistentPoint)
			case "data":
				rate := float64(r.Bytes) / max(s.Duration.Seconds(), 0.001)
				detail = fmt.Sprintf("%d %s (%d %s), %d %s, %s, %s/s", r.Tables, plural(r.Tables, "table"), r.Pieces, plural(r.Pieces, "piece"),
					r.Rows, plural(int(r.Rows), "row"), snapshot.FormatBytes(r.Bytes), snapshot.FormatBytes(int64(rate)))
			case "large objects":
				detail = fmt.Sprint(r.LargeObjects)
			case "materialized views":
				detail = fmt.Sprint(r.Matviews)
			case "sequences":
				detail = fmt.Sprint(r.Sequences)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", r.Database, s.Name, initRound(s.Duration), detail)
		}
		if len(r.Notices) > 0 {
			fmt.Fprintf(tw, "%s\tskipped\t\t%d %s (see the log)\n", r.Database, len(r.Notices), plural(len(r.Notices), "item"))
		}
	}
	fmt.Fprintf(tw, "total\t\t%s\t\n", initRound(total))
	tw.Flush()
}

// syncCommand is the sync invocation that continues this init, with
// passwords masked; withSelection repeats the selection flags.
func (c *InitCmd) syncCommand(withSelection bool) string {
	args := []string{"postgres-seren-replicator", "sync",
		"--source", initShellQuote(conninfo.Redact(c.Source)), "--target", initShellQuote(conninfo.Redact(c.Target))}
	if c.Slot != "" {
		args = append(args, "--slot", initShellQuote(c.Slot))
	}
	if c.Publication != "" {
		args = append(args, "--publication", initShellQuote(c.Publication))
	}
	if c.CheckpointSchema != checkpoint.DefaultSchema {
		args = append(args, "--checkpoint-schema", initShellQuote(c.CheckpointSchema))
	}
	for _, f := range []struct {
		flag string
		vals []string
	}{{"--include-databases", c.IncludeDatabases}, {"--exclude-databases", c.ExcludeDatabases},
		{"--include-tables", c.IncludeTables}, {"--exclude-tables", c.ExcludeTables}} {
		if withSelection && len(f.vals) > 0 {
			args = append(args, f.flag, initShellQuote(strings.Join(f.vals, ",")))
		}
	}
	return strings.Join(args, " ")
}

func initShellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-./:@=,") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

func initRound(d time.Duration) time.Duration {
	switch {
	case d >= time.Minute:
		return d.Round(time.Second)
	case d >= time.Second:
		return d.Round(100 * time.Millisecond)
	}
	return d.Round(time.Millisecond)
}

// holdForcedTables holds the copied tables that FORCE ROW LEVEL SECURITY
// would close to the target role (see apply.HoldForcedTables), so that
// verify reads them whole before sync has run.
func holdForcedTables(ctx context.Context, env *Env, db plan.Database, schema string) error {
	dst, err := db.Target.Connect(ctx)
	if err != nil {
		return err
	}
	defer dst.Close(context.WithoutCancel(ctx))
	names := make([]string, len(db.Tables))
	for i, t := range db.Tables {
		names[i] = pgx.Identifier{t.Schema, t.Name}.Sanitize()
	}
	held, err := apply.HoldForcedTables(ctx, dst, checkpoint.Store{Schema: schema}, names)
	for _, h := range held {
		env.Log.Info("held for the migration", "db", db.Name, "what", h)
	}
	return err
}
