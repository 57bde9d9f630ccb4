package main

import (
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// parseWith parses args with a fresh CLI, as run does.
func parseWith(t *testing.T, args ...string) (*CLI, error) {
	t.Helper()
	var cli CLI
	parser, err := newParser(&cli, io.Discard, io.Discard, func(int) {})
	if err != nil {
		t.Fatal(err)
	}
	kctx, err := parser.Parse(args)
	if err == nil {
		_ = givenFlags(kctx)
	}
	return &cli, err
}

func writeConfig(t *testing.T, body string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "seren.yaml")
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// The command line wins over the environment, the environment over the
// file, the file over the default; keys of other commands' flags are
// ignored; lists read as YAML lists or comma-separated strings.
func TestConfigFilePrecedence(t *testing.T) {
	path := writeConfig(t, `source: postgres://a@src/app
target: postgres://a@dst/app
include-tables: [app.x, app.y]
exclude-databases: scratch,tmp
max-lag-seconds: 30
interval: 5s
catch-up: true
`)
	t.Setenv("SEREN_STATUS_WATCH_INTERVAL", "7s")
	cli, err := parseWith(t, "status", "--config", path, "--max-lag-seconds", "90")
	if err != nil {
		t.Fatal(err)
	}
	s := cli.Status
	if s.Source != "postgres://a@src/app" || s.Target != "postgres://a@dst/app" {
		t.Errorf("source %q target %q, want the file's", s.Source, s.Target)
	}
	if !slices.Equal(s.IncludeTables, []string{"app.x", "app.y"}) || !slices.Equal(s.ExcludeDatabases, []string{"scratch", "tmp"}) {
		t.Errorf("include-tables %q exclude-databases %q, want the file's lists", s.IncludeTables, s.ExcludeDatabases)
	}
	if got, want := time.Duration(s.MaxLagSeconds), 90*time.Second; got != want {
		t.Errorf("max-lag-seconds %s, want the command line's %s", got, want)
	}
	if s.Interval != 7*time.Second {
		t.Errorf("interval %s, want the environment's 7s over the file's 5s", s.Interval)
	}
	if s.StallAfter != 5*time.Minute {
		t.Errorf("stall-after %s, want the default 5m", s.StallAfter)
	}
}

// Every key of the example in deploy/ is a flag, and an unknown key or a
// file that is no mapping is refused by name without printing a value.
func TestConfigFileErrors(t *testing.T) {
	if _, err := parseWith(t, "status", "--config", "../../deploy/seren-replicator.yaml"); err != nil {
		t.Errorf("the example deploy/seren-replicator.yaml: %v", err)
	}
	cases := []struct{ name, body, want string }{
		{"unknown key", "source: postgres://u:sekret@h/db\ntarget: x\nexclude-tabels: [a.b]\n", `unknown key "exclude-tabels"`},
		{"not a mapping", "- postgres://u:sekret@h/db\n", "not a mapping of flag names to values"},
		{"syntax", "source: postgres://u:sekret@h/db\n  target: [\n", "seren.yaml"},
		{"the config key", "config: other.yaml\nsource: x\ntarget: y\n", `unknown key "config"`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := parseWith(t, "status", "--config", writeConfig(t, c.body))
			if err == nil {
				t.Fatal("accepted")
			}
			msg := redactError(err)
			if !strings.Contains(msg, c.want) || strings.Contains(msg, "sekret") {
				t.Errorf("error %q, want it to say %q and no password", msg, c.want)
			}
		})
	}
}
