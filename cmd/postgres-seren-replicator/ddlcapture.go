package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/serenorg/postgres-seren-replicator/internal/ddlcapture"
	"github.com/serenorg/postgres-seren-replicator/internal/plan"
	"github.com/serenorg/postgres-seren-replicator/internal/preflight"
)

// --ddl-capture: an event trigger on each source database records every
// DDL command into seren_replicator.ddl_log, which the migration's
// publication carries; the applier runs the statements on the target at
// their place in the stream (apply/ddl.go). init installs it before the
// slot; sync installs it when given --ddl-capture (and removes it with
// --ddl-capture=false); cleanup removes it. The source itself is the
// record of whether a migration captures DDL: a sync without the flag
// keeps what the source has, and says so.

// prepareDDLCapture sets the capture up as --ddl-capture asks, once per
// run, and says whether the source captures DDL.
func (r *pipelineRunner) prepareDDLCapture(ctx context.Context, src *pgx.Conn) error {
	if r.ddlChecked {
		return nil
	}
	st, err := ddlcapture.Inspect(ctx, src, r.cmd.Publication)
	if err != nil {
		return err
	}
	switch {
	case r.cmd.ddlCaptureGiven && r.cmd.DDLCapture:
		if err := ddlcapture.Install(ctx, src, r.cmd.Publication); err != nil {
			if errors.Is(err, ddlcapture.ErrNotAllowed) {
				return setupError("%v", err)
			}
			return err
		}
		if st.Installed() {
			r.log.Info("DDL capture on: each DDL statement on the source is applied on the target in commit order", "table", ddlcapture.QualifiedTable)
		} else {
			r.log.Info("DDL capture installed on the source: each DDL statement from now on is applied on the target in commit order (earlier ones were followed from the stream alone)",
				"table", ddlcapture.QualifiedTable, "publication", r.cmd.Publication)
		}
	case r.cmd.ddlCaptureGiven && st.Any():
		rm, err := ddlcapture.Remove(ctx, src, r.cmd.Publication)
		if err != nil {
			return err
		}
		logRemoval(r.log, rm)
	case st.Installed():
		r.log.Info("DDL capture on: each DDL statement on the source is applied on the target in commit order", "table", ddlcapture.QualifiedTable)
	case st.Published:
		r.log.Warn("DDL capture installed but not recording: its event triggers are missing or disabled on the source; schema changes follow the stream alone",
			"fix", "run sync with --ddl-capture to repair it, or --ddl-capture=false to remove it")
	}
	r.ddlChecked = true
	if st, err = ddlcapture.Inspect(ctx, src, r.cmd.Publication); err != nil {
		return err
	}
	r.ddlCapture = st.Installed()
	return nil
}

func logRemoval(log *slog.Logger, rm ddlcapture.Removal) {
	switch {
	case rm.Dropped:
		log.Info("DDL capture removed from the source (event triggers, functions, table " + ddlcapture.QualifiedTable + ")")
	case rm.Unpublished:
		log.Info("DDL capture: table "+ddlcapture.QualifiedTable+" left this migration's publication; the capture stays for the others",
			"publications", strings.Join(rm.KeptFor, ", "))
	}
}

// installDDLCapture installs the capture on one source database.
func installDDLCapture(ctx context.Context, db plan.Database, publication string, log *slog.Logger) error {
	src, err := db.Source.Connect(ctx)
	if err != nil {
		return err
	}
	defer src.Close(context.WithoutCancel(ctx))
	if err := ddlcapture.Install(ctx, src, publication); err != nil {
		return err
	}
	log.Info("DDL capture installed on the source", "db", db.Name, "table", ddlcapture.QualifiedTable, "publication", publication)
	return nil
}

// ddlCaptureFix says who may create event triggers.
const ddlCaptureFix = "connect to the source as a superuser, or as the service's administrator role where it may create event triggers (rds_superuser on RDS and Aurora, cloudsqlsuperuser on Cloud SQL, neon_superuser on Neon, postgres on Supabase; see the README)"

// ddlCaptureCheck is validate's line on the DDL capture of one database:
// which path schema changes take. With required (--ddl-capture), a role
// that may not install it fails.
func ddlCaptureCheck(ctx context.Context, db plan.Database, publication string, required bool) (preflight.Check, error) {
	c := preflight.Check{Name: "DDL capture", Database: db.Name, Status: preflight.Pass}
	src, err := db.Source.Connect(ctx)
	if err != nil {
		return c, err
	}
	defer src.Close(context.WithoutCancel(ctx))
	st, err := ddlcapture.Inspect(ctx, src, publication)
	if err != nil {
		return c, fmt.Errorf("source %s: %w", db.Name, err)
	}
	av, err := ddlcapture.Probe(ctx, src)
	if err != nil {
		return c, fmt.Errorf("source %s: %w", db.Name, err)
	}
	switch {
	case st.Installed():
		c.Detail = fmt.Sprintf("installed (by %s): DDL statements are recorded in %s, which publication %s carries, and applied on the target in commit order", orRole(st.Owner), ddlcapture.QualifiedTable, publication)
	case st.Published:
		c.Status = preflight.Warn
		c.Detail = fmt.Sprintf("installed for publication %s but not recording: its event triggers are missing or disabled", publication)
		c.Fix = "run sync with --ddl-capture to repair it (as a role that may create event triggers), or --ddl-capture=false to remove it"
	case av.OK:
		c.Detail = fmt.Sprintf("available (%s): init --ddl-capture or sync --ddl-capture installs an event trigger that carries each DDL statement to the target in commit order; without it, schema changes are followed from the stream alone (a change is seen with the table's next write; enum label renames and generated columns are not seen)", av.Why)
	case required:
		c.Status = preflight.Fail
		c.Detail = "not available: " + av.Why
		c.Fix = ddlCaptureFix + ", or leave --ddl-capture out (schema changes are then followed from the stream alone)"
	default:
		c.Detail = "not available (" + av.Why + "): schema changes are followed from the stream alone (a change is seen with the table's next write; enum label renames and generated columns are not seen); --ddl-capture needs " + strings.TrimPrefix(ddlCaptureFix, "connect to the source as ")
	}
	return c, nil
}

func orRole(s string) string {
	if s == "" {
		return "an unknown role"
	}
	return s
}
