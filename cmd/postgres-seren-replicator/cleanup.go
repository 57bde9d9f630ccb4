package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"golang.org/x/term"

	"github.com/serenorg/postgres-seren-replicator/apply"
	"github.com/serenorg/postgres-seren-replicator/checkpoint"
	"github.com/serenorg/postgres-seren-replicator/internal/ddlcapture"
	"github.com/serenorg/postgres-seren-replicator/internal/plan"
	"github.com/serenorg/postgres-seren-replicator/stream"
)

// CleanupCmd drops what the tool created on both sides.
type CleanupCmd struct {
	Common
	Replication
	Yes   bool `short:"y" env:"SEREN_YES" help:"Do not ask for confirmation."`
	Force bool `help:"Also drop a slot a running sync is using (its connection is terminated first)."`
}

// forceWait bounds how long --force waits for a terminated walsender to
// release its slot.
const forceWait = 10 * time.Second

// cleanupState is what exists of one database's objects before cleanup.
type cleanupState struct {
	db            plan.Database
	slot          string
	slotExists    bool
	slotActivePID *int32
	publication   string
	pubExists     bool
	// pubSharedWith are other slots that may stream from the publication
	// every migration shared before each slot had its own: it stays then.
	pubSharedWith  []string
	schemaExists   bool
	checkpointName string
	// ddl is the DDL capture on the source (--ddl-capture); ddlOurs says
	// cleanup removes it: this migration's publication carries its table,
	// or none does.
	ddl     ddlcapture.State
	ddlOurs bool
}

// Run drops the slots, publication and checkpoint schema.
func (c *CleanupCmd) Run(ctx context.Context, env *Env) error {
	p, _, err := c.resolveRecorded(ctx, env, &c.Replication, recallWithin)
	if err != nil {
		return err
	}
	if err := c.Replication.Check(p); err != nil {
		return err
	}
	states := make([]cleanupState, len(p.Databases))
	present := 0
	var active []string
	for i, db := range p.Databases {
		if states[i], err = c.inspect(ctx, db); err != nil {
			return err
		}
		s := states[i]
		present += count(s.slotExists) + count(s.pubExists) + count(s.schemaExists) + count(s.ddlOurs)
		if s.slotActivePID != nil {
			active = append(active, fmt.Sprintf("slot %s of database %s (walsender pid %d)", s.slot, db.Name, *s.slotActivePID))
		}
	}
	if len(active) > 0 && !c.Force {
		return fmt.Errorf("%w: in use by a running sync: %s; stop the sync first (systemctl stop postgres-seren-replicator), or pass --force to disconnect it",
			ErrCheckFailed, strings.Join(active, ", "))
	}
	if present > 0 && !c.Yes {
		if err := c.confirm(ctx, env, states); err != nil {
			return err
		}
	}
	for _, s := range states {
		if err := c.drop(ctx, env, s); err != nil {
			return err
		}
	}
	return nil
}

func count(b bool) int {
	if b {
		return 1
	}
	return 0
}

// inspect finds which of the tool's objects exist for db.
func (c *CleanupCmd) inspect(ctx context.Context, db plan.Database) (cleanupState, error) {
	s := cleanupState{db: db, slot: c.SlotFor(db.Name), checkpointName: c.CheckpointSchema}
	if s.checkpointName == "" {
		s.checkpointName = checkpoint.DefaultSchema
	}
	src, err := db.Source.Connect(ctx)
	if err != nil {
		return s, err
	}
	defer src.Close(context.Background())
	err = src.QueryRow(ctx, `SELECT active_pid FROM pg_replication_slots WHERE slot_name = $1`, s.slot).Scan(&s.slotActivePID)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
	case err != nil:
		return s, fmt.Errorf("look up slot %s on %s: %w", s.slot, db.Source, err)
	default:
		s.slotExists = true
	}
	if s.publication, err = c.findPublication(ctx, src, s.slot, slog.Default()); err != nil {
		return s, fmt.Errorf("source %s: %w", db.Source, err)
	}
	if err := src.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = $1)`, s.publication).Scan(&s.pubExists); err != nil {
		return s, fmt.Errorf("look up publication %s on %s: %w", s.publication, db.Source, err)
	}
	if s.pubExists && s.publication == stream.LegacyPublication {
		if s.pubSharedWith, err = stream.LegacyPublicationUsers(ctx, src, s.slot); err != nil {
			return s, fmt.Errorf("source %s: %w", db.Source, err)
		}
		s.pubExists = len(s.pubSharedWith) == 0
	}
	if s.ddl, err = ddlcapture.Inspect(ctx, src, s.publication); err != nil {
		return s, fmt.Errorf("source %s: %w", db.Source, err)
	}
	s.ddlOurs = len(s.pubSharedWith) == 0 && (s.ddl.Published || s.ddl.Any() && len(s.ddl.Publications) == 0)
	dst, err := db.Target.Connect(ctx)
	if err != nil {
		return s, err
	}
	defer dst.Close(context.Background())
	if err := dst.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)`, s.checkpointName).Scan(&s.schemaExists); err != nil {
		return s, fmt.Errorf("look up schema %s on %s: %w", s.checkpointName, db.Target, err)
	}
	return s, nil
}

// confirm lists what will be dropped and asks on the terminal.
func (c *CleanupCmd) confirm(ctx context.Context, env *Env, states []cleanupState) error {
	if !term.IsTerminal(int(os.Stdin.Fd())) {
		return usageError("cleanup drops replication state and needs confirmation: run it on a terminal, or pass --yes")
	}
	fmt.Fprintln(env.Stderr, "This drops:")
	for _, s := range states {
		if s.slotExists {
			fmt.Fprintf(env.Stderr, "  on the source %s: replication slot %s\n", s.db.Source, s.slot)
		}
		if s.pubExists {
			fmt.Fprintf(env.Stderr, "  on the source %s: publication %s\n", s.db.Source, s.publication)
		}
		if s.ddlOurs {
			fmt.Fprintf(env.Stderr, "  on the source %s: %s\n", s.db.Source, ddlCaptureWhat(s.ddl, s.publication))
		}
		if s.schemaExists {
			fmt.Fprintf(env.Stderr, "  on the target %s: schema %s and the checkpoints in it\n", s.db.Target, s.checkpointName)
		}
	}
	fmt.Fprint(env.Stderr, "Streaming cannot resume afterwards without a new init. Continue? [y/N] ")
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

// drop removes one database's objects, reporting each as dropped or
// already absent. It checks again rather than trusting inspect, so a
// concurrent cleanup cannot make it fail.
func (c *CleanupCmd) drop(ctx context.Context, env *Env, s cleanupState) error {
	name := s.db.Name
	// After a cutover the source database is read-only for new
	// transactions (its fence); cleanup's drops are what the migration
	// left there, and go through.
	src, err := s.db.Source.ConnectWith(ctx, map[string]string{"default_transaction_read_only": "off"})
	if err != nil {
		return err
	}
	defer src.Close(context.Background())
	if c.Force && s.slotActivePID != nil {
		if err := releaseSlot(ctx, src, s.slot); err != nil {
			return err
		}
	}
	dropped, err := stream.DropSlot(ctx, src, s.slot)
	if err != nil {
		return fmt.Errorf("database %s: %w", name, err)
	}
	report(env, "source", name, "replication slot "+s.slot, dropped)
	if s.ddlOurs {
		// Before the publication goes: whether another publication still
		// carries the capture table decides whether the capture stays.
		rm, err := ddlcapture.Remove(ctx, src, s.publication)
		if err != nil {
			return fmt.Errorf("database %s: %w", name, err)
		}
		switch {
		case rm.Dropped:
			report(env, "source", name, "DDL capture (event triggers, functions, table "+ddlcapture.QualifiedTable+")", true)
		case rm.Unpublished:
			fmt.Fprintf(env.Stdout, "source %s: removed %s from publication %s; the DDL capture stays for publication %s\n",
				name, ddlcapture.QualifiedTable, s.publication, strings.Join(rm.KeptFor, ", "))
		}
	}
	if len(s.pubSharedWith) > 0 {
		fmt.Fprintf(env.Stdout, "source %s: kept publication %s: slot %s may still stream from it (migrations created before each slot had its own publication share it)\n",
			name, s.publication, strings.Join(s.pubSharedWith, ", "))
	} else {
		if dropped, err = stream.DropPublication(ctx, src, s.publication); err != nil {
			return fmt.Errorf("database %s: %w", name, err)
		}
		report(env, "source", name, "publication "+s.publication, dropped)
	}

	dst, err := s.db.Target.Connect(ctx)
	if err != nil {
		return err
	}
	defer dst.Close(context.Background())
	var exists bool
	if err := dst.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)`, s.checkpointName).Scan(&exists); err != nil {
		return fmt.Errorf("look up schema %s on %s: %w", s.checkpointName, s.db.Target, err)
	}
	if exists {
		// What the applier changed on the target tables for the migration is
		// put back before its records go with the schema, once no sync
		// writes there any more (one whose slot was just dropped exits).
		if err := waitForWriter(ctx, dst, s.slot); err != nil {
			return fmt.Errorf("database %s: %w", name, err)
		}
		restored, err := apply.RestoreHolds(ctx, dst, checkpoint.Store{Schema: s.checkpointName})
		if err != nil {
			return fmt.Errorf("database %s: restore the target tables: %w", name, err)
		}
		for _, what := range restored {
			fmt.Fprintf(env.Stdout, "target %s: restored %s\n", s.db.Target.Database(), what)
		}
		if err := (checkpoint.Store{Schema: s.checkpointName}).DropSchema(ctx, dst); err != nil {
			return fmt.Errorf("database %s: %w", name, err)
		}
	}
	report(env, "target", s.db.Target.Database(), "checkpoint schema "+s.checkpointName, exists)
	return nil
}

func report(env *Env, side, db, object string, dropped bool) {
	if dropped {
		fmt.Fprintf(env.Stdout, "%s %s: dropped %s\n", side, db, object)
	} else {
		fmt.Fprintf(env.Stdout, "%s %s: %s already absent\n", side, db, object)
	}
}

// waitForWriter waits up to forceWait for a sync still applying slot's
// changes to the target to go away.
func waitForWriter(ctx context.Context, dst *pgx.Conn, slot string) error {
	deadline := time.Now().Add(forceWait)
	for {
		who, busy, err := apply.Holder(ctx, dst, slot)
		if err != nil || !busy {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("a sync is still applying slot %s to the target (%s): stop it, then run cleanup again", slot, who)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// releaseSlot terminates the walsender holding slot and waits until the
// slot is free.
func releaseSlot(ctx context.Context, conn *pgx.Conn, slot string) error {
	deadline := time.Now().Add(forceWait)
	for {
		var pid *int32
		err := conn.QueryRow(ctx, `SELECT active_pid FROM pg_replication_slots WHERE slot_name = $1`, slot).Scan(&pid)
		if errors.Is(err, pgx.ErrNoRows) || err == nil && pid == nil {
			return nil
		}
		if err != nil {
			return fmt.Errorf("release slot %s: %w", slot, err)
		}
		if _, err := conn.Exec(ctx, `SELECT pg_terminate_backend($1)`, *pid); err != nil {
			return fmt.Errorf("release slot %s: terminate walsender %d: %w", slot, *pid, err)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("release slot %s: still in use after %s (a sync restarted by its service manager?)", slot, forceWait)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// ddlCaptureWhat says what cleanup removes of the DDL capture.
func ddlCaptureWhat(st ddlcapture.State, publication string) string {
	var others []string
	for _, p := range st.Publications {
		if p != publication {
			others = append(others, p)
		}
	}
	if len(others) > 0 {
		return fmt.Sprintf("table %s from publication %s (the DDL capture stays for publication %s)", ddlcapture.QualifiedTable, publication, strings.Join(others, ", "))
	}
	return "the DDL capture (event triggers " + ddlcapture.EndTrigger + " and " + ddlcapture.DropTrigger + ", their functions, table " + ddlcapture.QualifiedTable + ")"
}
