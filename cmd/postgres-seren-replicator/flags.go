package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strings"

	"github.com/alecthomas/kong"
	"golang.org/x/term"

	"github.com/serenorg/postgres-seren-replicator/internal/conninfo"
	"github.com/serenorg/postgres-seren-replicator/internal/interactive"
	"github.com/serenorg/postgres-seren-replicator/internal/plan"
	"github.com/serenorg/postgres-seren-replicator/internal/selection"
)

// Env carries what every command needs: output streams and the logger.
type Env struct {
	Stdout io.Writer
	Stderr io.Writer
	Log    *slog.Logger
	// Level is the logger's level, changeable while running (SIGHUP).
	Level *slog.LevelVar
	// Args are the command-line arguments, for printing the command that
	// repeats an interactive choice.
	Args []string
	// Given are the long names of the flags set on the command line, by
	// an environment variable or by the --config file (not by default).
	Given map[string]bool
}

// Logging holds the global logging flags.
type Logging struct {
	LogFormat string `name:"log-format" enum:"auto,text,json" default:"auto" env:"SEREN_LOG_FORMAT" help:"Log format: auto (text; without timestamps under journald), text or json."`
	LogLevel  string `name:"log-level" enum:"debug,info,warn,error" default:"info" env:"SEREN_LOG_LEVEL" help:"Minimum log level."`
}

// Logger builds the process logger. Every record passes through the
// redacting handler so no password reaches the log.
func (l Logging) Logger(w io.Writer, level *slog.LevelVar) *slog.Logger {
	_ = level.UnmarshalText([]byte(l.LogLevel))
	opts := &slog.HandlerOptions{Level: level, ReplaceAttr: redactAttr}
	underJournal := os.Getenv("JOURNAL_STREAM") != ""
	if underJournal && l.LogFormat == "auto" {
		opts.ReplaceAttr = func(groups []string, a slog.Attr) slog.Attr {
			if len(groups) == 0 && a.Key == slog.TimeKey {
				return slog.Attr{} // journald stamps each line itself
			}
			return redactAttr(groups, a)
		}
	}
	if l.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

func redactAttr(_ []string, a slog.Attr) slog.Attr {
	switch a.Value.Kind() {
	case slog.KindString:
		a.Value = slog.StringValue(conninfo.Redact(a.Value.String()))
	case slog.KindAny:
		if err, ok := a.Value.Any().(error); ok {
			a.Value = slog.StringValue(conninfo.Redact(err.Error()))
		}
	}
	return a
}

// Endpoints are the source and target connection strings and where their
// passwords come from.
type Endpoints struct {
	Source             string `required:"" env:"SEREN_SOURCE" placeholder:"URL" help:"Source connection string (postgres:// URL or keyword/value). Keep the password out of it: a password on the command line is visible to every local user."`
	Target             string `required:"" env:"SEREN_TARGET" placeholder:"URL" help:"Target connection string (postgres:// URL or keyword/value). Keep the password out of it, as for --source."`
	SourcePasswordFile string `name:"source-password-file" type:"path" predictor:"file" env:"SEREN_SOURCE_PASSWORD_FILE" placeholder:"FILE" help:"Read the source password from the first line of FILE (instead of ~/.pgpass, PGPASSFILE or PGPASSWORD)."`
	TargetPasswordFile string `name:"target-password-file" type:"path" predictor:"file" env:"SEREN_TARGET_PASSWORD_FILE" placeholder:"FILE" help:"Read the target password from the first line of FILE (instead of ~/.pgpass, PGPASSFILE or PGPASSWORD)."`
}

// Parse parses both connection strings and reads the password files. The
// connections are named "source" and "target" in their errors.
func (e Endpoints) Parse() (src, dst *conninfo.Conn, err error) {
	if src, err = parseEndpoint("source", e.Source, e.SourcePasswordFile); err != nil {
		return nil, nil, err
	}
	if dst, err = parseEndpoint("target", e.Target, e.TargetPasswordFile); err != nil {
		return nil, nil, err
	}
	return src, dst, nil
}

// parseEndpoint parses one side's connection string. A password file
// overrides PGPASSWORD and ~/.pgpass, as a password in the connection string
// would; a password given both in the string and in a file is refused, since
// either choice of winner would silently ignore something the user wrote.
func parseEndpoint(side, dsn, passwordFile string) (*conninfo.Conn, error) {
	c, err := conninfo.Parse(dsn)
	if err != nil {
		return nil, usageError("--%s: %s", side, conninfo.Redact(err.Error()))
	}
	if passwordFile != "" {
		if conninfo.HasPassword(dsn) {
			return nil, usageError("--%s holds a password and --%s-password-file gives one too: remove the password from --%s", side, side, side)
		}
		pw, err := conninfo.ReadPasswordFile(passwordFile)
		if err != nil {
			return nil, usageError("--%s-password-file: %s", side, err)
		}
		c = c.WithPassword(pw)
	}
	return c.Named(side), nil
}

// warnPasswordsInArgs logs a warning for each of --source and --target given
// on the command line with a password in it: the process list shows every
// argument to every local user for as long as the command runs. The
// environment twins are not shown there, so they draw no warning.
func warnPasswordsInArgs(kctx *kong.Context, log *slog.Logger) {
	warned := map[string]bool{}
	for _, p := range kctx.Path {
		if p.Flag == nil || p.Resolved || (p.Flag.Name != "source" && p.Flag.Name != "target") || warned[p.Flag.Name] {
			continue
		}
		dsn, ok := kctx.FlagValue(p.Flag).(string)
		if !ok || !conninfo.HasPassword(dsn) {
			continue
		}
		name := p.Flag.Name
		warned[name] = true
		log.Warn("the password in --"+name+" is visible to every local user in the process list (ps) while this runs",
			"instead", fmt.Sprintf("--%s-password-file, ~/.pgpass or PGPASSFILE, PGPASSWORD, or the SEREN_%s environment variable", name, strings.ToUpper(name)))
	}
}

// Selection holds the database and table filters.
type Selection struct {
	IncludeDatabases []string `name:"include-databases" sep:"," env:"SEREN_INCLUDE_DATABASES" placeholder:"DB" help:"Replicate only these databases (names or patterns: * matches any characters, a part in double quotes is exact; postgres only by its exact name)."`
	ExcludeDatabases []string `name:"exclude-databases" sep:"," env:"SEREN_EXCLUDE_DATABASES" placeholder:"DB" help:"Replicate every database but these (applied after --include-databases)."`
	IncludeTables    []string `name:"include-tables" sep:"," env:"SEREN_INCLUDE_TABLES" placeholder:"DB.[SCHEMA.]TABLE" help:"Replicate only these tables of the databases they name (schema defaults to public; each part a name or a pattern, as app.log_*, app.staging.*, *.audit_*)."`
	ExcludeTables    []string `name:"exclude-tables" sep:"," env:"SEREN_EXCLUDE_TABLES" placeholder:"DB.[SCHEMA.]TABLE" help:"Replicate every table but these (patterns as for --include-tables; applied after it)."`
}

// Filter builds the selection filter from the flags.
func (s Selection) Filter() (selection.Filter, error) {
	return selection.New(s.IncludeDatabases, s.ExcludeDatabases, s.IncludeTables, s.ExcludeTables)
}

// Common are the flags every replication command shares.
type Common struct {
	Endpoints
	Selection
}

// Resolve parses the flags and connects to the source to list the selected
// databases and tables.
func (c Common) Resolve(ctx context.Context) (plan.Plan, error) {
	src, dst, err := c.Endpoints.Parse()
	if err != nil {
		return plan.Plan{}, err
	}
	f, err := c.Selection.Filter()
	if err != nil {
		return plan.Plan{}, err
	}
	return plan.Resolve(ctx, src, dst, f)
}

// isTerminal reports whether w is an interactive terminal.
func isTerminal(w any) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// ResolveInteractive is Resolve, then, when enabled (the --interactive
// flag), lets the user narrow the plan on the terminal. The lists go to
// stderr so stdout stays clean for --json. On confirmation c.Selection is
// replaced by the flags that repeat the choice without --interactive, the
// plan is resolved again from them (so what runs is what the printed
// command would run), and that command is printed. Without a terminal on
// stdin and stderr, --interactive is a usage error, before any connection.
func (c *Common) ResolveInteractive(ctx context.Context, env *Env, enabled bool) (plan.Plan, error) {
	if !enabled {
		return c.Resolve(ctx)
	}
	if !isTerminal(os.Stdin) || !isTerminal(env.Stderr) {
		return plan.Plan{}, usageError("--interactive needs a terminal (standard input and standard error); without one, choose with --include-databases/--exclude-databases and --include-tables/--exclude-tables")
	}
	p, err := c.Resolve(ctx)
	if err != nil {
		return plan.Plan{}, interrupted(ctx, err)
	}
	dbs, err := interactive.Load(ctx, p)
	if err != nil {
		return plan.Plan{}, interrupted(ctx, err)
	}
	choice, err := interactive.Run(ctx, dbs, interactive.Options{Multi: p.Multi, In: os.Stdin, Out: env.Stderr})
	switch {
	case errors.Is(err, interactive.ErrCanceled):
		return plan.Plan{}, ErrInterrupted
	case errors.Is(err, interactive.ErrDeclined):
		return plan.Plan{}, ErrCancelled
	case err != nil:
		return plan.Plan{}, err
	}
	given := interactive.Flags{IncludeDatabases: c.IncludeDatabases, ExcludeDatabases: c.ExcludeDatabases,
		IncludeTables: c.IncludeTables, ExcludeTables: c.ExcludeTables}
	multi := p.Multi
	if p, err = c.resolveWith(ctx, interactive.Repeat(choice, multi, given)); err != nil || sameAsChoice(p, choice, dbs) != nil {
		// A pattern kept from the flags matched only tables of databases
		// left out: name every table instead.
		dbsOnly := interactive.Flags{IncludeDatabases: given.IncludeDatabases, ExcludeDatabases: given.ExcludeDatabases}
		all, err := c.resolveWith(ctx, interactive.Repeat(interactive.Choice{Databases: choice.Databases}, multi, dbsOnly))
		if err != nil {
			return plan.Plan{}, interrupted(ctx, err)
		}
		if p, err = c.resolveWith(ctx, interactive.Explicit(choice, dbs, all, multi, given)); err != nil {
			return plan.Plan{}, interrupted(ctx, fmt.Errorf("the flags that repeat the choice fail: %w", err))
		}
		if err := sameAsChoice(p, choice, dbs); err != nil {
			return plan.Plan{}, err
		}
	}
	fmt.Fprintf(env.Stderr, "\nTo make this choice without --interactive:\n\n  %s\n\n", equivalentCommand(env.Args, c.Selection))
	return p, nil
}

// interrupted is err, or ErrInterrupted when ctx ended (Ctrl-C while the
// lists were being read).
func interrupted(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ErrInterrupted
	}
	return err
}

// resolveWith sets the selection flags to f and resolves the plan they
// select.
func (c *Common) resolveWith(ctx context.Context, f interactive.Flags) (plan.Plan, error) {
	c.Selection = Selection{IncludeDatabases: f.IncludeDatabases, ExcludeDatabases: f.ExcludeDatabases,
		IncludeTables: f.IncludeTables, ExcludeTables: f.ExcludeTables}
	return c.Resolve(ctx)
}

// sameAsChoice checks that p, resolved from the flags that are to repeat
// the choice, selects exactly the chosen databases and tables.
func sameAsChoice(p plan.Plan, c interactive.Choice, dbs []interactive.Database) error {
	var got, want []string
	for _, d := range p.Databases {
		for _, t := range d.Tables {
			got = append(got, t.String())
		}
		got = append(got, d.Name)
	}
	for _, d := range dbs {
		if !slices.Contains(c.Databases, d.Name) {
			continue
		}
		for _, t := range d.Tables {
			if !slices.Contains(c.Excluded[d.Name], t.Table) {
				want = append(want, t.String())
			}
		}
		want = append(want, d.Name)
	}
	if !slices.Equal(got, want) {
		return fmt.Errorf("the flags that repeat the choice select %v, not the choice %v", got, want)
	}
	return nil
}

// selectionFlags are the flags equivalentCommand replaces.
var selectionFlags = []string{"--include-databases", "--exclude-databases", "--include-tables", "--exclude-tables"}

// equivalentCommand is the command line that repeats this run without
// --interactive: the arguments given, less --interactive and the selection
// flags, then sel's flags; passwords masked, quoted for a POSIX shell.
func equivalentCommand(args []string, sel Selection) string {
	out := []string{"postgres-seren-replicator"}
	for i := 0; i < len(args); i++ {
		a := args[i]
		name, _, hasValue := strings.Cut(a, "=")
		switch {
		case name == "--interactive":
			continue
		case slices.Contains(selectionFlags, name):
			if !hasValue {
				i++ // the value is the next argument
			}
			continue
		}
		out = append(out, initShellQuote(conninfo.Redact(a)))
	}
	for _, f := range []struct {
		flag string
		vals []string
	}{{"--include-databases", sel.IncludeDatabases}, {"--exclude-databases", sel.ExcludeDatabases},
		{"--include-tables", sel.IncludeTables}, {"--exclude-tables", sel.ExcludeTables}} {
		if len(f.vals) > 0 {
			out = append(out, f.flag, initShellQuote(conninfo.Redact(strings.Join(f.vals, ","))))
		}
	}
	return strings.Join(out, " ")
}
