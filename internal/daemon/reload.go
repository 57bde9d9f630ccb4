package daemon

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
)

// EnvFileVar names the variable the unit sets to its EnvironmentFile, so
// the daemon can re-read settings from it on SIGHUP: systemd does not
// change a running process's environment on reload.
const EnvFileVar = "SEREN_ENV_FILE"

// ReadEnvFile parses a systemd environment file: KEY=VALUE lines, blank
// lines and lines starting with # or ; ignored, values optionally in single
// or double quotes. It handles the subset env.example uses, not line
// continuations or escapes inside quotes.
func ReadEnvFile(path string) (map[string]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read environment file: %w", err)
	}
	defer f.Close()
	vars := make(map[string]string)
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' || line[0] == ';' {
			continue
		}
		key, value, ok := strings.Cut(strings.TrimPrefix(line, "export "), "=")
		key = strings.TrimSpace(key)
		if !ok || key == "" {
			return nil, fmt.Errorf("environment file %s line %d: want KEY=VALUE", path, n)
		}
		value = strings.TrimSpace(value)
		if len(value) >= 2 && (value[0] == '"' || value[0] == '\'') && value[len(value)-1] == value[0] {
			value = value[1 : len(value)-1]
		}
		vars[key] = value
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("environment file %s: %w", path, err)
	}
	return vars, nil
}

// HandleHUP calls reload on every SIGHUP until ctx ends. It blocks: run it
// in a goroutine the caller waits for.
func HandleHUP(ctx context.Context, reload func()) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
			reload()
		}
	}
}
