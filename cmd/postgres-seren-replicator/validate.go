package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/serenorg/postgres-seren-replicator/internal/conninfo"
	"github.com/serenorg/postgres-seren-replicator/internal/preflight"
	"github.com/serenorg/postgres-seren-replicator/stream"
)

// ValidateCmd checks both servers before replication starts.
type ValidateCmd struct {
	Common
	Interactive bool `env:"SEREN_INTERACTIVE" help:"Choose databases and tables interactively."`
	JSON        bool `name:"json" env:"SEREN_JSON" help:"Print the checks as JSON."`
	// IdentityFull checks the plan of init --replica-identity-full.
	IdentityFull bool `name:"replica-identity-full" env:"SEREN_REPLICA_IDENTITY_FULL" help:"Check as for init --replica-identity-full: tables without a key are a warning, not a failure."`
	// The names init will create, and whether it may drop a slot left
	// from before: validate refuses what init would refuse.
	Replication
	DropExisting bool `name:"drop-existing" env:"SEREN_DROP_EXISTING" help:"Check as for init --drop-existing: a slot left by an earlier init is a warning (init drops it), not a failure."`
	DDLCapture   bool `name:"ddl-capture" env:"SEREN_DDL_CAPTURE" help:"Check as for init --ddl-capture: a source role that may not create event triggers is a failure, not a note."`
	Reverse      bool `name:"reverse" env:"SEREN_VALIDATE_REVERSE" help:"Also check that the target can be the source of the way back that cutover --reverse prepares: wal_level = logical, a role that may replicate and publish, a free slot."`
}

// validateReport is the --json output.
type validateReport struct {
	OK     bool              `json:"ok"`
	Failed int               `json:"failed"`
	Checks []preflight.Check `json:"checks"`
}

// Run runs the checks and prints one table. It fails with ErrCheckFailed
// (exit code 1) when any check fails; warnings alone pass.
func (c *ValidateCmd) Run(ctx context.Context, env *Env) error {
	p, err := c.Common.ResolveInteractive(ctx, env, c.Interactive)
	if err != nil {
		return err
	}
	if c.CheckpointSchema == "" {
		return usageError("--checkpoint-schema must not be empty")
	}
	if err := c.Replication.Check(p); err != nil {
		return err
	}
	checks, err := preflight.Run(ctx, p, preflight.Options{IdentityFull: c.IdentityFull, Slot: c.Slot, Publication: c.Publication,
		CheckpointSchema: c.CheckpointSchema, DropExisting: c.DropExisting})
	if err != nil {
		return err
	}
	for _, db := range p.Databases {
		pub := c.Publication
		if pub == "" {
			pub = stream.PublicationName(c.SlotFor(db.Name))
		}
		check, err := ddlCaptureCheck(ctx, db, pub, c.DDLCapture)
		if err != nil {
			return err
		}
		checks = append(checks, check)
	}
	if c.Reverse {
		for _, db := range p.Databases {
			more, err := reverseChecks(ctx, db, c.SlotFor(db.Name)+reverseSuffix, c.CheckpointSchema)
			if err != nil {
				return err
			}
			checks = append(checks, more...)
		}
	}
	for i := range checks {
		checks[i].Detail = conninfo.Redact(checks[i].Detail)
		checks[i].Fix = conninfo.Redact(checks[i].Fix)
	}
	failed := preflight.Failed(checks)
	if c.JSON {
		enc := json.NewEncoder(env.Stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(validateReport{OK: failed == 0, Failed: failed, Checks: checks}); err != nil {
			return fmt.Errorf("write report: %w", err)
		}
	} else if err := renderChecks(env.Stdout, checks); err != nil {
		return fmt.Errorf("write report: %w", err)
	}
	if failed > 0 {
		return fmt.Errorf("%w: %d of %d validation checks failed; apply the fixes shown and run validate again", ErrCheckFailed, failed, len(checks))
	}
	return nil
}

// renderChecks prints the checks as a table, each fix on a line of its own
// under the check it belongs to.
func renderChecks(w io.Writer, checks []preflight.Check) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "STATUS\tCHECK\tDETAIL")
	for _, c := range checks {
		name := c.Name
		if c.Database != "" {
			name += " (" + c.Database + ")"
		}
		status := string(c.Status)
		if c.Status == preflight.Fail {
			status = strings.ToUpper(status)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\n", status, name, oneLine(c.Detail))
		if c.Fix != "" {
			fmt.Fprintf(tw, "\t\tfix: %s\n", oneLine(c.Fix))
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	pass, warn, failed := 0, 0, 0
	for _, c := range checks {
		switch c.Status {
		case preflight.Pass:
			pass++
		case preflight.Warn:
			warn++
		default:
			failed++
		}
	}
	_, err := fmt.Fprintf(w, "\n%d passed, %d %s, %d failed\n", pass, warn, plural(warn, "warning"), failed)
	return err
}

// oneLine keeps a table cell on one line: tabs and newlines would break
// the columns.
func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

func plural(n int, word string) string {
	switch {
	case n == 1:
		return word
	case strings.HasSuffix(word, "ch"), strings.HasSuffix(word, "s"), strings.HasSuffix(word, "x"):
		return word + "es"
	}
	return word + "s"
}

// counted is n followed by word in the right number: "1 batch", "2 batches".
func counted(n int, word string) string {
	return fmt.Sprintf("%d %s", n, plural(n, word))
}
