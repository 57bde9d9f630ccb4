package tests

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"debug/elf"
	"debug/macho"
	"encoding/hex"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// TestRelease checks what make release put in SEREN_RELEASE_DIST (make
// test-release sets it; skipped otherwise): an archive per platform with
// the binary and the files deploy/README.md's steps use, a checksums file
// that verifies every archive, static linux binaries for the right
// machine, darwin binaries for the right CPU, and, for this machine's
// platform, a binary that prints the version make stamped in.
func TestRelease(t *testing.T) {
	dist := os.Getenv("SEREN_RELEASE_DIST")
	if dist == "" {
		t.Skip("SEREN_RELEASE_DIST not set: run make test-release")
	}
	version := os.Getenv("VERSION")
	if version == "" {
		version = strings.TrimSpace(runIn(t, "..", "make", "--no-print-directory", "-s", "version"))
	}
	prefix := "postgres-seren-replicator_" + version

	sums := map[string]string{}
	f, err := os.Open(filepath.Join(dist, prefix+"_checksums.txt"))
	if err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		sum, name, ok := strings.Cut(sc.Text(), "  ")
		if !ok || len(sum) != 64 {
			t.Errorf("checksums line %q is not \"SHA256  NAME\"", sc.Text())
			continue
		}
		sums[name] = sum
	}
	f.Close()

	platforms := []struct {
		os, arch string
		elf      elf.Machine
		cpu      macho.Cpu
	}{
		{"linux", "amd64", elf.EM_X86_64, 0}, {"linux", "arm64", elf.EM_AARCH64, 0},
		{"darwin", "amd64", 0, macho.CpuAmd64}, {"darwin", "arm64", 0, macho.CpuArm64},
	}
	if len(sums) != len(platforms) {
		t.Errorf("checksums list %d files, want %d archives: %v", len(sums), len(platforms), sums)
	}
	for _, p := range platforms {
		base := prefix + "_" + p.os + "_" + p.arch
		path := filepath.Join(dist, base+".tar.gz")
		data, err := os.ReadFile(path)
		if err != nil {
			t.Errorf("%s/%s: %v", p.os, p.arch, err)
			continue
		}
		h := sha256.Sum256(data)
		if got := hex.EncodeToString(h[:]); sums[base+".tar.gz"] != got {
			t.Errorf("%s: checksum %s listed, file has %s", base, sums[base+".tar.gz"], got)
		}
		files := readTarGz(t, path)
		for _, want := range []string{"postgres-seren-replicator", "LICENSE", "README.md", "CHANGELOG.md", "deploy/README.md",
			"deploy/env.example", "deploy/postgres-seren-replicator.service", "deploy/postgres-seren-replicator-catchup.timer",
			"deploy/kubernetes/deployment.yaml", "deploy/grafana/postgres-seren-replicator.json"} {
			if _, ok := files[base+"/"+want]; !ok {
				t.Errorf("%s lacks %s/%s", path, base, want)
			}
		}
		bin := files[base+"/postgres-seren-replicator"]
		if bin == nil {
			continue
		}
		exe := filepath.Join(t.TempDir(), "postgres-seren-replicator")
		if err := os.WriteFile(exe, bin, 0o755); err != nil {
			t.Fatal(err)
		}
		if p.os == "linux" {
			checkStaticELF(t, exe, p.elf)
		} else {
			m, err := macho.NewFile(bytes.NewReader(bin))
			if err != nil {
				t.Errorf("%s: not a Mach-O binary: %v", base, err)
				continue
			}
			if m.Cpu != p.cpu || m.Type != macho.TypeExec {
				t.Errorf("%s: Mach-O cpu %s type %v, want %s executable", base, m.Cpu, m.Type, p.cpu)
			}
		}
		if p.os == runtime.GOOS && p.arch == runtime.GOARCH {
			checkVersionOutput(t, exe, version)
		}
	}
}
