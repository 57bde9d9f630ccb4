package main

import "context"

// CleanupCmd drops what the tool created on both sides.
type CleanupCmd struct {
	Common
	Yes bool `short:"y" env:"SEREN_YES" help:"Do not ask for confirmation."`
}

// Run drops the slots, publication and checkpoint schema.
func (c *CleanupCmd) Run(ctx context.Context, env *Env) error {
	return errNotBuilt("cleanup")
}
