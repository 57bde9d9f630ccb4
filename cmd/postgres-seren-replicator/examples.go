package main

import "github.com/serenorg/postgres-seren-replicator/internal/clidoc"

// The examples of each command, shown by its --help (Help, which kong
// reads when it builds the model) and in docs/cli.md. A test parses every
// one with the real command line, so each names only flags that exist.

// conn are the connection flags of the examples; the passwords come from
// ~/.pgpass, as the README recommends.
const conn = "--source postgres://migrator@old-db.example.com/shop --target postgres://app@new-db.example.net/shop"

// Examples of validate.
func (*ValidateCmd) Examples() []clidoc.Example {
	return []clidoc.Example{
		{Comment: "Check both servers before init; each failure names its fix", Args: "validate " + conn},
		{Comment: "Check two tables only, as JSON for a script", Args: "validate " + conn + " --include-tables shop.orders,shop.customers --json"},
		{Comment: "Check as init --replica-identity-full would run: tables without a key warn", Args: "validate " + conn + " --replica-identity-full"},
		{Comment: "Fail unless the source role may capture DDL statements with an event trigger", Args: "validate " + conn + " --ddl-capture"},
	}
}

// Help is the detailed help of validate: its examples.
func (c *ValidateCmd) Help() string { return clidoc.Help(programName, c.Examples()) }

// Examples of init.
func (*InitCmd) Examples() []clidoc.Example {
	return []clidoc.Example{
		{Comment: "Estimate, ask for confirmation, copy every database", Args: "init " + conn},
		{Comment: "No prompt (scripts, CI), 4 parallel copy sessions, roles not copied", Args: "init " + conn + " --yes --jobs 4 --no-roles"},
		{Comment: "Start over, dropping the target databases an earlier init made", Args: "init " + conn + " --yes --drop-existing"},
		{Comment: "Leave out one table, with copy progress on /metrics while it runs", Args: "init " + conn + " --exclude-tables shop.audit_log --metrics-addr 127.0.0.1:9189"},
	}
}

// Help is the detailed help of init: its examples.
func (c *InitCmd) Help() string { return clidoc.Help(programName, c.Examples()) }

// Examples of sync.
func (*SyncCmd) Examples() []clidoc.Example {
	return []clidoc.Example{
		{Comment: "Stream until stopped (SIGTERM), serving /metrics, /healthz and /readyz", Args: "sync " + conn + " --metrics-addr 127.0.0.1:9188"},
		{Comment: "Apply what the source committed up to now, then exit", Args: "sync " + conn + " --catch-up"},
		{Comment: "Stop on a schema change instead of applying it; a progress line every minute", Args: "sync " + conn + " --schema-changes stop --log-interval 1m"},
		{Comment: "Capture the source's DDL statements from now on and run them on the target in commit order", Args: "sync " + conn + " --ddl-capture"},
	}
}

// Help is the detailed help of sync: its examples.
func (c *SyncCmd) Help() string { return clidoc.Help(programName, c.Examples()) }

// Examples of status.
func (*StatusCmd) Examples() []clidoc.Example {
	return []clidoc.Example{
		{Comment: "Slot, checkpoint, lag and verdict per database; exit 0 only when healthy", Args: "status " + conn},
		{Comment: "Refresh in place every 5 seconds", Args: "status " + conn + " --watch --interval 5s"},
		{Comment: "JSON for monitoring, lagging past 10 seconds", Args: "status " + conn + " --json --max-lag-seconds 10"},
	}
}

// Help is the detailed help of status: its examples.
func (c *StatusCmd) Help() string { return clidoc.Help(programName, c.Examples()) }

// Examples of verify.
func (*VerifyCmd) Examples() []clidoc.Example {
	return []clidoc.Example{
		{Comment: "Compare every selected table (consistent while sync runs)", Args: "verify " + conn},
		{Comment: "One table, 8 key ranges at once", Args: "verify " + conn + " --include-tables shop.orders --jobs 8"},
		{Comment: "JSON for a script; exit 1 when a table differs", Args: "verify " + conn + " --json"},
	}
}

// Help is the detailed help of verify: its examples.
func (c *VerifyCmd) Help() string { return clidoc.Help(programName, c.Examples()) }

// Examples of cutover.
func (*CutoverCmd) Examples() []clidoc.Example {
	return []clidoc.Example{
		{Comment: "Verify, make the source read-only, drain, copy sequences, check the rows written since, hand over", Args: "cutover " + conn},
		{Comment: "The application is already stopped; no prompt, JSON result", Args: "cutover " + conn + " --fence none --yes --json"},
		{Comment: "Give sessions 30 seconds after the fence, and the drain 10 minutes", Args: "cutover " + conn + " --grace 30s --max-wait 10m"},
	}
}

// Help is the detailed help of cutover: its examples.
func (c *CutoverCmd) Help() string { return clidoc.Help(programName, c.Examples()) }

// Examples of cleanup.
func (*CleanupCmd) Examples() []clidoc.Example {
	return []clidoc.Example{
		{Comment: "Drop the slot, publication and checkpoint schema, after confirmation", Args: "cleanup " + conn},
		{Comment: "No prompt, and also drop a slot a running sync still uses", Args: "cleanup " + conn + " --yes --force"},
	}
}

// Help is the detailed help of cleanup: its examples.
func (c *CleanupCmd) Help() string { return clidoc.Help(programName, c.Examples()) }

// Examples of version.
func (*VersionCmd) Examples() []clidoc.Example {
	return []clidoc.Example{
		{Comment: "Version, commit, build date and Go version", Args: "version"},
		{Comment: "The same as JSON", Args: "version --json"},
	}
}

// Help is the detailed help of version: its examples.
func (c *VersionCmd) Help() string { return clidoc.Help(programName, c.Examples()) }

// Examples of completion.
func (*CompletionCmd) Examples() []clidoc.Example {
	return []clidoc.Example{
		{Comment: "bash: save the output as /etc/bash_completion.d/" + programName + ", or eval it in ~/.bashrc", Args: "completion bash"},
		{Comment: "zsh: add `source <(" + programName + " completion zsh)` to ~/.zshrc", Args: "completion zsh"},
		{Comment: "fish: save the output as ~/.config/fish/completions/" + programName + ".fish", Args: "completion fish"},
	}
}

// Help is the detailed help of completion: its examples.
func (c *CompletionCmd) Help() string { return clidoc.Help(programName, c.Examples()) }
