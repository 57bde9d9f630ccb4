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
		{"flag of one command only", "postgres-seren-replicator cutover --fe", []string{"--fence", "--fence-command"}},
		{"enumerated value", "postgres-seren-replicator cutover --fence ", []string{"hook", "none", "read-only"}},
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
// the program and the binary that answers; where the shell is installed it
// loads the script, and fish completes through it.
func TestCompletionScripts(t *testing.T) {
	for _, tc := range []struct {
		shell string
		after string // run after the script; its output must hold want
		want  string
	}{
		{"bash", "complete -p postgres-seren-replicator", binary},
		{"zsh", "print -r -- ${_comps[postgres-seren-replicator]}", binary},
		{"fish", `complete -C "postgres-seren-replicator verif"`, "verify"},
	} {
		t.Run(tc.shell, func(t *testing.T) {
			res := runCLI(t, nil, "completion", tc.shell)
			if res.Code != 0 {
				t.Fatalf("exit code = %d, want 0; stderr: %s", res.Code, res.Stderr)
			}
			for _, want := range []string{"postgres-seren-replicator", binary} {
				if !strings.Contains(res.Stdout, want) {
					t.Errorf("the %s script does not name %s:\n%s", tc.shell, want, res.Stdout)
				}
			}
			if _, err := exec.LookPath(tc.shell); err != nil {
				t.Logf("%s is not installed: the script is not loaded", tc.shell)
				return
			}
			home := t.TempDir()
			sh := exec.Command(tc.shell, "-c", res.Stdout+"\n"+tc.after)
			sh.Env = append(cleanEnv(), "HOME="+home, "XDG_CONFIG_HOME="+home, "XDG_DATA_HOME="+home)
			out, err := sh.CombinedOutput()
			if err != nil || !strings.Contains(string(out), tc.want) {
				t.Errorf("%s with the script, then %s: %v\n%s\nwant %q in it", tc.shell, tc.after, err, out, tc.want)
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
