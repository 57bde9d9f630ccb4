package snapshot

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/serenorg/postgres-seren-replicator/internal/conninfo"
	"github.com/serenorg/postgres-seren-replicator/internal/ddlcapture"
	"github.com/serenorg/postgres-seren-replicator/internal/pgtools"
)

// schemaDump is the source's schema, dumped once from the exported snapshot
// in pg_dump's custom format so that pg_restore can build the post-data
// section (indexes, constraints, triggers) in parallel later.
type schemaDump struct {
	tools   pgtools.Tools
	path    string
	entries []tocEntry
}

// tocEntry is one line of `pg_restore -l`.
type tocEntry struct {
	line string
	// rest is the part after the dump id and OIDs: "TABLE public foo owner".
	rest string
}

func (e tocEntry) isACL() bool {
	return strings.HasPrefix(e.rest, "ACL ") || strings.HasPrefix(e.rest, "DEFAULT ACL ")
}

func (e tocEntry) extension() (name string, ok bool) {
	f := strings.Fields(e.rest)
	if len(f) >= 3 && f[0] == "EXTENSION" {
		return f[2], true
	}
	return "", false
}

func (e tocEntry) isExtensionComment() bool { return strings.HasPrefix(e.rest, "COMMENT - EXTENSION ") }

// owner is the entry's last field, the owning role, when the entry has one.
func (e tocEntry) owner() string {
	f := strings.Fields(e.rest)
	if len(f) < 4 || e.isACL() || strings.HasPrefix(e.rest, "EXTENSION ") || e.isExtensionComment() {
		return ""
	}
	return f[len(f)-1]
}

var tocLine = regexp.MustCompile(`^\d+; \d+ \d+ (.*)$`)

// dumpSchema runs pg_dump --schema-only in the exported snapshot (in one of
// its own when snapshotName is empty). extra are further pg_dump arguments
// (table exclusions).
func dumpSchema(ctx context.Context, tools pgtools.Tools, src *conninfo.Conn, snapshotName, dir string, extra []string) (*schemaDump, error) {
	d := &schemaDump{tools: tools, path: filepath.Join(dir, "schema.dump")}
	args := []string{"--format=custom", "--schema-only", "--no-publications", "--no-subscriptions", "--file=" + d.path}
	if snapshotName != "" { // otherwise pg_dump takes a snapshot of its own
		args = append(args, "--snapshot="+snapshotName)
	}
	args = append(args, extra...)
	if _, err := run(ctx, src, tools.PgDump, args...); err != nil {
		return nil, fmt.Errorf("dump schema: %w", err)
	}
	out, err := execOutput(ctx, tools.PgRestore, "--list", d.path)
	if err != nil {
		return nil, fmt.Errorf("list schema dump: %w", err)
	}
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	for sc.Scan() {
		line := sc.Text()
		if m := tocLine.FindStringSubmatch(line); m != nil {
			d.entries = append(d.entries, tocEntry{line: line, rest: strings.TrimSpace(m[1])})
		}
	}
	return d, sc.Err()
}

// restoreOptions say what the target role may restore.
type restoreOptions struct {
	// noOwner restores every object as the target role.
	noOwner bool
	// skipExtensionComments drops COMMENT ON EXTENSION, which needs ownership
	// of the extension (a superuser-created one on managed targets).
	skipExtensionComments bool
	// unavailable extensions are left out.
	unavailable map[string]bool
	jobs        int
	// skipForeignKeys leaves foreign keys out (AddTables makes them later).
	skipForeignKeys bool
	// present are entries (their list lines) whose objects the target has
	// already: left out of a resumed init's post-data schema.
	present map[string]bool
}

func (d *schemaDump) writeList(dir, name string, keep func(tocEntry) bool) (string, error) {
	var b strings.Builder
	for _, e := range d.entries {
		if keep(e) {
			b.WriteString(e.line)
			b.WriteByte('\n')
		}
	}
	path := filepath.Join(dir, name)
	return path, os.WriteFile(path, []byte(b.String()), 0o600)
}

func (d *schemaDump) keepStructure(o restoreOptions) func(tocEntry) bool {
	return func(e tocEntry) bool {
		if e.isACL() {
			return false // restored last, tolerating refusals
		}
		if o.skipExtensionComments && e.isExtensionComment() {
			return false
		}
		if name, ok := e.extension(); ok && o.unavailable[name] {
			return false
		}
		if o.skipForeignKeys && strings.HasPrefix(e.rest, "FK CONSTRAINT ") {
			return false
		}
		if ddlcapture.IsOwnDumpEntry(e.rest) {
			return false // the source's capture of DDL (--ddl-capture)
		}
		return !o.present[e.line]
	}
}

// restorePreData creates schemas, types, functions, tables and sequences on
// the target, in one transaction: a failure leaves nothing half-made.
func (d *schemaDump) restorePreData(ctx context.Context, dst *conninfo.Conn, dir string, o restoreOptions) error {
	list, err := d.writeList(dir, "pre.list", d.keepStructure(o))
	if err != nil {
		return err
	}
	args := []string{"--section=pre-data", "--use-list=" + list, "--exit-on-error", "--single-transaction"}
	if o.noOwner {
		args = append(args, "--no-owner")
	}
	if _, err := run(ctx, dst, d.tools.PgRestore, append(args, d.path)...); err != nil {
		return fmt.Errorf("restore schema (pre-data): %w", err)
	}
	return nil
}

// restorePostData builds indexes, constraints and triggers with o.jobs
// parallel sessions, after the data is in.
func (d *schemaDump) restorePostData(ctx context.Context, dst *conninfo.Conn, dir string, o restoreOptions) error {
	list, err := d.writeList(dir, "post.list", d.keepStructure(o))
	if err != nil {
		return err
	}
	args := []string{"--section=post-data", "--use-list=" + list, "--exit-on-error", fmt.Sprintf("--jobs=%d", max(o.jobs, 1))}
	if o.noOwner {
		args = append(args, "--no-owner")
	}
	if _, err := run(ctx, dst, d.tools.PgRestore, append(args, d.path)...); err != nil {
		return fmt.Errorf("restore schema (post-data): %w", err)
	}
	return nil
}

var restoreErrorLine = regexp.MustCompile(`(?m)^pg_restore: error: (.*)$`)

// restoreACLs grants privileges as on the source. A managed target refuses
// some grants (to reserved roles, or on objects the role does not own): those
// come back as notices, not a failure.
func (d *schemaDump) restoreACLs(ctx context.Context, dst *conninfo.Conn, dir string, o restoreOptions) (notices []string, err error) {
	n := 0
	for _, e := range d.entries {
		if e.isACL() {
			n++
		}
	}
	if n == 0 {
		return nil, nil
	}
	list, err := d.writeList(dir, "acl.list", tocEntry.isACL)
	if err != nil {
		return nil, err
	}
	args := []string{"--use-list=" + list}
	if o.noOwner {
		args = append(args, "--no-owner")
	}
	stderr, err := run(ctx, dst, d.tools.PgRestore, append(args, d.path)...)
	for _, m := range restoreErrorLine.FindAllStringSubmatch(stderr, -1) {
		notices = append(notices, "privilege not restored: "+strings.TrimPrefix(m[1], "could not execute query: "))
	}
	if err != nil && len(notices) == 0 {
		return nil, fmt.Errorf("restore privileges: %w", err)
	}
	return notices, nil
}

// owners are the roles that own objects in the dump.
func (d *schemaDump) owners() map[string]bool {
	out := map[string]bool{}
	for _, e := range d.entries {
		if o := e.owner(); o != "" && o != "-" {
			out[o] = true
		}
	}
	return out
}

// extensions are the extensions the dump creates.
func (d *schemaDump) extensions() []string {
	var out []string
	for _, e := range d.entries {
		if name, ok := e.extension(); ok {
			out = append(out, name)
		}
	}
	return out
}

// restorePlan decides, from what the target role may do, how to restore.
func restorePlan(ctx context.Context, dst *pgx.Conn, d *schemaDump, caps Capabilities, jobs int) (restoreOptions, []string, error) {
	o := restoreOptions{jobs: jobs, unavailable: map[string]bool{}, skipExtensionComments: !caps.Superuser}
	var notices []string
	if !caps.Superuser {
		o.noOwner = true
		notices = append(notices, fmt.Sprintf("target role %s is not a superuser: it restores the schema as itself, then hands each object to its source owner where it can become that role", caps.Role))
	} else {
		var missing []string
		for role := range d.owners() {
			var exists bool
			if err := dst.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)`, role).Scan(&exists); err != nil {
				return o, nil, fmt.Errorf("check owner roles: %w", err)
			}
			if !exists {
				missing = append(missing, role)
			}
		}
		if len(missing) > 0 {
			o.noOwner = true
			notices = append(notices, fmt.Sprintf("owner roles missing on the target (%s): objects are owned by %s", strings.Join(missing, ", "), caps.Role))
		}
	}
	for _, ext := range d.extensions() {
		var available bool
		if err := dst.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = $1)`, ext).Scan(&available); err != nil {
			return o, nil, fmt.Errorf("check extension %s: %w", ext, err)
		}
		if !available {
			o.unavailable[ext] = true
			notices = append(notices, fmt.Sprintf("extension %s is not available on the target: skipped (objects that need it will fail to restore)", ext))
		}
	}
	return o, notices, nil
}

// refreshMatviews fills the materialized views that are populated on the
// source; a schema-only dump leaves them empty. Views built on other views
// are retried until no more progress is made.
func refreshMatviews(ctx context.Context, src querier, dst *pgx.Conn) (int, error) {
	rows, err := src.Query(ctx, `SELECT schemaname, matviewname FROM pg_matviews WHERE ispopulated ORDER BY 1, 2`)
	if err != nil {
		return 0, fmt.Errorf("list materialized views: %w", err)
	}
	var pending []string
	for rows.Next() {
		var s, n string
		if err := rows.Scan(&s, &n); err != nil {
			return 0, err
		}
		pending = append(pending, pgx.Identifier{s, n}.Sanitize())
	}
	if err := rows.Err(); err != nil {
		return 0, fmt.Errorf("list materialized views: %w", err)
	}
	done := 0
	for len(pending) > 0 {
		var retry []string
		var lastErr error
		for _, mv := range pending {
			if _, err := dst.Exec(ctx, "REFRESH MATERIALIZED VIEW "+mv); err != nil {
				var pgErr *pgconn.PgError
				if errors.As(err, &pgErr) && pgErr.Code == "55000" { // depends on a view not yet populated
					retry = append(retry, mv)
					lastErr = err
					continue
				}
				return done, fmt.Errorf("refresh materialized view %s: %w", mv, err)
			}
			done++
		}
		if len(retry) == len(pending) {
			return done, fmt.Errorf("refresh materialized view %s: %w", retry[0], lastErr)
		}
		pending = retry
	}
	return done, nil
}
