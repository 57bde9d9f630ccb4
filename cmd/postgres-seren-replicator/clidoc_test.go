package main

import (
	"bufio"
	"bytes"
	"io"
	"os"
	"strings"
	"testing"

	"github.com/serenorg/postgres-seren-replicator/internal/clidoc"
)

// referencePath is docs/cli.md, from this package's directory.
const referencePath = "../../docs/cli.md"

// TestCLIReferenceIsCurrent generates the reference from the kong model in
// memory and fails when docs/cli.md differs from it.
func TestCLIReferenceIsCurrent(t *testing.T) {
	parser, err := newParser(&CLI{}, io.Discard, io.Discard, func(int) {})
	if err != nil {
		t.Fatal(err)
	}
	var want bytes.Buffer
	if err := clidoc.Markdown(&want, parser.Model, docsCommand); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(referencePath)
	if err != nil {
		t.Fatalf("read the reference: %v (run `%s`)", err, docsCommand)
	}
	if bytes.Equal(got, want.Bytes()) {
		return
	}
	gotLines, wantLines := strings.Split(string(got), "\n"), strings.Split(want.String(), "\n")
	for i := 0; i < max(len(gotLines), len(wantLines)); i++ {
		var g, w string
		if i < len(gotLines) {
			g = gotLines[i]
		}
		if i < len(wantLines) {
			w = wantLines[i]
		}
		if g != w {
			t.Fatalf("docs/cli.md is stale: run `%s` and commit it; first difference at line %d:\n got: %s\nwant: %s", docsCommand, i+1, g, w)
		}
	}
}

// TestEveryCommandHasExamples checks that each visible command's --help
// shows examples.
func TestEveryCommandHasExamples(t *testing.T) {
	parser, err := newParser(&CLI{}, io.Discard, io.Discard, func(int) {})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range clidoc.Commands(parser.Model.Node) {
		if len(clidoc.ExamplesOf(c)) == 0 {
			t.Errorf("%s has no examples: give its struct Examples and Help methods (examples.go)", c.Path())
		}
		if !strings.Contains(c.Detail, "Examples:") {
			t.Errorf("%s --help shows no examples", c.Path())
		}
	}
}

// TestReferenceExamplesParse parses every example in docs/cli.md with the
// real command line: each must name only flags and values that exist, and
// select the command it is listed under.
func TestReferenceExamplesParse(t *testing.T) {
	for _, kv := range os.Environ() { // the examples must parse without help from the environment
		if k, _, _ := strings.Cut(kv, "="); strings.HasPrefix(k, "SEREN_") {
			t.Setenv(k, "")
			os.Unsetenv(k)
		}
	}
	examples := referenceExamples(t)
	if len(examples) < 20 {
		t.Fatalf("found %d examples in docs/cli.md, want at least 20: is the reference's format changed?", len(examples))
	}
	for _, ex := range examples {
		t.Run(ex.command, func(t *testing.T) {
			t.Log(ex.line)
			args := strings.Fields(ex.line)
			if args[0] != programName {
				t.Fatalf("example does not start with %s", programName)
			}
			for _, a := range args {
				if initShellQuote(a) != a {
					t.Errorf("argument %q needs shell quoting: the example would not paste as it is", a)
				}
			}
			exited := -1
			parser, err := newParser(&CLI{}, io.Discard, io.Discard, func(code int) { exited = code })
			if err != nil {
				t.Fatal(err)
			}
			kctx, err := parser.Parse(args[1:])
			if err != nil || exited >= 0 {
				t.Fatalf("parse %s: %v (exit %d)", ex.line, err, exited)
			}
			if got := strings.Fields(kctx.Command())[0]; got != ex.command {
				t.Errorf("example runs %s, listed under %s", got, ex.command)
			}
		})
	}
}

// referenceExample is one command line in a ```sh block of docs/cli.md,
// with the command whose section holds it.
type referenceExample struct {
	command, line string
}

// referenceExamples reads the examples of docs/cli.md.
func referenceExamples(t *testing.T) []referenceExample {
	t.Helper()
	f, err := os.Open(referencePath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []referenceExample
	section, inExamples := "", false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "## "):
			section = strings.TrimPrefix(line, "## ")
		case line == "```sh":
			inExamples = true
		case line == "```":
			inExamples = false
		case inExamples && strings.HasPrefix(line, programName+" "):
			out = append(out, referenceExample{command: section, line: line})
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}
