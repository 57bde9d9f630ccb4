package main

import (
	"errors"
	"fmt"

	"github.com/serenorg/postgres-seren-replicator/apply"
	"github.com/serenorg/postgres-seren-replicator/internal/conninfo"
	"github.com/serenorg/postgres-seren-replicator/internal/selection"
	"github.com/serenorg/postgres-seren-replicator/stream"
)

// Exit codes, documented in --help and the README. A service manager should
// restart the process after ExitRuntime and not after ExitUsage or
// ExitNeedsAction (the shipped systemd unit lists both in
// RestartPreventExitStatus): a restart would stop at the same place again.
const (
	ExitOK      = 0
	ExitFailed  = 1
	ExitUsage   = 2
	ExitRuntime = 3
	// ExitNeedsAction means sync stopped on a state that only a person can
	// change: a diverged target, a schema change on the source, a lost slot,
	// a stream it cannot decode.
	ExitNeedsAction = 4
	// ExitInterrupted means the user pressed Ctrl-C at a prompt (the
	// --interactive screens, the [y/N] of init, cleanup and cutover)
	// before anything was changed: 128 + SIGINT, what a shell reports for
	// a command ended by Ctrl-C.
	ExitInterrupted = 130
)

// ErrCheckFailed reports that a command ran to the end and found a problem
// (a failed validation check, a data mismatch, an unhealthy status).
var ErrCheckFailed = errors.New("check failed")

// ErrCancelled reports that the user answered no at a confirmation prompt:
// nothing was changed. It exits with ExitFailed and is printed as a plain
// notice, not as an error.
var ErrCancelled = errors.New("cancelled; nothing was changed")

// ErrUsage marks an error in the command line or its values.
var ErrUsage = errors.New("usage")

// ErrInterrupted reports that the user pressed Ctrl-C at a prompt, before
// anything was changed. It exits with ExitInterrupted and is printed as a
// plain notice, not as an error.
var ErrInterrupted = errors.New("interrupted; nothing was changed")

// ExitCode maps an error to the process exit code.
func ExitCode(err error) int {
	switch {
	case err == nil:
		return ExitOK
	case errors.Is(err, ErrInterrupted):
		return ExitInterrupted
	case errors.Is(err, ErrCheckFailed), errors.Is(err, ErrCancelled):
		return ExitFailed
	case errors.Is(err, ErrUsage), errors.Is(err, conninfo.ErrConfig), errors.Is(err, selection.ErrInvalid):
		return ExitUsage
	case needsAction(err):
		return ExitNeedsAction
	default:
		return ExitRuntime
	}
}

// needsAction reports whether err is one that a retry or a restart cannot
// fix. Transient failures (a lost connection, a server restarting) are
// retried inside sync and are not among them.
func needsAction(err error) bool {
	return errors.Is(err, apply.ErrPermanent) || errors.Is(err, errSetup) || errors.Is(err, stream.ErrProtocol)
}

// usageError makes a one-line usage error (exit code 2).
func usageError(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrUsage, fmt.Sprintf(format, args...))
}

// redactError renders an error for the user: one line, no password, without
// the classification prefixes that only pick the exit code.
func redactError(err error) string {
	msg := conninfo.Redact(err.Error())
	for _, prefix := range []string{ErrUsage.Error() + ": ", conninfo.ErrConfig.Error() + ": ", selection.ErrInvalid.Error() + ": ", ErrCheckFailed.Error() + ": "} {
		if len(msg) > len(prefix) && msg[:len(prefix)] == prefix {
			msg = msg[len(prefix):]
		}
	}
	return msg
}

// classified is an error of a class (errors.Is finds class) whose message
// leaves the class out, so it reads the same wherever a caller wraps it.
type classified struct {
	msg   string
	class error
}

func (e *classified) Error() string        { return e.msg }
func (e *classified) Is(target error) bool { return target == e.class }
