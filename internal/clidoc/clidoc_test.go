package clidoc

import (
	"strings"
	"testing"

	"github.com/alecthomas/kong"
)

type runCmd struct {
	Mode   string `enum:"fast,safe" default:"safe" env:"APP_MODE" help:"How to run: a|b *x*."`
	Yes    bool   `short:"y" help:"No prompt."`
	Secret int    `hidden:"" help:"Not shown."`
}

func (*runCmd) Examples() []Example {
	return []Example{{Comment: "Run fast", Args: "run --mode fast -y"}}
}

type testCLI struct {
	Verbose bool     `env:"APP_VERBOSE" help:"Say more."`
	Run     runCmd   `cmd:"" help:"Run it."`
	Hidden  struct{} `cmd:"" hidden:"" help:"Internal."`
}

func TestMarkdown(t *testing.T) {
	var cli testCLI
	k, err := kong.New(&cli, kong.Name("app"), kong.Description("An app."))
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	if err := Markdown(&b, k.Model, "make docs"); err != nil {
		t.Fatal(err)
	}
	got := b.String()
	for _, want := range []string{
		"# app command-line reference",
		"`make docs`",
		"| `--verbose` | `APP_VERBOSE` |  | Say more. |",
		"| [`run`](#run) | Run it. |",
		"## run",
		"| `--mode=\"safe\"` | `APP_MODE` | `safe` | How to run: a\\|b \\*x\\*. Values: `fast`, `safe`. |",
		"| `-y, --yes` |  |  | No prompt. |",
		"```sh\n# Run fast\napp run --mode fast -y\n```",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("reference lacks %q:\n%s", want, got)
		}
	}
	for _, hidden := range []string{"secret", "Internal", "--help"} {
		if strings.Contains(got, hidden) {
			t.Errorf("reference shows hidden %q", hidden)
		}
	}
}

func TestHelp(t *testing.T) {
	got := Help("app", []Example{{Comment: "One", Args: "run"}, {Comment: "Two", Args: "run -y"}})
	want := "Examples:\n\n  # One\n  app run\n  # Two\n  app run -y\n"
	if got != want {
		t.Errorf("Help = %q, want %q", got, want)
	}
}
