package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/alecthomas/kong"
	"github.com/posener/complete"
	"github.com/willabides/kongplete"
)

// CompletionCmd prints the script that makes a shell complete this
// program's commands, flags and enumerated values.
type CompletionCmd struct {
	Shell string `arg:"" enum:"bash,zsh,fish" help:"The shell: bash, zsh or fish."`
}

// Run prints the script for c.Shell on stdout.
func (c *CompletionCmd) Run(env *Env) error {
	bin, err := os.Executable()
	if err == nil {
		bin, err = filepath.Abs(bin)
	}
	if err != nil {
		return fmt.Errorf("find this program's path: %w", err)
	}
	_, err = io.WriteString(env.Stdout, completionScript(c.Shell, programName, bin))
	return err
}

// completionScript is the script that has shell complete cmd by running
// bin: the shell sets COMP_LINE (and COMP_POINT) to the line typed so far
// and bin, seeing it, prints the candidates (completeRequest). zsh uses
// bash's protocol through bashcompinit.
func completionScript(shell, cmd, bin string) string {
	switch shell {
	case "bash":
		return fmt.Sprintf("# bash completion for %[1]s\ncomplete -C %[2]s %[1]s\n", cmd, initShellQuote(bin))
	case "zsh":
		return fmt.Sprintf("# zsh completion for %[1]s\n(( $+functions[compdef] )) || { autoload -U +X compinit && compinit; }\nautoload -U +X bashcompinit && bashcompinit\ncomplete -C %[2]s %[1]s\n",
			cmd, initShellQuote(bin))
	case "fish":
		fn := "__complete_" + strings.ReplaceAll(cmd, "-", "_")
		return fmt.Sprintf(`# fish completion for %[1]s
function %[3]s
    set -lx COMP_LINE (commandline -cp)
    test -z (commandline -ct)
    and set COMP_LINE "$COMP_LINE "
    %[2]s
end
complete -f -c %[1]s -a "(%[3]s)"
`, cmd, fishQuote(bin), fn)
	}
	return ""
}

// completeRequest answers a completion request from one of the scripts:
// when COMP_LINE is set it prints the candidates for the word being typed
// and reports done with the exit code; otherwise it does nothing.
func completeRequest(parser *kong.Kong, stderr io.Writer) (code int, done bool) {
	code = -1
	kongplete.Complete(parser,
		kongplete.WithPredictor("file", complete.PredictFiles("*")),
		kongplete.WithExitFunc(func(c int) {
			if code < 0 {
				code = c
			}
		}),
		kongplete.WithErrorHandler(func(err error) { fmt.Fprintf(stderr, "error: completion: %v\n", err) }),
	)
	return code, code >= 0
}

// fishQuote quotes s for fish, whose single quotes escape \ and '.
func fishQuote(s string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(s) + "'"
}
