package main

import (
	"github.com/alecthomas/kong"

	"github.com/serenorg/postgres-seren-replicator/internal/clidoc"
)

// docsCommand is the command that regenerates docs/cli.md, named in the
// file and in the test that finds it stale.
const docsCommand = "make docs"

// DocsCmd prints the Markdown command-line reference, generated from the
// kong model (hidden: for `make docs`, which writes it to docs/cli.md).
type DocsCmd struct{}

// Run writes the reference of the parser's model on stdout.
func (c *DocsCmd) Run(env *Env, k *kong.Kong) error {
	return clidoc.Markdown(env.Stdout, k.Model, docsCommand)
}
