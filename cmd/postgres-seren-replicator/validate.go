package main

import "context"

// ValidateCmd checks both servers before replication starts.
type ValidateCmd struct {
	Common
	Interactive bool `env:"SEREN_INTERACTIVE" help:"Choose databases and tables interactively."`
	JSON        bool `name:"json" env:"SEREN_JSON" help:"Print the checks as JSON."`
}

// Run runs the checks and prints one table.
func (c *ValidateCmd) Run(ctx context.Context, env *Env) error {
	return errNotBuilt("validate")
}
