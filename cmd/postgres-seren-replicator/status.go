package main

import "context"

// StatusCmd shows replication state and lag per database.
type StatusCmd struct {
	Common
	JSON bool `name:"json" env:"SEREN_JSON" help:"Print JSON."`
}

// Run prints the status.
func (c *StatusCmd) Run(ctx context.Context, env *Env) error {
	return errNotBuilt("status")
}
