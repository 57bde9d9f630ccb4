package tests

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/serenorg/postgres-seren-replicator/internal/metrics"
)

var unitFiles = []string{
	"postgres-seren-replicator.service",
	"postgres-seren-replicator-catchup.service",
	"postgres-seren-replicator-catchup.timer",
}

func readDeploy(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "deploy", name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestSystemdUnitsVerify runs systemd-analyze verify on the shipped units
// as installed: in a throwaway root standing for /, with the binary at
// /usr/local/bin where deploy/README.md installs it and ExecStart= names it
// (verify checks that the command exists), and without the binary, which
// must fail.
func TestSystemdUnitsVerify(t *testing.T) {
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze not installed")
	}
	root := newRoot(t)
	for _, name := range unitFiles {
		if err := os.WriteFile(filepath.Join(root, "etc/systemd/system", name), []byte(readDeploy(t, name)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if out, err := analyzeVerify(analyze, root, unitFiles); err == nil && !strings.Contains(out, "/usr/local/bin/postgres-seren-replicator") {
		t.Errorf("systemd-analyze verify passed without the binary installed:\n%s", out)
	}
	if out, err := exec.Command("install", "-m", "0755", binary, filepath.Join(root, "usr/local/bin/")).CombinedOutput(); err != nil {
		t.Fatalf("install: %v\n%s", err, out)
	}
	verifyUnitsIn(t, analyze, root, unitFiles)
}

// verifyUnitsIn runs systemd-analyze verify --root=root on units installed
// in root's /etc/systemd/system and fails on any finding.
func verifyUnitsIn(t *testing.T, analyze, root string, units []string) {
	t.Helper()
	out, err := analyzeVerify(analyze, root, units)
	// verify exits 0 on unknown keys and misplaced settings but prints them:
	// any output is a finding.
	if err != nil || len(strings.TrimSpace(out)) > 0 {
		t.Errorf("systemd-analyze verify --root %s %v: %v\n%s", root, units, err, out)
	}
}

func analyzeVerify(analyze, root string, units []string) (string, error) {
	out, err := exec.Command(analyze, append([]string{"verify", "--man=no", "--root=" + root}, units...)...).CombinedOutput()
	return string(out), err
}

// TestSystemdUnitSettings checks the settings the daemon depends on, on
// every machine (systemd-analyze accepts a unit without them).
func TestSystemdUnitSettings(t *testing.T) {
	daemon := readDeploy(t, "postgres-seren-replicator.service")
	for _, want := range []string{
		"Type=notify", "Restart=on-failure", "WatchdogSec=", "EnvironmentFile=/etc/postgres-seren-replicator/env",
		"NoNewPrivileges=yes", "ProtectSystem=strict", "User=seren-replicator", "RestartPreventExitStatus=2",
		"ExecStart=/usr/local/bin/postgres-seren-replicator sync --metrics-addr=${SEREN_METRICS_ADDR}",
		"ExecReload=/bin/kill -HUP $MAINPID", "TimeoutStopSec=",
	} {
		if !strings.Contains(daemon, want+"\n") && !strings.Contains(daemon, want) {
			t.Errorf("daemon unit lacks %q", want)
		}
	}
	catchup := readDeploy(t, "postgres-seren-replicator-catchup.service")
	for _, want := range []string{"Type=oneshot", "sync --catch-up", "EnvironmentFile=/etc/postgres-seren-replicator/env", "ProtectSystem=strict"} {
		if !strings.Contains(catchup, want) {
			t.Errorf("catch-up unit lacks %q", want)
		}
	}
	if timer := readDeploy(t, "postgres-seren-replicator-catchup.timer"); !strings.Contains(timer, "OnCalendar=") {
		t.Error("timer has no OnCalendar=")
	}
}

// TestEnvExampleListsEveryVariable checks that deploy/env.example mentions
// every SEREN_* variable the commands' --help shows, and the ones the units use.
func TestEnvExampleListsEveryVariable(t *testing.T) {
	example := readDeploy(t, "env.example")
	varRe := regexp.MustCompile(`\$\{?(SEREN_[A-Z0-9_]+)`)
	want := map[string]string{}
	for _, cmd := range []string{"validate", "init", "sync", "status", "verify", "cleanup"} {
		res := runCLI(t, nil, cmd, "--help")
		if res.Code != 0 {
			t.Fatalf("%s --help: exit %d\n%s", cmd, res.Code, res.Stderr)
		}
		for _, m := range varRe.FindAllStringSubmatch(res.Stdout, -1) {
			want[m[1]] = cmd + " --help"
		}
	}
	for _, name := range unitFiles {
		for _, m := range varRe.FindAllStringSubmatch(readDeploy(t, name), -1) {
			want[m[1]] = name
		}
	}
	if len(want) < 10 {
		t.Fatalf("found only %d variables in --help; did the help format change?", len(want))
	}
	for v, where := range want {
		if !regexp.MustCompile(`(?m)^#?` + v + `=`).MatchString(example) {
			t.Errorf("env.example lacks %s (used by %s)", v, where)
		}
	}
}

// TestSystemdUnitRestartPolicy checks that the daemon unit restarts after
// the exit code of a failure a retry can fix and not after those that need a
// person, as --help documents them.
func TestSystemdUnitRestartPolicy(t *testing.T) {
	help := runCLI(t, nil, "--help").Stdout
	prevent := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^RestartPreventExitStatus=(.*)$`).FindAllStringSubmatch(readDeploy(t, "postgres-seren-replicator.service"), -1) {
		for _, code := range strings.Fields(m[1]) {
			prevent[code] = true
		}
	}
	for _, c := range []struct {
		code, means string
		restart     bool
	}{
		{"2", "usage or configuration error", false},
		{"3", "runtime failure", true},
		{"4", "only a person can change", false},
	} {
		if !regexp.MustCompile(`(?m)^\s+` + c.code + `\s+` + `[^\n]*` + regexp.QuoteMeta(c.means)).MatchString(help) {
			t.Errorf("--help does not document exit code %s as %q:\n%s", c.code, c.means, help)
		}
		if prevent[c.code] == c.restart {
			t.Errorf("exit code %s (%s): RestartPreventExitStatus lists it = %v, want %v", c.code, c.means, prevent[c.code], !c.restart)
		}
	}
}

// TestGrafanaDashboardUsesDefinedMetrics checks that every metric name in
// the dashboard exists in the registry the daemon serves, and that every
// replicator metric appears on the dashboard.
func TestGrafanaDashboardUsesDefinedMetrics(t *testing.T) {
	reg := metrics.NewRegistry()
	m := metrics.New(reg)
	m.BatchApplied("d", 1, 1, time.Millisecond)
	m.RowsApplied("d", "public.t", metrics.OpInsert, 1)
	m.SetLag("d", 1, time.Second)
	m.SetStall("d", metrics.SideTarget, time.Second)
	m.SetCheckpoint("d", 1)
	m.SetSlotRetained("d", 1)
	m.Reconnect("d", metrics.SideSource)
	m.Error("d", metrics.KindApply)
	m.SnapshotStarted("d", 1)
	m.SnapshotCopied("d", 1)
	m.SnapshotTableDone("d")
	m.StartAtZero("d")
	j := metrics.NewJobs(reg)
	j.TableCopied("d", "public.t", 1)
	j.TableRows("d", "public.t", 1)
	j.VerifyPlanned("d", 1)
	j.VerifyRange("d", 1, true)
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	defined := map[string]bool{}
	var ours []string
	for _, f := range families {
		name := f.GetName()
		defined[name] = true
		if f.GetType() == dto.MetricType_HISTOGRAM || f.GetType() == dto.MetricType_SUMMARY {
			defined[name+"_bucket"], defined[name+"_sum"], defined[name+"_count"] = true, true, true
		}
		if strings.HasPrefix(name, metrics.Namespace+"_") {
			ours = append(ours, name)
		}
	}

	raw := readDeploy(t, filepath.Join("grafana", "postgres-seren-replicator.json"))
	var dash map[string]any
	if err := json.Unmarshal([]byte(raw), &dash); err != nil {
		t.Fatalf("dashboard is not JSON: %v", err)
	}
	var exprs []string
	var walk func(v any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			for k, x := range v {
				if s, ok := x.(string); ok && (k == "expr" || k == "query" || k == "definition") {
					exprs = append(exprs, s)
				}
				walk(x)
			}
		case []any:
			for _, x := range v {
				walk(x)
			}
		}
	}
	walk(dash)
	if len(exprs) < 10 {
		t.Fatalf("found %d queries in the dashboard, want many", len(exprs))
	}
	metricRe := regexp.MustCompile(`\b((?:seren_replicator|go|process)_[a-z0-9_]+)\b`)
	used := map[string]bool{}
	for _, e := range exprs {
		for _, name := range metricRe.FindAllString(e, -1) {
			used[name] = true
			if !defined[name] {
				t.Errorf("dashboard query uses %s, which the registry does not define: %s", name, e)
			}
		}
	}
	for _, name := range ours {
		if !used[name] && !used[name+"_bucket"] && !used[name+"_sum"] {
			t.Errorf("metric %s is not on the dashboard", name)
		}
	}
	if !slices.Contains(ours, metrics.Namespace+"_lag_bytes") {
		t.Error("registry lacks the lag metric; was it renamed?")
	}
}
