package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"strings"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"golang.org/x/term"

	"github.com/serenorg/postgres-seren-replicator/apply"
	"github.com/serenorg/postgres-seren-replicator/checkpoint"
	"github.com/serenorg/postgres-seren-replicator/internal/health"
	"github.com/serenorg/postgres-seren-replicator/internal/plan"
	"github.com/serenorg/postgres-seren-replicator/snapshot"
)

// CutoverCmd stops writes on the source, applies everything up to that
// moment to the target, copies the sequences, checks the tables, and puts
// back what the migration held on the target tables: the target is then
// ready for the application.
type CutoverCmd struct {
	Common
	Replication
	Fence          string        `enum:"read-only,none,hook" default:"read-only" env:"SEREN_FENCE" help:"How writes on the source stop: read-only (new transactions in the selected databases are read-only; sessions connected before are ended after --grace), none (you stopped the application; cutover checks that no client is connected) or hook (--fence-command stops them; cutover checks that no write is in flight after --grace)."`
	FenceCommand   string        `name:"fence-command" env:"SEREN_FENCE_COMMAND" help:"With --fence=hook: shell command (sh -c) that stops the application's writes, such as a pgbouncer PAUSE; its output is shown, and a non-zero exit aborts the cutover. It gets SEREN_CUTOVER_DATABASES (the selected databases, comma-separated)."`
	UnfenceCommand string        `name:"unfence-command" env:"SEREN_UNFENCE_COMMAND" help:"With --fence=hook: shell command that lets the application write again, run when the cutover fails after --fence-command has started."`
	HookTimeout    time.Duration `name:"hook-timeout" default:"1m" env:"SEREN_FENCE_HOOK_TIMEOUT" help:"Longest run of --fence-command or --unfence-command; one that runs longer is ended and counts as failed."`
	Grace          time.Duration `default:"5s" env:"SEREN_FENCE_GRACE" help:"How long sessions may go on after the fence: connected before a read-only fence (then they are ended), connected with none, or writing after --fence-command (then cutover gives up)."`
	MaxWait        time.Duration `name:"max-wait" default:"2m" env:"SEREN_CUTOVER_MAX_WAIT" help:"Longest wait for the target to apply everything up to the fence, and for a running sync daemon to come within --max-lag before it."`
	MaxLag         time.Duration `name:"max-lag" default:"5s" env:"SEREN_CUTOVER_MAX_LAG" help:"With a sync daemon running, the fence waits (at most --max-wait, with a line every few seconds) until the daemon applies source commits at most this old, so the drain behind the fence is short."`
	Check          string        `enum:"changed,verify,counts,none" default:"changed" env:"SEREN_CUTOVER_CHECK" help:"How the tables are compared. changed: verify every selected table before the fence while the application writes, then, after the drain, every row written since on either side and every row verify named, one by one, and the rest by number and keys; verify: every row's checksum after the drain (the write pause grows with the data); counts: row counts after the drain; none: nothing (run verify yourself)."`
	Reverse        bool          `name:"reverse" env:"SEREN_CUTOVER_REVERSE" help:"Prepare the way back before handing over: a publication and a slot on the target, and on the source a checkpoint at the slot's start, so that sync --source TARGET --target SOURCE keeps the old server in step. The target needs wal_level = logical and a role that may replicate (checked first)."`
	Yes            bool          `short:"y" env:"SEREN_YES" help:"Do not ask for confirmation."`
	JSON           bool          `name:"json" env:"SEREN_JSON" help:"Print JSON."`
}

// cutoverStep is one step of the cutover as reported.
type cutoverStep struct {
	Step    string  `json:"step"`
	Seconds float64 `json:"seconds"`
	Detail  string  `json:"detail,omitempty"`
}

// cutoverReport is what cutover did.
type cutoverReport struct {
	Databases  []string      `json:"databases"`
	Fence      string        `json:"fence"`
	FenceLSN   string        `json:"fence_lsn"`
	Steps      []cutoverStep `json:"steps"`
	WritePause float64       `json:"write_pause_seconds"`
	Target     []string      `json:"target"`
	// Reverse is the way back --reverse prepared, per database.
	Reverse []reverseReport `json:"reverse,omitempty"`
	// AccessFixes are the statements that would give the target's tables
	// the source's owners and privileges (cutover does not run them).
	AccessFixes []string `json:"access_fixes,omitempty"`
}

// Run performs the cutover. Until the tables are checked, any failure puts
// the source back to writable and leaves the migration as it was.
func (c *CutoverCmd) Run(ctx context.Context, env *Env) error {
	switch {
	case c.Grace < 0:
		return usageError("--grace must not be negative")
	case c.MaxWait <= 0:
		return usageError("--max-wait must be positive")
	case c.MaxLag <= 0:
		return usageError("--max-lag must be positive")
	case c.Fence == "hook" && strings.TrimSpace(c.FenceCommand) == "":
		return usageError("--fence=hook needs --fence-command, the command that stops the application's writes")
	case c.Fence != "hook" && (c.FenceCommand != "" || c.UnfenceCommand != ""):
		return usageError("--fence-command and --unfence-command go with --fence=hook, not --fence=%s", c.Fence)
	case c.HookTimeout <= 0:
		return usageError("--hook-timeout must be positive")
	}
	p, _, err := c.resolveRecorded(ctx, env, &c.Replication, recallWithin)
	if err != nil {
		return err
	}
	if err := c.Replication.Check(p); err != nil {
		return err
	}
	if err := c.confirm(ctx, env, p); err != nil {
		return err
	}
	rep := &cutoverReport{Fence: c.Fence}
	for _, db := range p.Databases {
		rep.Databases = append(rep.Databases, db.Name)
		rep.Target = append(rep.Target, db.Target.String())
	}
	step := func(name string, f func() (string, error)) (err error) {
		start := time.Now()
		defer func() {
			// A bug in a step must not leave the source fenced: it fails
			// the step, and the caller undoes what was done.
			if p := recover(); p != nil {
				env.Log.Error("cutover step panicked", "step", name, "panic", p, "stack", string(debug.Stack()))
				err = fmt.Errorf("cutover step %s: internal error: %v", name, p)
			}
		}()
		detail, err := f()
		rep.Steps = append(rep.Steps, cutoverStep{Step: name, Seconds: time.Since(start).Seconds(), Detail: detail})
		if err != nil {
			return fmt.Errorf("cutover step %s: %w", name, err)
		}
		env.Log.Info("cutover step done", "step", name, "took", time.Since(start).Round(time.Millisecond).String(), "detail", detail)
		return nil
	}
	daemon := false
	if err := step("preflight", func() (string, error) {
		var err error
		daemon, err = c.preflight(ctx, env, p)
		if err != nil {
			return "", err
		}
		// Before the fence: what it finds is said at the hand-over.
		for _, db := range p.Databases {
			fixes, err := accessDrift(ctx, db)
			if err != nil {
				return "", err
			}
			if len(fixes) > 0 && len(p.Databases) > 1 {
				fixes = append([]string{`\connect ` + pgx.Identifier{db.Name}.Sanitize()}, fixes...)
			}
			rep.AccessFixes = append(rep.AccessFixes, fixes...)
		}
		return map[bool]string{true: "a sync daemon is running: it drains", false: "no sync running: cutover drains itself"}[daemon], nil
	}); err != nil {
		return fmt.Errorf("%w; nothing was changed", err)
	}

	if !daemon {
		// Apply the backlog while the application still writes, so the drain
		// behind the fence is short.
		if err := step("catch-up", func() (string, error) { return c.catchUp(ctx, env) }); err != nil {
			return fmt.Errorf("%w; nothing was changed", err)
		}
	}
	var baseline *beforeFence
	if c.Check == checkChanged {
		if err := step("verify", func() (string, error) {
			var detail string
			var err error
			baseline, detail, err = c.compareBeforeFence(ctx, env, p)
			return detail, err
		}); err != nil {
			return fmt.Errorf("%w; nothing was changed", err)
		}
	}
	fenceStart := time.Now()
	var fenced []plan.Database
	var fenceLSN pglogrepl.LSN
	hooked := false
	undo := func(cause error) error {
		switch {
		case c.Fence == "hook" && hooked:
			if strings.TrimSpace(c.UnfenceCommand) == "" {
				return fmt.Errorf("%w: %v; no --unfence-command was given: undo what --fence-command did yourself so that the application writes again; the migration goes on as before", errSetup, cause)
			}
			if _, uerr := runHook(context.WithoutCancel(ctx), env.Stderr, "unfence-command", c.UnfenceCommand, c.HookTimeout, p.Databases); uerr != nil {
				return fmt.Errorf("%w: %v; and the source could not be made writable again: %v: undo what --fence-command did yourself", errSetup, cause, uerr)
			}
			return fmt.Errorf("%w; --unfence-command ran, so the source is writable again and the migration goes on as before", cause)
		case c.Fence != "read-only":
			return fmt.Errorf("%w; nothing was changed on the source, and the migration goes on as before", cause)
		}
		var stuck []string
		for _, db := range fenced {
			if uerr := unfence(context.WithoutCancel(ctx), db); uerr != nil {
				stuck = append(stuck, fmt.Sprintf("ALTER DATABASE %s RESET default_transaction_read_only (%v)", pgx.Identifier{db.Name}.Sanitize(), uerr))
			}
		}
		if len(stuck) > 0 {
			// Exit 4 whatever the cause: the source needs a person first.
			return fmt.Errorf("%w: %v; and the source could not be made writable again: run %s", errSetup, cause, strings.Join(stuck, "; "))
		}
		return fmt.Errorf("%w; the source is writable again and the migration goes on as before", cause)
	}
	if err := step("fence", func() (string, error) {
		if c.Fence == "read-only" {
			fenced = p.Databases
		}
		hooked = c.Fence == "hook"
		ended, err := c.fence(ctx, env, p.Databases)
		if err != nil {
			return "", err
		}
		fenceLSN, err = markFence(ctx, p.Databases[0])
		return strings.Join(ended, "; "), err
	}); err != nil {
		return undo(err)
	}
	rep.FenceLSN = fenceLSN.String()
	if err := step("drain", func() (string, error) { return c.drain(ctx, env, p, daemon, fenceLSN) }); err != nil {
		return undo(err)
	}
	switch c.Fence {
	case "none":
		// Nobody may have connected since: a write after the mark is lost.
		if err := step("recheck", func() (string, error) { return "", c.noClients(ctx, p.Databases, 0) }); err != nil {
			return undo(err)
		}
	case "hook":
		if err := step("recheck", func() (string, error) { return "", c.noWrites(ctx, p.Databases, 0) }); err != nil {
			return undo(err)
		}
	}
	if err := step("sequences", func() (string, error) {
		for _, db := range p.Databases {
			if err := syncSequences(ctx, db, env.Log.With("database", db.Name)); err != nil {
				return "", err
			}
		}
		return "", nil
	}); err != nil {
		return undo(err)
	}
	if err := step("check", func() (string, error) {
		switch c.Check {
		case checkChanged:
			return c.checkChangedRows(ctx, env, p, baseline)
		case checkVerify:
			return c.verifyTables(ctx, env, p)
		case checkCounts:
			return compareCounts(ctx, p)
		}
		return "not compared (--check none)", nil
	}); err != nil {
		return undo(err)
	}
	if c.Reverse {
		// Before the restore, while a failure can still be undone: the
		// restore changes no row, so the slot starts where both sides are
		// equal either way.
		if err := step("reverse", func() (string, error) {
			var err error
			rep.Reverse, err = c.prepareReverse(ctx, p)
			var made []string
			for _, r := range rep.Reverse {
				made = append(made, fmt.Sprintf("%s: slot %s from %s", r.Database, r.Slot, r.StartLSN))
			}
			return strings.Join(made, "; "), err
		}); err != nil {
			return undo(err)
		}
	}
	if err := step("restore", func() (string, error) {
		var restored, lifted []string
		for _, db := range p.Databases {
			done, err := restoreHolds(ctx, db, c.CheckpointSchema)
			if err != nil {
				return "", err
			}
			restored = append(restored, done...)
			// The application comes to the target now.
			ok, err := liftTargetFence(ctx, db)
			if err != nil {
				return "", err
			}
			if ok {
				lifted = append(lifted, db.Name)
			}
		}
		detail := fmt.Sprintf("%d held %s put back", len(restored), plural(len(restored), "item"))
		if len(lifted) > 0 {
			detail += "; target " + strings.Join(lifted, ", ") + " writable again (an earlier cutover's fence)"
		}
		return detail, nil
	}); err != nil {
		return fmt.Errorf("%w; the source stays fenced and the target holds every change: stop the sync daemon if it runs, then run cleanup to put back the rest", err)
	}
	rep.WritePause = time.Since(fenceStart).Seconds()
	return c.handOver(env, rep, daemon)
}

// confirm asks before fencing, unless --yes.
func (c *CutoverCmd) confirm(ctx context.Context, env *Env, p plan.Plan) error {
	if c.Yes {
		return nil
	}
	if !term.IsTerminal(int(os.Stdin.Fd())) {
		return usageError("cutover stops writes on the source and needs confirmation: run it on a terminal, or pass --yes")
	}
	names := make([]string, len(p.Databases))
	for i, db := range p.Databases {
		names[i] = db.Name
	}
	fmt.Fprintf(env.Stderr, "Cutover stops writes on the source database(s) %s (--fence %s) and hands them over to the target. Continue? [y/N] ",
		strings.Join(names, ", "), c.Fence)
	answer, err := readLine(ctx, os.Stdin) // Ctrl-C: ErrInterrupted, exit 130
	if err != nil {
		fmt.Fprintln(env.Stderr)
		return err
	}
	switch strings.ToLower(strings.TrimSpace(answer)) {
	case "y", "yes":
		return nil
	}
	return ErrCancelled
}

// preflight refuses a migration that cannot be cut over, before anything
// changes, and tells whether a sync daemon is applying (then it drains).
func (c *CutoverCmd) preflight(ctx context.Context, env *Env, p plan.Plan) (bool, error) {
	running := 0
	for _, db := range p.Databases {
		r, err := health.Check(ctx, db, health.Options{Slot: c.SlotFor(db.Name), Publication: c.Publication, CheckpointSchema: c.CheckpointSchema})
		if err != nil {
			return false, err
		}
		if r.Verdict == health.Broken {
			return false, fmt.Errorf("%w: database %s: %s", ErrCheckFailed, db.Name, r.Reason)
		}
		dst, err := db.Target.Connect(ctx)
		if err != nil {
			return false, err
		}
		_, busy, err := apply.Holder(ctx, dst, c.SlotFor(db.Name))
		dst.Close(context.Background())
		if err != nil {
			return false, err
		}
		if busy {
			running++
		}
		if busy {
			// The pause would last as long as the daemon takes to catch up.
			if err := c.awaitCaughtUp(ctx, env, db, r); err != nil {
				return false, err
			}
		}
		if err := c.canFence(ctx, db); err != nil {
			return false, err
		}
		if err := targetWritable(ctx, db); err != nil {
			return false, err
		}
		if err := sequencesCopyable(ctx, db); err != nil {
			return false, err
		}
		if c.Reverse {
			if err := c.canReverse(ctx, db); err != nil {
				return false, err
			}
		}
	}
	if running != 0 && running != len(p.Databases) {
		return false, usageError("a sync daemon applies %d of the %d selected databases: run cutover with the daemon applying all of them, or none", running, len(p.Databases))
	}
	return running > 0, nil
}

// sequencesCopyable refuses, before the fence, sequences the sequences step
// could not copy for lack of privileges, with the GRANT that fixes each.
func sequencesCopyable(ctx context.Context, db plan.Database) error {
	src, err := db.Source.Connect(ctx)
	if err != nil {
		return err
	}
	defer src.Close(context.Background())
	dst, err := db.Target.Connect(ctx)
	if err != nil {
		return err
	}
	defer dst.Close(context.Background())
	blocked, err := snapshot.SequencesBlocked(ctx, src, dst)
	if err != nil || len(blocked) == 0 {
		return err
	}
	var fixes []string
	for _, b := range blocked {
		schema, seq := pgx.Identifier{b.Schema}.Sanitize(), pgx.Identifier{b.Schema, b.Name}.Sanitize()
		if b.OnTarget {
			role := pgx.Identifier{db.Target.User()}.Sanitize()
			fixes = append(fixes, fmt.Sprintf("on the target GRANT USAGE ON SCHEMA %s TO %s; GRANT SELECT, UPDATE ON SEQUENCE %s TO %s", schema, role, seq, role))
		} else {
			role := pgx.Identifier{db.Source.User()}.Sanitize()
			fixes = append(fixes, fmt.Sprintf("on the source GRANT USAGE ON SCHEMA %s TO %s; GRANT SELECT ON SEQUENCE %s TO %s", schema, role, seq, role))
		}
	}
	return fmt.Errorf("%w: database %s: cutover could not copy %d %s: run %s", ErrCheckFailed, db.Name, len(blocked), plural(len(blocked), "sequence"), strings.Join(fixes, "; "))
}

// awaitCaughtUp waits, at most --max-wait, until the sync daemon applying
// db is within --max-lag of the source, with a line on stderr every few
// seconds; r is the first health report. The lag counts from the last
// source commit applied, or, when less, from when the source's WAL was at
// the position the target's checkpoint has reached (sampled at each
// check), so a publication that stays quiet while the rest of the server
// writes is not behind.
func (c *CutoverCmd) awaitCaughtUp(ctx context.Context, env *Env, db plan.Database, r health.Report) error {
	opts := health.Options{Slot: c.SlotFor(db.Name), Publication: c.Publication, CheckpointSchema: c.CheckpointSchema}
	type sample struct {
		at  time.Time
		lsn pglogrepl.LSN
	}
	samples := []sample{{time.Now(), r.SourceLSN}}
	// lag bounds the age of the oldest source commit not applied: at most
	// the age of the last one applied, and at most the time since the
	// newest sample of the source's position the checkpoint has reached.
	lag := func() time.Duration {
		if r.Checkpoint >= r.SourceLSN || r.Pending != nil && !*r.Pending {
			return 0
		}
		bound := r.Lag
		for i := len(samples) - 1; i >= 0; i-- {
			if samples[i].lsn <= r.Checkpoint {
				return min(bound, time.Since(samples[i].at))
			}
		}
		return bound
	}
	deadline := time.Now().Add(c.MaxWait)
	said := time.Time{}
	for {
		behind := lag()
		switch {
		case r.Verdict != health.Healthy && r.Verdict != health.Lagging:
			return fmt.Errorf("%w: database %s: %s: wait until status says it is caught up", ErrCheckFailed, db.Name, r.Reason)
		case behind <= c.MaxLag:
			return nil
		case time.Now().After(deadline):
			return fmt.Errorf("%w: database %s: the sync daemon did not come within --max-lag %s of the source in --max-wait %s (%s, %s behind): wait until status says it is caught up, or give more --max-wait",
				ErrCheckFailed, db.Name, c.MaxLag, c.MaxWait, behind.Round(100*time.Millisecond), health.FormatBytes(r.LagBytes))
		}
		if time.Since(said) >= 2*time.Second {
			fmt.Fprintf(env.Stderr, "cutover: waiting for the sync daemon to catch up on %s: lag %s, %s behind (--max-lag %s)\n",
				db.Name, behind.Round(100*time.Millisecond), health.FormatBytes(r.LagBytes), c.MaxLag)
			said = time.Now()
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
		var err error
		if r, err = health.Check(ctx, db, opts); err != nil {
			return err
		}
		samples = append(samples, sample{time.Now(), r.SourceLSN})
	}
}

// catchUp applies everything the source committed so far, in process.
func (c *CutoverCmd) catchUp(ctx context.Context, env *Env) (string, error) {
	sc := &SyncCmd{Common: c.Common, Replication: c.Replication, CatchUp: true,
		MaxBatchChanges: apply.DefaultMaxBatchChanges, StatusInterval: 5 * time.Second, ReceiveTimeout: time.Minute,
		StallWarning: 30 * time.Second, MaxRetryDelay: 5 * time.Second, MaxLag: time.Minute, SchemaChanges: string(apply.SchemaChangesApply)}
	quiet := *env
	quiet.Stdout = io.Discard
	return "", sc.Run(ctx, &quiet)
}

// drain brings every target to the fence: the running daemon does it (we
// wait for its checkpoint), or cutover runs a catch-up itself.
func (c *CutoverCmd) drain(ctx context.Context, env *Env, p plan.Plan, daemon bool, fence pglogrepl.LSN) (string, error) {
	if !daemon {
		dctx, cancel := context.WithTimeout(ctx, c.MaxWait)
		defer cancel()
		var err error
		for {
			_, err = c.catchUp(dctx, env)
			if err == nil || dctx.Err() != nil || ExitCode(err) != ExitRuntime {
				break
			}
			// A connection lost before the stream started (sync retries
			// the later ones itself): again, within --max-wait.
			env.Log.Warn("cutover drain interrupted; trying again", "error", err)
			select {
			case <-dctx.Done():
			case <-time.After(500 * time.Millisecond):
			}
		}
		if err == nil && dctx.Err() != nil {
			// A stop is a clean end for sync, not the fence reached.
			err = dctx.Err()
		}
		if err != nil {
			if dctx.Err() != nil && ctx.Err() == nil {
				return "", fmt.Errorf("the target did not reach the fence %s within --max-wait %s: %w", fence, c.MaxWait, err)
			}
			return "", err
		}
		return "applied by cutover up to " + fence.String(), nil
	}
	store := checkpoint.Store{Schema: c.CheckpointSchema}
	deadline := time.Now().Add(c.MaxWait)
	for _, db := range p.Databases {
		dst, err := db.Target.Connect(ctx)
		if err != nil {
			return "", err
		}
		for {
			pos, err := store.Load(ctx, dst, c.SlotFor(db.Name))
			if err != nil {
				dst.Close(context.Background())
				return "", err
			}
			if pos.EndLSN >= fence {
				break
			}
			if time.Now().After(deadline) {
				dst.Close(context.Background())
				return "", fmt.Errorf("the sync daemon did not apply %s up to the fence %s within --max-wait %s (it is at %s)", db.Name, fence, c.MaxWait, pos.EndLSN)
			}
			time.Sleep(100 * time.Millisecond)
		}
		dst.Close(context.Background())
	}
	return "applied by the sync daemon up to " + fence.String(), nil
}

func restoreHolds(ctx context.Context, db plan.Database, schema string) ([]string, error) {
	dst, err := db.Target.Connect(ctx)
	if err != nil {
		return nil, err
	}
	defer dst.Close(context.Background())
	return apply.RestoreHolds(ctx, dst, checkpoint.Store{Schema: schema})
}

// handOver prints what was done, the write pause and what comes next.
func (c *CutoverCmd) handOver(env *Env, rep *cutoverReport, daemon bool) error {
	if c.JSON {
		enc := json.NewEncoder(env.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(rep)
	}
	w := env.Stdout
	fmt.Fprintf(w, "cutover of %s: done\n", strings.Join(rep.Databases, ", "))
	for _, s := range rep.Steps {
		fmt.Fprintf(w, "  %-10s %8s", s.Step, (time.Duration(s.Seconds * float64(time.Second))).Round(time.Millisecond))
		if s.Detail != "" {
			fmt.Fprintf(w, "  %s", s.Detail)
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintf(w, "write pause: %s (from the fence to now)\n", time.Duration(rep.WritePause*float64(time.Second)).Round(time.Millisecond))
	fmt.Fprintf(w, "The target is ready: point the application at %s.\n", strings.Join(rep.Target, ", "))
	if len(rep.AccessFixes) > 0 {
		fmt.Fprintln(w, "Owners or privileges of the selected tables differ from the source's (init could not set them as this role); an administrator can run on the target (psql):")
		for _, f := range rep.AccessFixes {
			fmt.Fprintf(w, "  %s\n", f)
		}
	}
	if c.Fence == "read-only" {
		fmt.Fprintf(w, "The source stays read-only for new sessions (to undo: ALTER DATABASE %s RESET default_transaction_read_only).\n", strings.Join(rep.Databases, "/"))
	}
	if c.Fence == "hook" {
		fmt.Fprintln(w, "The source stays fenced by --fence-command (to undo: run your --unfence-command).")
	}
	next := "Next: run cleanup to drop the slot and publication"
	if daemon {
		next = "Next: stop the sync daemon, then run cleanup to drop the slot and publication"
	}
	fmt.Fprintln(w, next+".")
	if len(rep.Reverse) > 0 {
		fmt.Fprintln(w, "The way back is ready: on the target, a slot and a publication start where both sides are equal:")
		for _, r := range rep.Reverse {
			fmt.Fprintf(w, "  %s: slot %s, publication %s, from %s\n", r.Database, r.Slot, r.Publication, r.StartLSN)
		}
		fmt.Fprintln(w, "To keep the old server in step, after that cleanup (the old slot would send the changes back), run sync with the connection strings swapped;")
		fmt.Fprintln(w, "PGOPTIONS lets its sessions write to the fenced old server:")
		fmt.Fprintln(w, "  PGOPTIONS='-c default_transaction_read_only=off' postgres-seren-replicator sync --source TARGET --target SOURCE")
		if c.Fence != "read-only" {
			fmt.Fprintln(w, "Keep the application off the old server: a write there is sent nowhere and makes the two differ.")
		}
	}
	return nil
}
