// Command postgres-seren-replicator moves a live PostgreSQL database to
// another server with zero downtime: a consistent snapshot, then the
// source's logical-decoding stream applied with ordinary SQL.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/pprof"
	"runtime/trace"
	"strings"
	"syscall"

	"github.com/alecthomas/kong"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

// CLI is the command line: global flags and one struct per command.
type CLI struct {
	Logging

	Validate   ValidateCmd   `cmd:"" help:"Check that source and target are ready for replication."`
	Init       InitCmd       `cmd:"" help:"Copy schema and data from a consistent snapshot and prepare streaming."`
	Sync       SyncCmd       `cmd:"" help:"Stream changes from the source and apply them to the target."`
	Status     StatusCmd     `cmd:"" help:"Show replication state and lag per database."`
	Verify     VerifyCmd     `cmd:"" help:"Compare source and target data with checksums."`
	Cutover    CutoverCmd    `cmd:"" help:"Stop writes on the source, apply everything up to then, copy sequences, check, and hand over to the target."`
	Cleanup    CleanupCmd    `cmd:"" help:"Drop the slots, publication and checkpoint schema the tool created."`
	Version    VersionCmd    `cmd:"" help:"Print the version, commit, build date and Go version."`
	Completion CompletionCmd `cmd:"" help:"Print the shell completion script for bash, zsh or fish."`
	Docs       DocsCmd       `cmd:"" hidden:"" help:"Print the Markdown command-line reference (docs/cli.md)."`

	VersionFlag kong.VersionFlag `name:"version" help:"Print the version, commit, build date and Go version, and exit."`
	Config      kong.ConfigFlag  `name:"config" env:"SEREN_CONFIG" placeholder:"FILE" predictor:"file" help:"Read flag values from FILE, a YAML (or JSON) file whose keys are the long flag names (source: URL, include-tables: [a.x, a.y]). A flag on the command line, then its environment variable, wins over the file. Keys of other commands' flags are ignored, so one file serves every command."`
}

const description = `Zero-downtime PostgreSQL migration by logical replication, without subscriptions on the target.

Exit codes:
  0  success
  1  a check or verification failed (validate, verify, status, cutover), or
     a confirmation prompt was answered no (nothing was changed)
  2  usage or configuration error (bad flag, connection string, filter, login)
  3  runtime failure (lost connection, failed copy or apply): running again may succeed
  4  sync stopped on a state only a person can change (diverged target, schema
     change on the source, lost slot or publication, undecodable stream): the
     error says what to do; restarting without doing it stops again
  130  Ctrl-C at a prompt (the --interactive screens, a [y/N] question):
       nothing was changed

Every flag can also be set by the environment variable shown beside it, or
by its long name as a key of the --config file.
Connection strings are libpq URLs or keyword/value strings; PG* variables
and ~/.pgpass (or PGPASSFILE) fill in what they leave out.`

func main() {
	// SEREN_CPUPROFILE and SEREN_TRACE name files for a CPU profile and an
	// execution trace of the run (for performance work; see the README's
	// benchmark section).
	os.Exit(profiled(func() int { return run(context.Background(), os.Args[1:], os.Stdout, os.Stderr) }))
}

// profiled runs fn under the profilers the environment asks for.
func profiled(fn func() int) int {
	if path := os.Getenv("SEREN_CPUPROFILE"); path != "" {
		if f, err := os.Create(path); err == nil && pprof.StartCPUProfile(f) == nil {
			defer f.Close()
			defer pprof.StopCPUProfile()
		}
	}
	if path := os.Getenv("SEREN_TRACE"); path != "" {
		if f, err := os.Create(path); err == nil && trace.Start(f) == nil {
			defer f.Close()
			defer trace.Stop()
		}
	}
	return fn()
}

// programName is the binary's name, in help, completion scripts and
// printed commands.
const programName = "postgres-seren-replicator"

// newParser builds the command line's parser over cli; exit receives the
// exit code of --help and --version instead of the process exiting.
func newParser(cli *CLI, stdout, stderr io.Writer, exit func(int)) (*kong.Kong, error) {
	return kong.New(cli,
		kong.Name(programName),
		kong.Description(description),
		kong.Vars{"version": strings.TrimSuffix(buildInfo().String(), "\n")},
		kong.Writers(stdout, stderr),
		kong.Exit(exit),
		kong.ConfigureHelp(kong.HelpOptions{Compact: true}),
		kong.Configuration(loadConfig),
	)
}

// run parses args, runs the command and returns the process exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var cli CLI
	exitCode := -1
	parser, err := newParser(&cli, stdout, stderr, func(code int) { exitCode = code })
	if err != nil {
		fmt.Fprintf(stderr, "error: %v\n", err)
		return ExitRuntime
	}
	if code, done := completeRequest(parser, stderr); done {
		return code
	}
	kctx, err := parser.Parse(args)
	if exitCode >= 0 { // --help or --version
		return exitCode
	}
	if err != nil {
		fmt.Fprintf(stderr, "error: %s (see --help)\n", redactError(err))
		return ExitUsage
	}
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	level := new(slog.LevelVar)
	env := &Env{Stdout: stdout, Stderr: stderr, Log: cli.Logging.Logger(stderr, level), Level: level, Args: args, Given: givenFlags(kctx)}
	kctx.BindTo(ctx, (*context.Context)(nil))
	warnPasswordsInArgs(kctx, env.Log)
	if err := kctx.Run(env); err != nil {
		code := ExitCode(err)
		if errors.Is(err, ErrCancelled) {
			fmt.Fprintln(stderr, ErrCancelled)
			return code
		}
		if errors.Is(err, ErrInterrupted) {
			fmt.Fprintln(stderr, ErrInterrupted)
			return code
		}
		fmt.Fprintf(stderr, "error: %s\n", redactError(err))
		return code
	}
	return ExitOK
}
