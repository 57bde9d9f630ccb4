package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"

	"github.com/alecthomas/kong"
	"github.com/jackc/pgx/v5"

	"github.com/serenorg/postgres-seren-replicator/checkpoint"
	"github.com/serenorg/postgres-seren-replicator/internal/conninfo"
	"github.com/serenorg/postgres-seren-replicator/internal/plan"
	"github.com/serenorg/postgres-seren-replicator/internal/selection"
	"github.com/serenorg/postgres-seren-replicator/stream"
)

// The migration remembers: init records, in each target database, the
// selection, slot and publication it used (checkpoint.Settings), and the
// commands that continue the migration read that record for every flag
// the user left out. Where the record is looked for:
//
//   - a source URL naming a database: in the target database that gets it
//     (the target URL's, or the same name when the target URL names none),
//     the record of that source database (by --slot when given; several
//     migrations of it into one target database need --slot);
//   - a source URL naming postgres or no database (every database): in
//     each target database of the same name as a source database; the
//     records found must be of one init run (one set of databases), else
//     the databases --include-databases/--exclude-databases select choose
//     among them.
//
// The record is in the checkpoint schema: --checkpoint-schema when given,
// else whichever schema holds a table of migration settings.

// givenFlags are the long names of the flags set by the user: on the
// command line, by the --config file (both in kctx.Path) or by an
// environment variable.
func givenFlags(kctx *kong.Context) map[string]bool {
	given := map[string]bool{}
	for _, p := range kctx.Path {
		if p.Flag != nil {
			given[p.Flag.Name] = true
		}
	}
	for _, f := range kctx.Flags() {
		for _, env := range f.Envs {
			if _, ok := os.LookupEnv(env); ok {
				given[f.Name] = true
			}
		}
	}
	return given
}

// migration is a migration's record as found on the target.
type migration struct {
	// schema is the checkpoint schema that holds it.
	schema string
	// rows are the settings of each of its databases, by source database.
	rows map[string]checkpoint.Settings
	// latest is the most recently written row: its selection is the
	// migration's (a sync that added tables rewrites the rows one by one).
	latest checkpoint.Settings
	// targets are where each database's row is, by source database.
	targets map[string]*conninfo.Conn
	// widened is set by sync when its selection adds tables to the
	// migration's: the rows are rewritten with it once sync has checked
	// the publication.
	widened *Selection
	// narrowed is set by sync when its selection leaves out tables of the
	// recorded one; it becomes widened (the selection to record) once sync
	// has removed some of them from the migration.
	narrowed *Selection

	mu    sync.Mutex
	saved map[string]bool // databases whose row holds widened
}

// selection is the migration's recorded selection flags.
func (m *migration) selection() Selection {
	l := m.latest
	return Selection{IncludeDatabases: l.IncludeDatabases, ExcludeDatabases: l.ExcludeDatabases,
		IncludeTables: l.IncludeTables, ExcludeTables: l.ExcludeTables}
}

// describe is the recorded selection as flags, for messages.
func (s Selection) describe() string {
	var parts []string
	for _, f := range []struct {
		flag string
		vals []string
	}{{"--include-databases", s.IncludeDatabases}, {"--exclude-databases", s.ExcludeDatabases},
		{"--include-tables", s.IncludeTables}, {"--exclude-tables", s.ExcludeTables}} {
		if len(f.vals) > 0 {
			parts = append(parts, f.flag+" "+strings.Join(f.vals, ","))
		}
	}
	if len(parts) == 0 {
		return "every table"
	}
	return strings.Join(parts, " ")
}

// forDatabase narrows a selection made for several databases to db alone,
// for a source URL that names db: the database filters are left out (the
// URL chose the database) and so are table filters of other databases, so
// db's tables are those the whole selection gives it.
func (s Selection) forDatabase(db string) Selection {
	keep := func(in []string) []string {
		var out []string
		for _, e := range in {
			if p, err := selection.ParseTablePattern(e); err != nil || p.Database.Match(db) {
				out = append(out, e)
			}
		}
		return out
	}
	return Selection{IncludeTables: keep(s.IncludeTables), ExcludeTables: keep(s.ExcludeTables)}
}

// tablesOf is s with the table entries that came from recorded kept only
// where their database part matches one of dbs.
func (s Selection) tablesOf(dbs []string, recorded Selection) Selection {
	keep := func(in, fromRecord []string) []string {
		if !slices.Equal(in, fromRecord) {
			return in // given, not recorded: kept as given
		}
		var out []string
		for _, e := range in {
			p, err := selection.ParseTablePattern(e)
			if err != nil || slices.ContainsFunc(dbs, p.Database.Match) {
				out = append(out, e)
			}
		}
		return out
	}
	s.IncludeTables = keep(s.IncludeTables, recorded.IncludeTables)
	s.ExcludeTables = keep(s.ExcludeTables, recorded.ExcludeTables)
	return s
}

// recallMode is how a command may differ from the recorded selection.
type recallMode int

const (
	// recallWithin: the selection given must lie within the migration's
	// (status, verify, cleanup and cutover may look at a part of it).
	recallWithin recallMode = iota
	// recallSync: sync may also select more tables of the migration's
	// databases: they join the migration, and its record follows (when
	// the selection given is the whole migration's, not narrowed to some
	// of its databases).
	recallSync
)

// resolveRecorded is Resolve for the commands that continue a migration:
// init's record fills in the selection, slot, publication and checkpoint
// schema the user left out, and a flag given that contradicts it is a
// usage error naming the difference. Without a record (a migration made
// before records were kept) it is Resolve with the flags as given.
func (c *Common) resolveRecorded(ctx context.Context, env *Env, r *Replication, mode recallMode) (plan.Plan, *migration, error) {
	given := func(name string) bool { return env.Given[name] }
	src, dst, err := c.Endpoints.Parse()
	if err != nil {
		return plan.Plan{}, nil, err
	}
	m, err := findMigration(ctx, src, dst, c.Selection, *r, given)
	if err != nil || m == nil {
		if err != nil {
			return plan.Plan{}, nil, err
		}
		p, err := c.Resolve(ctx)
		return p, nil, err
	}
	env.Log.Debug("using the migration's record", "schema", m.schema, "databases", strings.Join(m.latest.Databases, ","),
		"selection", m.selection().describe())
	if err := m.applyNames(r, given); err != nil {
		return plan.Plan{}, nil, err
	}
	recorded := m.selection()
	single := src.Database() != "" && src.Database() != selection.MaintenanceDatabase
	partOfMany := single && !slices.Equal(m.latest.Databases, []string{src.Database()})
	if partOfMany {
		recorded = recorded.forDatabase(src.Database())
	}
	// Tables sync adds are recorded as the migration's selection: only
	// from the whole selection, not from one narrowed to some databases.
	widen := mode == recallSync && !partOfMany && !given("include-databases") && !given("exclude-databases")
	var givenSel []string
	merged, only := recorded, Selection{}
	for _, f := range []struct {
		name string
		from []string
		into *[]string
	}{{"include-databases", c.IncludeDatabases, &merged.IncludeDatabases}, {"exclude-databases", c.ExcludeDatabases, &merged.ExcludeDatabases},
		{"include-tables", c.IncludeTables, &merged.IncludeTables}, {"exclude-tables", c.ExcludeTables, &merged.ExcludeTables}} {
		if given(f.name) {
			givenSel = append(givenSel, "--"+f.name)
			*f.into = nonEmpty(f.from)
		}
	}
	only.IncludeDatabases, only.ExcludeDatabases = nonEmpty(c.IncludeDatabases), nonEmpty(c.ExcludeDatabases)
	only.IncludeTables, only.ExcludeTables = nonEmpty(c.IncludeTables), nonEmpty(c.ExcludeTables)
	c.Selection = recorded
	want, err := c.Resolve(ctx)
	if err != nil {
		return plan.Plan{}, nil, fmt.Errorf("the migration's recorded selection (%s): %w", recorded.describe(), err)
	}
	want = m.narrow(want)
	if len(givenSel) == 0 {
		return want, m, nil
	}
	if given("include-databases") || given("exclude-databases") {
		// Recorded table entries of databases the flags now leave out do
		// not apply (and would not match).
		if dbs, err := chosenDatabases(ctx, src, merged); err == nil {
			merged = merged.tablesOf(dbs, recorded)
		}
	}
	c.Selection = merged
	got, mergedErr := c.Resolve(ctx)
	var dbs, tables []string
	if mergedErr == nil {
		dbs, tables = outside(got, want)
	} else {
		// The flags given alone show whether they reach for a database
		// the migration does not hold; else the error stands.
		c.Selection = only
		if alone, err := c.Resolve(ctx); err == nil {
			dbs, _ = outside(alone, want)
		}
		c.Selection = merged
	}
	named := false
	if mergedErr == nil && len(dbs) == 0 && len(tables) == 0 && (given("include-databases") || given("include-tables")) {
		// An include entry given that names what the recorded excludes
		// leave out contradicts them, though they hide it from got.
		c.Selection = only
		if alone, err := c.Resolve(ctx); err == nil {
			dbs, tables = outside(included(alone, only), want)
			named = true
		}
		c.Selection = merged
	}
	if len(dbs) > 0 {
		return plan.Plan{}, nil, usageError("%s %s %s, which the migration recorded by init does not hold (its databases: %s): leave the selection flags out to use the recorded selection, or run init for it",
			strings.Join(givenSel, " "), selects(len(givenSel)), listSome(dbs, "database"), strings.Join(m.latest.Databases, ", "))
	}
	if mergedErr != nil {
		return plan.Plan{}, nil, mergedErr
	}
	if len(tables) > 0 && (!widen || named) {
		return plan.Plan{}, nil, usageError("%s %s %s, which the migration recorded by init leaves out (its selection: %s): leave the selection flags out to use it",
			strings.Join(givenSel, " "), selects(len(givenSel)), listSome(tables, "table"), recorded.describe())
	}
	if len(tables) > 0 {
		env.Log.Info("the selection adds tables to the migration: once they join, its record holds the new selection",
			"tables", strings.Join(tables, ","), "selection", merged.describe())
		m.widened = &merged
	}
	if widen && len(leftOut(got, want)) > 0 {
		// Those it publishes, sync removes (checkPublication), and then
		// the record holds the new selection (removedTables).
		m.narrowed = &merged
	}
	return got, m, nil
}

// leftOut lists the tables of want that got leaves out, in the databases
// got has.
func leftOut(got, want plan.Plan) []string {
	var out []string
	for _, g := range got.Databases {
		have := map[selection.Table]bool{}
		for _, t := range g.Tables {
			have[t] = true
		}
		for _, w := range want.Databases {
			if w.Name != g.Name {
				continue
			}
			for _, t := range w.Tables {
				if !have[t] {
					out = append(out, t.String())
				}
			}
		}
	}
	return out
}

func selects(n int) string {
	if n == 1 {
		return "selects"
	}
	return "select"
}

// listSome names up to five items, then how many more.
func listSome(items []string, what string) string {
	const most = 5
	s := strings.Join(items[:min(len(items), most)], ", ")
	if len(items) > most {
		s += fmt.Sprintf(" and %d more", len(items)-most)
	}
	return plural(len(items), what) + " " + s
}

// included narrows p to the databases and tables that sel's include
// entries name: a database an --include-databases entry matches, a table
// an --include-tables entry matches.
func included(p plan.Plan, sel Selection) plan.Plan {
	var dbPats []selection.DatabasePattern
	for _, e := range sel.IncludeDatabases {
		if d, err := selection.ParseDatabasePattern(e); err == nil {
			dbPats = append(dbPats, d)
		}
	}
	var tablePats []selection.TablePattern
	for _, e := range sel.IncludeTables {
		if tp, err := selection.ParseTablePattern(e); err == nil {
			tablePats = append(tablePats, tp)
		}
	}
	var out plan.Plan
	for _, d := range p.Databases {
		named := slices.ContainsFunc(dbPats, func(dp selection.DatabasePattern) bool { return dp.Match(d.Name) })
		var tables []selection.Table
		for _, t := range d.Tables {
			if slices.ContainsFunc(tablePats, func(tp selection.TablePattern) bool { return tp.Match(t) }) {
				tables = append(tables, t)
			}
		}
		if named || len(tables) > 0 {
			d.Tables = tables
			out.Databases = append(out.Databases, d)
		}
	}
	return out
}

// outside lists the databases and tables got selects that want does not.
func outside(got, want plan.Plan) (dbs, tables []string) {
	wanted := map[string]map[selection.Table]bool{}
	for _, d := range want.Databases {
		wanted[d.Name] = map[selection.Table]bool{}
		for _, t := range d.Tables {
			wanted[d.Name][t] = true
		}
	}
	for _, d := range got.Databases {
		w, ok := wanted[d.Name]
		if !ok {
			dbs = append(dbs, d.Name)
			continue
		}
		for _, t := range d.Tables {
			if !w[t] {
				tables = append(tables, t.String())
			}
		}
	}
	return dbs, tables
}

// narrow leaves out of p the databases the migration does not hold: one
// created on the source after init, which the filters cover, has no slot.
func (m *migration) narrow(p plan.Plan) plan.Plan {
	var dbs []plan.Database
	for _, d := range p.Databases {
		if slices.Contains(m.latest.Databases, d.Name) {
			dbs = append(dbs, d)
		}
	}
	p.Databases = dbs
	return p
}

// applyNames fills in the slot, publication and checkpoint schema from
// the record, and refuses a --publication that differs from it. --slot and
// --checkpoint-schema chose the record, so they cannot differ.
func (m *migration) applyNames(r *Replication, given func(string) bool) error {
	if !given("checkpoint-schema") {
		r.CheckpointSchema = m.schema
	}
	names := make([]string, 0, len(m.rows))
	for db := range m.rows {
		names = append(names, db)
	}
	sort.Strings(names)
	if len(names) == 1 && !given("slot") {
		r.Slot = m.rows[names[0]].Slot
	}
	shared := ""
	for i, db := range names {
		row := m.rows[db]
		if given("publication") && row.Publication != r.Publication {
			return usageError("--publication %s differs from the publication of the migration recorded by init, %s (database %s): leave --publication out", r.Publication, row.Publication, db)
		}
		// A name not derived from the slot was given to init: every
		// database has it.
		if row.Publication == stream.PublicationName(row.Slot) || (i > 0 && row.Publication != shared) {
			shared = ""
			break
		}
		shared = row.Publication
	}
	if !given("publication") && shared != "" {
		r.Publication = shared
	}
	return nil
}

// findMigration looks for the record of the migration the connection
// strings and the flags given name (see the comment at the top of this
// file); nil when there is none.
func findMigration(ctx context.Context, src, dst *conninfo.Conn, sel Selection, r Replication, given func(string) bool) (*migration, error) {
	type candidate struct {
		name   string
		target *conninfo.Conn
	}
	var candidates []candidate
	single := src.Database() != "" && src.Database() != selection.MaintenanceDatabase
	if single {
		target := dst
		if dst.Database() == "" {
			target = dst.WithDatabase(src.Database())
		}
		candidates = append(candidates, candidate{src.Database(), target})
	} else {
		names, err := plan.ListDatabases(ctx, src)
		if err != nil {
			return nil, err
		}
		for _, n := range names {
			candidates = append(candidates, candidate{n, dst.WithDatabase(n)})
		}
	}
	exist, err := targetDatabases(ctx, dst)
	if err != nil {
		// Neither the target database nor the maintenance databases take
		// a session: the command reports why, as without a record.
		return nil, nil
	}
	var found []checkpoint.Settings
	where := map[string]string{} // slot → schema
	targets := map[string]*conninfo.Conn{}
	for _, cand := range candidates {
		if !exist[cand.target.Database()] {
			continue
		}
		rows, schema, err := loadSettings(ctx, cand.target, r, given)
		if err != nil {
			return nil, err
		}
		for _, row := range rows {
			if row.Database != cand.name || (given("slot") && row.Slot != r.Slot) {
				continue
			}
			found = append(found, row)
			where[row.Slot] = schema
			targets[row.Database] = cand.target
		}
	}
	if len(found) == 0 {
		return nil, nil
	}
	// Group the rows by init run: the databases it selected.
	groups := map[string][]checkpoint.Settings{}
	for _, row := range found {
		key := strings.Join(row.Databases, ",") + "\x00" + where[row.Slot]
		groups[key] = append(groups[key], row)
	}
	if len(groups) > 1 && (given("include-databases") || given("exclude-databases")) {
		// The databases the flags select choose among the migrations.
		if chosen, err := chosenDatabases(ctx, src, sel); err == nil {
			found = nil
			for key, rows := range groups {
				if !slices.ContainsFunc(rows, func(r checkpoint.Settings) bool { return slices.Contains(chosen, r.Database) }) {
					delete(groups, key)
					continue
				}
				found = append(found, rows...)
			}
		}
	}
	if len(groups) > 1 || (single && len(found) > 1) {
		var what []string
		for _, row := range found {
			what = append(what, fmt.Sprintf("slot %s (databases %s)", row.Slot, strings.Join(row.Databases, ",")))
		}
		sort.Strings(what)
		hint := "choose one with --include-databases"
		if single {
			hint = "choose one with --slot"
		}
		return nil, usageError("the target holds the records of %d migrations from this source: %s; %s", len(found), strings.Join(what, "; "), hint)
	}
	m := &migration{rows: map[string]checkpoint.Settings{}, targets: targets}
	for _, row := range found {
		m.rows[row.Database] = row
		m.schema = where[row.Slot]
		if row.Recorded.After(m.latest.Recorded) || m.latest.Slot == "" {
			m.latest = row
		}
	}
	return m, nil
}

// chosenDatabases are the source databases that sel's database filters
// select.
func chosenDatabases(ctx context.Context, src *conninfo.Conn, sel Selection) ([]string, error) {
	names, err := plan.ListDatabases(ctx, src)
	if err != nil {
		return nil, err
	}
	f, err := selection.New(sel.IncludeDatabases, sel.ExcludeDatabases, nil, nil)
	if err != nil {
		return nil, err
	}
	return f.Databases(src.Database(), names)
}

// targetDatabases lists the target server's databases, through the
// target URL's database or else a maintenance database.
func targetDatabases(ctx context.Context, dst *conninfo.Conn) (map[string]bool, error) {
	conn, err := dst.Connect(ctx)
	for _, db := range []string{"postgres", "template1"} {
		if err == nil {
			break
		}
		conn, err = dst.WithDatabase(db).Connect(ctx)
	}
	if err != nil {
		return nil, err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	rows, err := conn.Query(ctx, `SELECT datname FROM pg_database WHERE datallowconn`)
	if err != nil {
		return nil, fmt.Errorf("list target databases: %w", err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("list target databases: %w", err)
	}
	out := map[string]bool{}
	for _, n := range names {
		out[n] = true
	}
	return out, nil
}

// loadSettings reads the records in one target database: in
// --checkpoint-schema when given, else in every schema that holds a table
// of them. A database that does not exist holds none.
func loadSettings(ctx context.Context, target *conninfo.Conn, r Replication, given func(string) bool) ([]checkpoint.Settings, string, error) {
	conn, err := target.Connect(ctx)
	if err != nil {
		return nil, "", err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	schemas := []string{r.CheckpointSchema}
	if !given("checkpoint-schema") {
		if schemas, err = checkpoint.SettingsSchemas(ctx, conn); err != nil {
			return nil, "", fmt.Errorf("target %s: %w", target, err)
		}
	}
	var out []checkpoint.Settings
	schema := ""
	for _, s := range schemas {
		rows, err := checkpoint.Store{Schema: s}.LoadSettings(ctx, conn)
		if err != nil {
			return nil, "", fmt.Errorf("target %s: %w", target, err)
		}
		if len(rows) > 0 && schema != "" {
			return nil, "", usageError("target database %s holds migration records in schemas %s and %s: choose one with --checkpoint-schema", target.Database(), schema, s)
		}
		if len(rows) > 0 {
			out, schema = rows, s
		}
	}
	return out, schema, nil
}

// remember records db's migration on its target, once init copied it.
func (c *InitCmd) remember(ctx context.Context, p plan.Plan, db plan.Database) error {
	conn, err := db.Target.Connect(ctx)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	st := checkpoint.Settings{
		Slot: c.SlotFor(db.Name), Database: db.Name, Databases: databaseNames(p),
		IncludeDatabases: c.IncludeDatabases, ExcludeDatabases: c.ExcludeDatabases,
		IncludeTables: c.IncludeTables, ExcludeTables: c.ExcludeTables,
		Publication: c.PublicationFor(db.Name), IdentityFull: c.IdentityFull,
	}
	if err := (checkpoint.Store{Schema: c.CheckpointSchema}).SaveSettings(ctx, conn, st); err != nil {
		return fmt.Errorf("init %s: %w", db.Name, err)
	}
	return nil
}

// rememberSelection rewrites db's record with the selection of a sync that
// added tables to the migration, once the publication covers them (called
// after checkPublication). A failure is only logged: the migration goes
// on, and the next sync with the same flags tries again.
func (c *SyncCmd) rememberSelection(ctx context.Context, db string, log *slog.Logger) {
	m := c.recorded
	if m == nil || m.widened == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	row, ok := m.rows[db]
	if !ok || m.saved[db] {
		return
	}
	row.IncludeDatabases, row.ExcludeDatabases = m.widened.IncludeDatabases, m.widened.ExcludeDatabases
	row.IncludeTables, row.ExcludeTables = m.widened.IncludeTables, m.widened.ExcludeTables
	err := func() error {
		conn, err := m.targets[db].Connect(ctx)
		if err != nil {
			return err
		}
		defer conn.Close(context.WithoutCancel(ctx))
		return checkpoint.Store{Schema: m.schema}.SaveSettings(ctx, conn, row)
	}()
	if err != nil {
		log.Warn("the migration's record keeps its selection", "error", err)
		return
	}
	if m.saved == nil {
		m.saved = map[string]bool{}
	}
	m.saved[db] = true
	log.Info("the migration's record holds the new selection", "selection", m.widened.describe())
}

// nonEmpty drops blank entries: an empty --exclude-tables, given to
// clear a recorded filter, holds one.
func nonEmpty(in []string) []string {
	var out []string
	for _, e := range in {
		if strings.TrimSpace(e) != "" {
			out = append(out, e)
		}
	}
	return out
}

// removedTables makes the record hold the narrower selection of a sync
// that removed tables from the migration.
func (m *migration) removedTables() {
	if m == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.narrowed != nil {
		m.widened = m.narrowed
	}
}
