package main

import "context"

// VerifyCmd compares source and target data.
type VerifyCmd struct {
	Common
	JSON bool `name:"json" env:"SEREN_JSON" help:"Print JSON."`
}

// Run compares the selected tables.
func (c *VerifyCmd) Run(ctx context.Context, env *Env) error {
	return errNotBuilt("verify")
}
