package main

import "context"

// SyncCmd streams changes from the source and applies them to the target.
type SyncCmd struct {
	Common
	Interactive bool `env:"SEREN_INTERACTIVE" help:"Choose databases and tables interactively."`
	CatchUp     bool `name:"catch-up" env:"SEREN_CATCH_UP" help:"Apply everything up to the source's current WAL position, then exit."`
}

// Run streams until stopped (or until caught up with --catch-up).
func (c *SyncCmd) Run(ctx context.Context, env *Env) error {
	return errNotBuilt("sync")
}
