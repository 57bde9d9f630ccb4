package tests

import (
	"archive/tar"
	"compress/gzip"
	"debug/elf"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// repoFile reads a file of the repository root.
func repoFile(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

var (
	staticOnce sync.Once
	staticPath string
	staticErr  error
)

// staticBinary builds the binary as make build does (make build BIN=...,
// CGO_ENABLED=0, the version stamped in) once per test run.
func staticBinary(t *testing.T) string {
	t.Helper()
	staticOnce.Do(func() {
		dir, err := os.MkdirTemp("", "seren-static-")
		if err != nil {
			staticErr = err
			return
		}
		staticPath = filepath.Join(dir, "postgres-seren-replicator")
		cmd := exec.Command("make", "--no-print-directory", "-s", "build", "BIN="+staticPath, "VERSION=0.0.0-test")
		cmd.Dir = ".."
		if out, err := cmd.CombinedOutput(); err != nil {
			staticErr = fmt.Errorf("make build: %v\n%s", err, out)
		}
	})
	if staticErr != nil {
		t.Fatal(staticErr)
	}
	return staticPath
}

// checkStaticELF fails unless path is an ELF executable of machine with no
// program interpreter and no dynamic section: it needs no libc.
func checkStaticELF(t *testing.T, path string, machine elf.Machine) {
	t.Helper()
	f, err := elf.Open(path)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	defer f.Close()
	if f.Machine != machine {
		t.Errorf("%s: machine %s, want %s", path, f.Machine, machine)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP || p.Type == elf.PT_DYNAMIC {
			t.Errorf("%s is dynamically linked (%s segment)", path, p.Type)
		}
	}
	if libs, _ := f.ImportedLibraries(); len(libs) > 0 {
		t.Errorf("%s needs shared libraries %v", path, libs)
	}
}

// checkVersionOutput runs path's version command and --version and checks
// they print version, commit, a build date and the Go version.
func checkVersionOutput(t *testing.T, path, version string) {
	t.Helper()
	commit := strings.TrimSpace(runIn(t, "..", "git", "rev-parse", "HEAD"))
	for _, args := range [][]string{{"--version"}, {"version"}} {
		out, err := exec.Command(path, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("%v: %v\n%s", args, err, out)
		}
		text := string(out)
		m := regexp.MustCompile(`^postgres-seren-replicator (\S+)\n  commit: (\S+)\n  built:  (\S+)\n  go:     (go\S+) (\S+)\n$`).FindStringSubmatch(text)
		if m == nil {
			t.Fatalf("%v printed:\n%s", args, text)
		}
		if m[1] != version {
			t.Errorf("%v: version %s, want %s", args, m[1], version)
		}
		if m[2] != commit {
			t.Errorf("%v: commit %s, want HEAD %s", args, m[2], commit)
		}
		if _, err := time.Parse(time.RFC3339, m[3]); err != nil {
			t.Errorf("%v: build date %q is not RFC 3339", args, m[3])
		}
		if m[4] != runtime.Version() {
			t.Errorf("%v: go %s, want %s", args, m[4], runtime.Version())
		}
	}
}

// TestStaticBuildPrintsVersion: make build gives a static binary that
// prints the version, commit, build date and Go version it was built with.
func TestStaticBuildPrintsVersion(t *testing.T) {
	bin := staticBinary(t)
	if runtime.GOOS == "linux" {
		checkStaticELF(t, bin, map[string]elf.Machine{"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64}[runtime.GOARCH])
	}
	checkVersionOutput(t, bin, "0.0.0-test")
}

// TestMakeVersionIsSemantic: make version prints a semantic version: the
// next release named by CHANGELOG.md's first heading, as a pre-release
// with the commit, between tags.
func TestMakeVersionIsSemantic(t *testing.T) {
	v := strings.TrimSpace(runIn(t, "..", "make", "--no-print-directory", "-s", "version"))
	semver := regexp.MustCompile(`^(\d+)\.(\d+)\.(\d+)(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?$`)
	if !semver.MatchString(v) {
		t.Fatalf("make version = %q, not a semantic version", v)
	}
	next := regexp.MustCompile(`(?m)^## \[(\d+\.\d+\.\d+)\]`).FindStringSubmatch(repoFile(t, "CHANGELOG.md"))
	if next == nil {
		t.Fatal("CHANGELOG.md has no ## [X.Y.Z] heading")
	}
	if !strings.HasPrefix(v, next[1]) {
		t.Errorf("make version = %s, CHANGELOG's next release is %s", v, next[1])
	}
}

// TestReleaseConfig checks .goreleaser.yaml without running it (make
// test-release runs it): the four platforms, no cgo, the version variables
// main has, checksums, the files deploy/README.md's steps need; and that
// the release tool stays out of the product's go.mod.
func TestReleaseConfig(t *testing.T) {
	cfg := repoFile(t, ".goreleaser.yaml")
	for _, want := range []string{
		"goos: [linux, darwin]", "goarch: [amd64, arm64]", "- CGO_ENABLED=0",
		"-X main.version={{ .Version }}", "-X main.commit={{ .Env.GIT_COMMIT }}", "-X main.date={{ .Date }}",
		"checksum:", "algorithm: sha256", "wrap_in_directory: true", "formats: [tar.gz]",
		`name_template: "{{ .ProjectName }}_{{ .Version }}_{{ .Os }}_{{ .Arch }}"`,
	} {
		if !strings.Contains(cfg, want) {
			t.Errorf(".goreleaser.yaml lacks %q", want)
		}
	}
	for _, f := range []string{"LICENSE", "README.md", "CHANGELOG.md", "deploy/*"} {
		if !slices.Contains(archiveFiles(t), f) {
			t.Errorf(".goreleaser.yaml archives lack %s", f)
		}
	}
	mainSrc := repoFile(t, "cmd/postgres-seren-replicator/main.go") + repoFile(t, "cmd/postgres-seren-replicator/version.go")
	for _, v := range []string{"version", "commit", "date"} {
		if !regexp.MustCompile(`(?m)^\s*(var )?` + v + `\s+= "`).MatchString(mainSrc) {
			t.Errorf("package main has no string variable %s for -X main.%s", v, v)
		}
	}
	gomod := repoFile(t, "go.mod")
	for _, heavy := range []string{"goreleaser", "k8s.io/", "sigs.k8s.io/"} {
		if strings.Contains(gomod, heavy) {
			t.Errorf("the product's go.mod requires %s; it belongs in tools/", heavy)
		}
	}
	if !strings.Contains(repoFile(t, "tools/release/go.mod"), "tool github.com/goreleaser/goreleaser/v2") {
		t.Error("tools/release/go.mod does not pin goreleaser as a tool")
	}
	if lic := repoFile(t, "LICENSE"); !strings.Contains(lic, "Apache License") || !strings.Contains(lic, "Version 2.0, January 2004") {
		t.Error("LICENSE is not the Apache License 2.0")
	}
}

// archiveFiles returns the files: globs of .goreleaser.yaml's archive.
func archiveFiles(t *testing.T) []string {
	t.Helper()
	cfg := repoFile(t, ".goreleaser.yaml")
	i := strings.Index(cfg, "    files:\n")
	if i < 0 {
		t.Fatal(".goreleaser.yaml: no archive files:")
	}
	var out []string
	for _, line := range strings.Split(cfg[i+len("    files:\n"):], "\n") {
		item, ok := strings.CutPrefix(line, "      - ")
		if !ok {
			if strings.HasPrefix(strings.TrimSpace(line), "#") {
				continue
			}
			break
		}
		out = append(out, item)
	}
	return out
}

// packArchive packs the static build and the archive's files as
// goreleaser does (one folder, NAME_VERSION_linux_amd64) into dir.
func packArchive(t *testing.T, dir, version string) string {
	t.Helper()
	base := "postgres-seren-replicator_" + version + "_linux_amd64"
	files := map[string]string{base + "/postgres-seren-replicator": staticBinary(t)}
	for _, pattern := range archiveFiles(t) {
		matches, err := filepath.Glob(filepath.Join("..", pattern))
		if err != nil || len(matches) == 0 {
			t.Fatalf("archive pattern %s matches nothing", pattern)
		}
		for _, m := range matches { // a folder brings all its files, as in goreleaser
			filepath.WalkDir(m, func(p string, d os.DirEntry, err error) error {
				if err == nil && !d.IsDir() {
					files[base+"/"+strings.TrimPrefix(p, "../")] = p
				}
				return err
			})
		}
	}
	path := filepath.Join(dir, base+".tar.gz")
	out, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	gz := gzip.NewWriter(out)
	tw := tar.NewWriter(gz)
	names := make([]string, 0, len(files))
	for name := range files {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		b, err := os.ReadFile(files[name])
		if err != nil {
			t.Fatal(err)
		}
		st, _ := os.Stat(files[name])
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: int64(st.Mode().Perm()), Size: int64(len(b)), ModTime: st.ModTime()}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(b); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := gz.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}

// readTarGz returns the names and contents of the regular files of a
// .tar.gz archive.
func readTarGz(t *testing.T, path string) map[string][]byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	gz, err := gzip.NewReader(f)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	tr := tar.NewReader(gz)
	files := map[string][]byte{}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return files
		}
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if h.Typeflag == tar.TypeReg {
			b, err := io.ReadAll(tr)
			if err != nil {
				t.Fatal(err)
			}
			files[h.Name] = b
		}
	}
}

// TestReadmeInstallSection: the README's install section comes before its
// usage, starts from a release archive named as make release names it (the
// next version of CHANGELOG.md), then the image, then make build.
func TestReadmeInstallSection(t *testing.T) {
	readme := repoFile(t, "README.md")
	i, j := strings.Index(readme, "\n## Install\n"), strings.Index(readme, "\n## Using it\n")
	if i < 0 || j < i {
		t.Fatal("README.md has no ## Install section before ## Using it")
	}
	section := readme[i:j]
	archive, image, source := strings.Index(section, "release archive"), strings.Index(section, "make image"), strings.Index(section, "make build")
	if archive < 0 || image < archive || source < image {
		t.Errorf("## Install should start from a release archive, then the image, then make build (at %d, %d, %d)", archive, image, source)
	}
	next := regexp.MustCompile(`(?m)^## \[(\d+\.\d+\.\d+)\]`).FindStringSubmatch(repoFile(t, "CHANGELOG.md"))
	if next == nil {
		t.Fatal("CHANGELOG.md has no ## [X.Y.Z] heading")
	}
	for _, name := range []string{
		"postgres-seren-replicator_" + next[1] + "_checksums.txt",
		"postgres-seren-replicator_" + next[1] + "_linux_amd64.tar.gz",
		"postgres-seren-replicator_" + next[1] + "_linux_amd64/postgres-seren-replicator",
		"postgres-seren-replicator:" + next[1] + "-pg" + regexp.MustCompile(`(?m)^ARG PG_MAJOR=(\d+)$`).FindStringSubmatch(repoFile(t, "Dockerfile"))[1],
	} {
		if !strings.Contains(section, name) {
			t.Errorf("## Install does not name %s as make release and make image produce it", name)
		}
	}
}
