package tests

import (
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// TestCompletionCandidates runs the binary as the completion scripts do,
// with the line typed so far in COMP_LINE and the cursor in COMP_POINT,
// and checks the candidates it prints.
func TestCompletionCandidates(t *testing.T) {
	for _, tc := range []struct {
		name, line string
		want       []string
	}{
		{"command prefix", "postgres-seren-replicator ver", []string{"verify", "version"}},
		{"one command", "postgres-seren-replicator cu", []string{"cutover"}},
		{"hidden command left out", "postgres-seren-replicator do", nil},
		{"flag prefix", "postgres-seren-replicator sync --max-b", []string{"--max-batch-changes", "--max-batch-delay"}},
		{"flag of one command only", "postgres-seren-replicator cutover --fe", []string{"--fence"}},
		{"enumerated value", "postgres-seren-replicator cutover --fence ", []string{"none", "read-only"}},
		{"shell argument", "postgres-seren-replicator completion ", []string{"bash", "fish", "zsh"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := runCLI(t, []string{"COMP_LINE=" + tc.line, "COMP_POINT=" + strconv.Itoa(len(tc.line))})
			if res.Code != 0 {
				t.Fatalf("exit code = %d, want 0; stderr: %s", res.Code, res.Stderr)
			}
			got := strings.Fields(res.Stdout)
			slices.Sort(got)
			if !slices.Equal(got, tc.want) {
				t.Errorf("candidates for %q = %q, want %q", tc.line, got, tc.want)
			}
		})
	}
}

// TestCompletionScripts checks the script printed for each shell: it names
// the program and the binary that answers, and bash loads it.
func TestCompletionScripts(t *testing.T) {
	for _, shell := range []string{"bash", "zsh", "fish"} {
		t.Run(shell, func(t *testing.T) {
			res := runCLI(t, nil, "completion", shell)
			if res.Code != 0 {
				t.Fatalf("exit code = %d, want 0; stderr: %s", res.Code, res.Stderr)
			}
			for _, want := range []string{"postgres-seren-replicator", binary} {
				if !strings.Contains(res.Stdout, want) {
					t.Errorf("the %s script does not name %s:\n%s", shell, want, res.Stdout)
				}
			}
			if _, err := exec.LookPath(shell); err != nil {
				return // only syntax checks need the shell itself
			}
			check := exec.Command(shell, "-n", "-c", res.Stdout)
			if shell == "bash" {
				// Load it and show what it registered.
				check = exec.Command("bash", "-c", res.Stdout+"\ncomplete -p postgres-seren-replicator")
			}
			out, err := check.CombinedOutput()
			if err != nil {
				t.Fatalf("%s rejects the script: %v\n%s", shell, err, out)
			}
			if shell == "bash" && (!strings.Contains(string(out), "-C ") || !strings.Contains(string(out), binary)) {
				t.Errorf("bash registered %q, want completion by %s", out, binary)
			}
		})
	}
	if res := runCLI(t, nil, "completion", "tcsh"); res.Code != 2 {
		t.Errorf("completion tcsh: exit code = %d, want 2", res.Code)
	}
}

// TestHelpShowsExamples checks that each command's --help ends its
// description with runnable examples.
func TestHelpShowsExamples(t *testing.T) {
	for _, cmd := range []string{"validate", "init", "sync", "status", "verify", "cutover", "cleanup", "version", "completion"} {
		res := runCLI(t, nil, cmd, "--help")
		if res.Code != 0 || !strings.Contains(res.Stdout, "Examples:") || !strings.Contains(res.Stdout, "postgres-seren-replicator "+cmd+" ") {
			t.Errorf("%s --help (exit %d) shows no example of %s:\n%s", cmd, res.Code, cmd, res.Stdout)
		}
	}
}
