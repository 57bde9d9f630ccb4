package tests

import (
	"encoding/json"
	"os/exec"
	"regexp"
	"strings"
	"testing"
)

// dockerInstr is one instruction of a Dockerfile.
type dockerInstr struct {
	Cmd  string // upper case: FROM, RUN, ...
	Args string
	Line int
}

// dockerStage is one FROM and the instructions after it.
type dockerStage struct {
	Name, Image, Platform string
	Instrs                []dockerInstr
}

// parseDockerfile reads a Dockerfile the way a builder does (continuation
// lines joined, comments dropped) and resolves ${ARG} in FROM lines from
// the ARGs before the first FROM.
func parseDockerfile(t *testing.T, text string) (args map[string]string, stages []dockerStage) {
	t.Helper()
	args = map[string]string{}
	var instrs []dockerInstr
	var cur strings.Builder
	startLine := 0
	for i, line := range strings.Split(text, "\n") {
		trimmed := strings.TrimSpace(line)
		if strings.HasPrefix(trimmed, "#") || (trimmed == "" && cur.Len() == 0) {
			continue
		}
		if cur.Len() == 0 {
			startLine = i + 1
		}
		if s, ok := strings.CutSuffix(trimmed, "\\"); ok {
			cur.WriteString(strings.TrimSpace(s) + " ")
			continue
		}
		cur.WriteString(trimmed)
		cmd, rest, _ := strings.Cut(cur.String(), " ")
		instrs = append(instrs, dockerInstr{Cmd: strings.ToUpper(cmd), Args: strings.TrimSpace(rest), Line: startLine})
		cur.Reset()
	}
	for _, in := range instrs {
		switch {
		case in.Cmd == "FROM":
			f := strings.Fields(in.Args)
			st := dockerStage{}
			if strings.HasPrefix(f[0], "--platform=") {
				st.Platform, f = strings.TrimPrefix(f[0], "--platform="), f[1:]
			}
			st.Image = regexp.MustCompile(`\$\{(\w+)\}`).ReplaceAllStringFunc(f[0], func(ref string) string { return args[ref[2:len(ref)-1]] })
			if len(f) == 3 && strings.EqualFold(f[1], "AS") {
				st.Name = f[2]
			}
			stages = append(stages, st)
		case len(stages) == 0 && in.Cmd == "ARG":
			k, v, _ := strings.Cut(in.Args, "=")
			args[k] = v
		case len(stages) > 0:
			stages[len(stages)-1].Instrs = append(stages[len(stages)-1].Instrs, in)
		}
	}
	return args, stages
}

// last returns the arguments of the stage's last instruction cmd, or "".
func (s dockerStage) last(cmd string) string {
	out := ""
	for _, in := range s.Instrs {
		if in.Cmd == cmd {
			out = in.Args
		}
	}
	return out
}

func (s dockerStage) all(cmd string) string {
	var out []string
	for _, in := range s.Instrs {
		if in.Cmd == cmd {
			out = append(out, in.Args)
		}
	}
	return strings.Join(out, "\n")
}

const imageBinary = "/usr/local/bin/postgres-seren-replicator"

// TestDockerfile checks the Dockerfile without a container builder: base
// images pinned, a static build stamped with the version, two runtime
// targets (minimal on distroless by default, pg with pg_dump/pg_restore of
// PG_MAJOR) that run the binary as a non-root numeric user, and the probes
// documented in place of a HEALTHCHECK.
func TestDockerfile(t *testing.T) {
	text := repoFile(t, "Dockerfile")
	args, stages := parseDockerfile(t, text)
	byName := map[string]dockerStage{}
	for _, st := range stages {
		byName[st.Name] = st
	}
	pinned := regexp.MustCompile(`^[a-z0-9./-]+:([0-9A-Za-z._-]*[0-9][0-9A-Za-z._-]*|[a-z0-9._-]+@sha256:[0-9a-f]{64})$|@sha256:[0-9a-f]{64}$`)
	for _, st := range stages {
		if _, isStage := byName[st.Image]; isStage {
			continue
		}
		if !pinned.MatchString(st.Image) || strings.Contains(st.Image, ":latest") {
			t.Errorf("stage %s: base image %q is not pinned to a version tag or a digest", st.Name, st.Image)
		}
	}
	build, pg, minimal := byName["build"], byName["pg"], byName["minimal"]
	if build.Image == "" || pg.Image == "" || minimal.Image == "" {
		t.Fatalf("want stages build, pg and minimal; got %+v", stages)
	}
	if stages[len(stages)-1].Name != "minimal" {
		t.Error("the last stage (the default target) should be minimal")
	}
	if !strings.HasPrefix(minimal.Image, "gcr.io/distroless/static") && minimal.Image != "scratch" {
		t.Errorf("minimal is based on %s, want distroless/static or scratch", minimal.Image)
	}
	if !strings.Contains(minimal.Image, "@sha256:") {
		t.Errorf("minimal's base %s has no digest (distroless has no version tags)", minimal.Image)
	}
	if !strings.HasPrefix(args["GO_IMAGE"], "golang:"+strings.TrimPrefix(goModVersion(t), "go")) {
		t.Errorf("GO_IMAGE = %s, want the Go of go.mod (%s)", args["GO_IMAGE"], goModVersion(t))
	}
	compile := build.all("RUN")
	for _, want := range []string{"CGO_ENABLED=0", "-X main.version=${VERSION}", "-X main.commit=${COMMIT}", "-X main.date=${BUILD_DATE}", "-o /out/postgres-seren-replicator ./cmd/postgres-seren-replicator"} {
		if !strings.Contains(compile, want) {
			t.Errorf("build stage does not %q", want)
		}
	}
	if build.Platform != "$BUILDPLATFORM" {
		t.Errorf("build stage platform %q: cross-compile on $BUILDPLATFORM for TARGETOS/TARGETARCH", build.Platform)
	}
	for _, st := range []dockerStage{pg, minimal} {
		user := st.last("USER")
		if !regexp.MustCompile(`^[1-9][0-9]*(:[1-9][0-9]*)?$`).MatchString(user) {
			t.Errorf("stage %s: USER %q, want a non-zero numeric uid (Kubernetes checks runAsNonRoot only for numeric users)", st.Name, user)
		}
		var entry []string
		if err := json.Unmarshal([]byte(st.last("ENTRYPOINT")), &entry); err != nil || len(entry) != 1 || entry[0] != imageBinary {
			t.Errorf("stage %s: ENTRYPOINT %q, want exec form [%q]", st.Name, st.last("ENTRYPOINT"), imageBinary)
		}
		if cp := st.all("COPY"); !strings.Contains(cp, "--from=build /out/postgres-seren-replicator "+imageBinary) {
			t.Errorf("stage %s does not copy the built binary to %s: %q", st.Name, imageBinary, cp)
		}
		if st.last("EXPOSE") != "9188" {
			t.Errorf("stage %s: EXPOSE %q, want the metrics port 9188", st.Name, st.last("EXPOSE"))
		}
		if st.last("HEALTHCHECK") == "" {
			for _, probe := range []string{"/healthz", "/readyz", "--metrics-addr"} {
				if !strings.Contains(text, probe) {
					t.Errorf("no HEALTHCHECK and the probes are not documented: %s missing", probe)
				}
			}
		}
	}
	if !regexp.MustCompile(`(?m)^PG_MAJOR=\d+$`).MatchString(pg.all("ARG")) {
		t.Errorf("pg stage: ARGs %q, want PG_MAJOR=<number>", pg.all("ARG"))
	}
	if !strings.Contains(pg.all("RUN"), "postgresql-client-${PG_MAJOR}") {
		t.Error("pg stage does not install postgresql-client-${PG_MAJOR}")
	}
	if pg.all("ENV") != "PG_DUMP=/usr/lib/postgresql/${PG_MAJOR}/bin/pg_dump" {
		t.Errorf("pg stage: ENV %q, want PG_DUMP naming that client's pg_dump", pg.all("ENV"))
	}
	mkMajor := regexp.MustCompile(`(?m)^PG_MAJOR\s+\?=\s*(\d+)$`).FindStringSubmatch(repoFile(t, "Makefile"))
	dfMajor := regexp.MustCompile(`(?m)^ARG PG_MAJOR=(\d+)$`).FindStringSubmatch(text)
	if mkMajor == nil || dfMajor == nil || mkMajor[1] != dfMajor[1] {
		t.Errorf("PG_MAJOR: Makefile %v, Dockerfile %v; want one default", mkMajor, dfMajor)
	}
	ignore := repoFile(t, ".dockerignore")
	for _, want := range []string{".git", "bin", "dist", ".cache"} {
		if !regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(want) + `$`).MatchString(ignore) {
			t.Errorf(".dockerignore does not leave out %s", want)
		}
	}
	for _, needed := range []string{"go.mod", "go.sum", "cmd", "internal"} {
		if regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(needed) + `$`).MatchString(ignore) {
			t.Errorf(".dockerignore leaves out %s, which the build needs", needed)
		}
	}
}

// goModVersion is the Go version go.mod names.
func goModVersion(t *testing.T) string {
	m := regexp.MustCompile(`(?m)^go (\S+)$`).FindStringSubmatch(repoFile(t, "go.mod"))
	if m == nil {
		t.Fatal("go.mod names no Go version")
	}
	return "go" + m[1]
}

// TestParseDockerfile: the parser the test above relies on joins lines,
// skips comments and resolves FROM's ARGs.
func TestParseDockerfile(t *testing.T) {
	args, stages := parseDockerfile(t, "# c\nARG BASE=alpine:3.20\nFROM --platform=$BUILDPLATFORM ${BASE} AS one\nRUN a \\\n  b\n# x\nUSER 1\nFROM one\nUSER 0\n")
	if args["BASE"] != "alpine:3.20" || len(stages) != 2 || stages[0].Image != "alpine:3.20" || stages[0].Name != "one" ||
		stages[0].Platform != "$BUILDPLATFORM" || stages[0].last("RUN") != "a b" || stages[0].last("USER") != "1" || stages[1].last("USER") != "0" {
		t.Errorf("parsed %v %+v", args, stages)
	}
}

// TestMakeImageWithoutBuilder: with no container builder, make image says
// so and fails.
func TestMakeImageWithoutBuilder(t *testing.T) {
	cmd := exec.Command("make", "--no-print-directory", "-s", "image", "CONTAINER_BUILDER=")
	cmd.Dir = ".."
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "no container builder found (docker, podman or buildah)") {
		t.Errorf("make image without a builder: %v\n%s", err, out)
	}
}
