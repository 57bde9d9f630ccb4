package tests

import (
	"strings"
	"testing"
)

func TestNoArgsIsUsageError(t *testing.T) {
	res := runCLI(t, nil)
	if res.Code != 2 {
		t.Fatalf("exit code = %d, want 2; stderr: %s", res.Code, res.Stderr)
	}
}

func TestHelpDocumentsExitCodesAndEnv(t *testing.T) {
	res := runCLI(t, nil, "sync", "--help")
	if res.Code != 0 {
		t.Fatalf("exit code = %d, want 0", res.Code)
	}
	for _, want := range []string{"$SEREN_SOURCE", "$SEREN_TARGET", "--include-tables"} {
		if !strings.Contains(res.Stdout, want) {
			t.Errorf("sync --help lacks %q", want)
		}
	}
	if top := runCLI(t, nil, "--help"); !strings.Contains(top.Stdout, "Exit codes") {
		t.Errorf("--help does not document the exit codes:\n%s", top.Stdout)
	}
}
