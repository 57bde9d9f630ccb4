// Package clidoc documents a kong command line from its model: the
// "Examples:" block of each command's --help and the Markdown reference in
// docs/cli.md. Both come from the same structs the parser is built from, so
// neither can drift from the flags the binary accepts.
package clidoc

import (
	"strings"

	"github.com/alecthomas/kong"
)

// Example is one invocation shown in a command's help and in the reference.
type Example struct {
	// Comment says what the invocation does, in one line.
	Comment string
	// Args are the arguments after the program's name, separated by single
	// spaces, each free of shell quoting and expansion, so that the line
	// pastes into a shell as it is and splits back into the same arguments
	// with strings.Fields.
	Args string
}

// Provider is a command struct that has examples.
type Provider interface {
	Examples() []Example
}

// Help is the detailed help of a command with these examples: an
// "Examples:" heading and an indented block, which kong's help printer
// keeps as it is (indented text is preformatted there, as in Go doc
// comments).
func Help(program string, examples []Example) string {
	var b strings.Builder
	b.WriteString("Examples:\n\n")
	for _, ex := range examples {
		b.WriteString("  # " + ex.Comment + "\n")
		b.WriteString("  " + program + " " + ex.Args + "\n")
	}
	return b.String()
}

// ExamplesOf are the examples of a command node: those of its struct when
// it implements Provider, else none.
func ExamplesOf(n *kong.Node) []Example {
	if !n.Target.IsValid() || !n.Target.CanAddr() {
		return nil
	}
	if p, ok := n.Target.Addr().Interface().(Provider); ok {
		return p.Examples()
	}
	return nil
}

// Commands are the visible command nodes under n, depth first, in the
// order they are declared.
func Commands(n *kong.Node) []*kong.Node {
	var out []*kong.Node
	for _, c := range n.Children {
		if c.Hidden || c.Type != kong.CommandNode {
			continue
		}
		out = append(out, c)
		out = append(out, Commands(c)...)
	}
	return out
}

// visibleFlags are n's own flags less the hidden ones and --help.
func visibleFlags(n *kong.Node) []*kong.Flag {
	var out []*kong.Flag
	for _, f := range n.Flags {
		if f.Hidden || f.Name == "help" {
			continue
		}
		out = append(out, f)
	}
	return out
}
