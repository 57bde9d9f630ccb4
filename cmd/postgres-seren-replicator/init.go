package main

import "context"

// InitCmd copies the selected databases from a consistent snapshot and
// prepares streaming from exactly that point.
type InitCmd struct {
	Common
	Interactive  bool `env:"SEREN_INTERACTIVE" help:"Choose databases and tables interactively."`
	Yes          bool `short:"y" env:"SEREN_YES" help:"Do not ask for confirmation."`
	DropExisting bool `name:"drop-existing" env:"SEREN_DROP_EXISTING" help:"Drop and recreate target databases that already exist."`
}

// Run performs the initial copy.
func (c *InitCmd) Run(ctx context.Context, env *Env) error {
	return errNotBuilt("init")
}
