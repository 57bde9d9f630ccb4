package tests

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/serenorg/postgres-seren-replicator/internal/daemon"
	"github.com/serenorg/postgres-seren-replicator/tests/pgtest"
)

// TestDeployReadmeInstallSteps follows deploy/README.md's Install block
// command by command, as an administrator would: from the release archive
// (SEREN_RELEASE_ARCHIVE, set by make test-release; otherwise one packed
// like .goreleaser.yaml packs it, around a static build of this checkout)
// into a throwaway root standing for /, against a pair of test clusters.
// Files land where the doc says under that root; validate and init run
// from the installed binary with the environment file sourced as the doc
// sources it; the units are verified with systemd-analyze against the
// installed binary, then started the way systemd would start them (their
// Environment=, EnvironmentFile= and ExecStart=, with a notify socket):
// the daemon must report READY=1 and stream, stop cleanly on SIGTERM, and
// the timer's catch-up run must exit 0 with the target caught up. A step
// the test does not know fails it, so the doc cannot drift from it.
func TestDeployReadmeInstallSteps(t *testing.T) {
	if runtime.GOOS != "linux" || runtime.GOARCH != "amd64" {
		t.Skip("the doc installs the linux_amd64 archive")
	}
	work := t.TempDir()
	archive := os.Getenv("SEREN_RELEASE_ARCHIVE")
	if archive == "" {
		archive = packArchive(t, work, "0.0.0-test")
	} else if err := exec.Command("cp", archive, work).Run(); err != nil {
		t.Fatal(err)
	}
	src, dst := pgtestPair(t)
	src.Exec("postgres", "CREATE DATABASE app")
	src.Exec("app", "CREATE TABLE orders (id int PRIMARY KEY, note text); INSERT INTO orders SELECT g, 'before init' FROM generate_series(1, 100) g")

	f := &follower{t: t, root: newRoot(t), cwd: work, env: map[string]string{}, src: src, dst: dst}
	defer f.stopDaemon()
	for _, step := range installSteps(t) {
		t.Logf("$ %s", step)
		f.do(step)
	}
	f.stopDaemon()
	for _, want := range []string{"postgres-seren-replicator.service", "postgres-seren-replicator-catchup.service", "postgres-seren-replicator-catchup.timer"} {
		if _, err := os.Stat(filepath.Join(f.root, "etc/systemd/system", want)); err != nil {
			t.Errorf("the steps did not install %s", want)
		}
	}
	f.verifyUnits()
	if !f.ranDaemon || !f.ranCatchUp || !f.ranInit {
		t.Errorf("the steps ran init %v, the daemon %v, a catch-up run %v; want all", f.ranInit, f.ranDaemon, f.ranCatchUp)
	}
	assertSameRows(t, src, dst, "app", "app", []string{"orders"})
}

// installSteps returns the commands of deploy/README.md's Install block, one
// per element: continuation lines joined, comments dropped, "a; b" split.
func installSteps(t *testing.T) []string {
	t.Helper()
	doc := readDeploy(t, "README.md")
	i := strings.Index(doc, "\n## Install\n")
	if i < 0 {
		t.Fatal("deploy/README.md has no ## Install section")
	}
	start := strings.Index(doc[i:], "```sh\n")
	if start < 0 {
		t.Fatal("## Install has no sh block")
	}
	block := doc[i+start+len("```sh\n"):]
	block = block[:strings.Index(block, "\n```")]
	block = strings.ReplaceAll(block, "\\\n", " ")
	var steps []string
	for _, line := range strings.Split(block, "\n") {
		line = regexp.MustCompile(`(^|\s)#.*$`).ReplaceAllString(line, "")
		for _, cmd := range strings.Split(line, ";") {
			if cmd = strings.Join(strings.Fields(cmd), " "); cmd != "" {
				steps = append(steps, cmd)
			}
		}
	}
	return steps
}

// newRoot makes a throwaway root with what any systemd machine has: the
// directories the doc installs into, systemd's own units and /bin/kill
// (systemd-analyze verify --root checks the units against them).
func newRoot(t *testing.T) string {
	root := t.TempDir()
	for _, d := range []string{"usr/local/bin", "usr/bin", "etc/systemd/system", "usr/lib/systemd"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink("usr/bin", filepath.Join(root, "bin")); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat("/usr/lib/systemd/system"); err == nil {
		if out, err := exec.Command("cp", "-r", "/usr/lib/systemd/system", filepath.Join(root, "usr/lib/systemd/")).CombinedOutput(); err != nil {
			t.Fatalf("copy systemd units: %v\n%s", err, out)
		}
	}
	if kill, err := exec.LookPath("kill"); err == nil {
		exec.Command("cp", kill, filepath.Join(root, "usr/bin/kill")).Run()
	}
	return root
}

// follower carries out the doc's commands on a throwaway root.
type follower struct {
	t         *testing.T
	root, cwd string
	env       map[string]string // what `set -a; . FILE` exported
	exporting bool
	user      string
	src, dst  *pgtest.Cluster
	rows      int

	daemon      *exec.Cmd
	notes       chan string
	metricsAddr string

	ranInit, ranDaemon, ranCatchUp bool
}

// path maps a path of the doc to the throwaway root (absolute) or the
// current folder (relative).
func (f *follower) path(p string) string {
	if filepath.IsAbs(p) {
		return filepath.Join(f.root, p)
	}
	return filepath.Join(f.cwd, p)
}

func (f *follower) glob(pattern string) string {
	m, _ := filepath.Glob(filepath.Join(f.cwd, pattern))
	if len(m) != 1 {
		f.t.Fatalf("%s matches %d files in %s, want one", pattern, len(m), f.cwd)
	}
	return m[0]
}

func (f *follower) do(step string) {
	t := f.t
	w := strings.Fields(step)
	switch {
	case w[0] == "tar" && len(w) == 3 && w[1] == "-xzf":
		runIn(t, f.cwd, "tar", "-xzf", f.glob(w[2]))
	case w[0] == "cd" && len(w) == 2:
		f.cwd = f.glob(w[1])
	case w[0] == "install":
		f.install(w[1:])
	case w[0] == "useradd":
		if !strings.Contains(step, "--system") || !strings.Contains(step, "--shell /usr/sbin/nologin") {
			t.Errorf("useradd should create a system user without a login shell: %s", step)
		}
		f.user = w[len(w)-1]
	case w[0] == "$EDITOR" && len(w) == 2:
		f.edit(f.path(w[1]))
	case step == "set -a" || step == "set +a":
		f.exporting = step == "set -a"
	case w[0] == "." && len(w) == 2:
		if !f.exporting {
			t.Fatalf("%q without set -a: the variables would not reach the commands", step)
		}
		vars, err := daemon.ReadEnvFile(f.path(w[1]))
		if err != nil {
			t.Fatal(err)
		}
		for k, v := range vars {
			f.env[k] = v
		}
	case w[0] == "postgres-seren-replicator":
		f.runTool(w[1:])
	case step == "systemctl daemon-reload":
		f.verifyUnits()
	case len(w) == 4 && w[0] == "systemctl" && w[1] == "enable" && w[2] == "--now":
		f.enableNow(w[3])
	case len(w) == 3 && w[0] == "systemctl" && w[1] == "status":
		if f.daemon == nil || f.daemon.ProcessState != nil {
			t.Fatalf("%s: the daemon is not running", step)
		}
		waitNote(t, f.notes, "STATUS=")
	case len(w) == 4 && w[0] == "journalctl" && w[1] == "-u" && w[3] == "-f":
		if f.daemon == nil || !strings.Contains(syncLog(f.daemon), "streaming") {
			t.Fatalf("%s: the daemon logged no streaming line:\n%s", step, syncLog(f.daemon))
		}
	case len(w) == 3 && w[0] == "systemctl" && w[1] == "list-timers":
		f.unitFile(w[2])
	default:
		t.Fatalf("deploy/README.md step %q: this test does not know how to follow it; teach it", step)
	}
}

func runIn(t *testing.T, dir, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %v: %v\n%s", name, args, err, out)
	}
	return string(out)
}

// install runs install(1) with the doc's paths mapped. -g is checked
// against the user the doc created and left out (the group does not exist
// on the test machine).
func (f *follower) install(args []string) {
	var out []string
	for i := 0; i < len(args); i++ {
		switch a := args[i]; {
		case a == "-g":
			if args[i+1] != f.user {
				f.t.Errorf("install -g %s, but the doc created the user %q", args[i+1], f.user)
			}
			i++
		case a == "-m":
			out = append(out, a, args[i+1])
			i++
		case a == "-d":
			out = append(out, a)
		case strings.HasPrefix(a, "-"):
			f.t.Fatalf("install %s: unknown option", a)
		default:
			p := f.path(a)
			if strings.HasSuffix(a, "/") {
				p += "/"
			}
			out = append(out, p)
		}
	}
	runIn(f.t, f.cwd, "install", out...)
}

// edit fills in the environment file as the doc asks: the connections, and
// a free metrics port (the unit's default may be taken on a test machine).
func (f *follower) edit(path string) {
	b, err := os.ReadFile(path)
	if err != nil {
		f.t.Fatalf("$EDITOR: %v", err)
	}
	f.metricsAddr = freeAddr(f.t)
	text := string(b) + "\nSEREN_SOURCE=" + f.src.URL("postgres", "", "app") +
		"\nSEREN_TARGET=" + f.dst.URL("postgres", "", "app") +
		"\nSEREN_METRICS_ADDR=" + f.metricsAddr + "\n"
	if err := os.WriteFile(path, []byte(text), 0o640); err != nil {
		f.t.Fatal(err)
	}
}

// runTool runs the installed binary, as found on PATH, in the shell's
// environment. init asks on a terminal, so it gets one and the answer y.
func (f *follower) runTool(args []string) {
	t := f.t
	bin := filepath.Join(f.root, "usr/local/bin/postgres-seren-replicator")
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("postgres-seren-replicator is not on PATH (/usr/local/bin): %v", err)
	}
	env := cleanEnv()
	for k, v := range f.env {
		env = append(env, k+"="+v)
	}
	var cmd *exec.Cmd
	if len(args) > 0 && args[0] == "init" {
		cmd = exec.Command("script", "-qec", strings.Join(append([]string{bin}, args...), " "), "/dev/null")
		cmd.Stdin = strings.NewReader("y\n")
		f.ranInit = true
	} else {
		cmd = exec.Command(bin, args...)
	}
	cmd.Env, cmd.Dir = env, f.cwd
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("postgres-seren-replicator %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	if len(args) > 0 && args[0] == "version" && !strings.Contains(string(out), "commit:") {
		t.Errorf("version printed no commit:\n%s", out)
	}
}

func (f *follower) unitFile(name string) string {
	if !strings.Contains(name, ".") {
		name += ".service"
	}
	p := filepath.Join(f.root, "etc/systemd/system", name)
	if _, err := os.Stat(p); err != nil {
		f.t.Fatalf("unit %s is not installed: %v", name, err)
	}
	return p
}

// verifyUnits runs systemd-analyze verify on the installed units with the
// throwaway root as /, so ExecStart= must name the installed binary.
func (f *follower) verifyUnits() {
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		f.t.Log("systemd-analyze not installed: units not verified")
		return
	}
	units, _ := filepath.Glob(filepath.Join(f.root, "etc/systemd/system/postgres-seren-replicator*"))
	if len(units) == 0 {
		return
	}
	for i, u := range units {
		units[i] = filepath.Base(u)
	}
	verifyUnitsIn(f.t, analyze, f.root, units)
	for _, u := range units {
		if !strings.HasSuffix(u, ".service") {
			continue
		}
		s := parseUnit(f.t, f.unitFile(u))
		if s["User"] != f.user || s["Group"] != f.user {
			f.t.Errorf("%s runs as %s:%s, the doc created %s", u, s["User"], s["Group"], f.user)
		}
	}
}

// parseUnit returns the last value of each [Service] setting, and the
// Environment= lines joined by newlines under "Environment".
func parseUnit(t *testing.T, path string) map[string]string {
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	s, section := map[string]string{}, ""
	for _, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if strings.HasPrefix(line, "[") {
			section = line
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok || section != "[Service]" || strings.HasPrefix(line, "#") {
			continue
		}
		if k == "Environment" {
			v = s[k] + v + "\n"
		}
		s[k] = v
	}
	return s
}

// unitCommand builds a service's ExecStart= as systemd runs it: its
// Environment= then EnvironmentFile= variables, ${NAME} expanded.
func (f *follower) unitCommand(unit string) (*exec.Cmd, map[string]string) {
	s := parseUnit(f.t, f.unitFile(unit))
	vars := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(s["Environment"]), "\n") {
		for _, kv := range strings.Fields(line) {
			k, v, _ := strings.Cut(kv, "=")
			vars[k] = v
		}
	}
	file, err := daemon.ReadEnvFile(f.path(strings.TrimPrefix(s["EnvironmentFile"], "-")))
	if err != nil {
		f.t.Fatalf("%s: EnvironmentFile: %v", unit, err)
	}
	for k, v := range file {
		vars[k] = v
	}
	argv := strings.Fields(s["ExecStart"])
	for i, a := range argv {
		argv[i] = os.Expand(a, func(k string) string { return vars[k] })
	}
	cmd := exec.Command(f.path(argv[0]), argv[1:]...)
	cmd.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin", "HOME=/nonexistent"}
	for k, v := range vars {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	return cmd, s
}

// enableNow starts a service as systemd would, or runs a timer's service
// once. The daemon and the timer are alternatives: a running daemon is
// stopped before the timer's run, as the doc says to choose one.
func (f *follower) enableNow(unit string) {
	t := f.t
	f.unitFile(unit)
	f.rows += 50
	f.src.Exec("app", "INSERT INTO orders SELECT g, 'after init' FROM generate_series($1::int, $2::int) g", 100+f.rows-49, 100+f.rows)
	if name, ok := strings.CutSuffix(unit, ".timer"); ok {
		f.stopDaemon()
		cmd, s := f.unitCommand(name + ".service")
		if s["Type"] != "oneshot" {
			t.Errorf("%s.service: Type=%s, want oneshot", name, s["Type"])
		}
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%s.service: %v\n%s", name, err, out)
		}
		f.ranCatchUp = true
		assertSameRows(t, f.src, f.dst, "app", "app", []string{"orders"})
		return
	}
	cmd, s := f.unitCommand(unit)
	if s["Type"] != "notify" {
		t.Errorf("%s: Type=%s, want notify", unit, s["Type"])
	}
	sockPath := filepath.Join(t.TempDir(), "notify")
	sock, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sockPath, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sock.Close() })
	f.notes = make(chan string, 1000)
	go func() {
		buf := make([]byte, 4096)
		for {
			n, _, err := sock.ReadFromUnix(buf)
			if err != nil {
				return
			}
			select {
			case f.notes <- string(buf[:n]):
			default:
			}
		}
	}()
	cmd.Env = append(cmd.Env, "NOTIFY_SOCKET="+sockPath)
	logFile, err := os.CreateTemp(t.TempDir(), "daemon-*.log")
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	f.daemon, f.ranDaemon = cmd, true
	waitNote(t, f.notes, "READY=1")
	eventually(t, 30*time.Second, "/readyz 200 from the daemon", func() bool { return httpStatus(t, f.metricsAddr, "/readyz") == 200 })
	eventually(t, 30*time.Second, "the daemon to apply the new rows", func() bool {
		return f.dst.QueryString("app", "SELECT count(*) FROM orders") == strconv.Itoa(100+f.rows)
	})
}

// stopDaemon stops a running daemon as systemctl stop does: SIGTERM, then
// it must exit 0 within the unit's TimeoutStopSec.
func (f *follower) stopDaemon() {
	cmd := f.daemon
	if cmd == nil || cmd.ProcessState != nil {
		return
	}
	s := parseUnit(f.t, f.unitFile("postgres-seren-replicator.service"))
	limit, err := time.ParseDuration(s["TimeoutStopSec"])
	if err != nil {
		f.t.Fatalf("TimeoutStopSec=%s: %v", s["TimeoutStopSec"], err)
	}
	cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			f.t.Errorf("daemon stopped with %v\n%s", err, syncLog(cmd))
		}
	case <-time.After(limit):
		cmd.Process.Kill()
		<-done
		f.t.Errorf("daemon still running %s after SIGTERM (TimeoutStopSec)\n%s", limit, syncLog(cmd))
	}
}
