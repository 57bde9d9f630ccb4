package main

import (
	"bytes"
	"context"
	"encoding/json"
	"runtime"
	"strings"
	"testing"
)

// The version command and --version print the same text; --json the same
// fields; a v prefix from a tag is dropped; missing stamps say unknown.
func TestVersionOutput(t *testing.T) {
	oldV, oldC, oldD := version, commit, date
	defer func() { version, commit, date = oldV, oldC, oldD }()
	version, commit, date = "v1.2.3", "0123abc", "2026-12-06T12:00:00Z"

	var flagOut, cmdOut, jsonOut, stderr bytes.Buffer
	if code := run(context.Background(), []string{"--version"}, &flagOut, &stderr); code != 0 {
		t.Fatalf("--version: exit %d: %s", code, stderr.String())
	}
	if code := run(context.Background(), []string{"version"}, &cmdOut, &stderr); code != 0 {
		t.Fatalf("version: exit %d: %s", code, stderr.String())
	}
	want := "postgres-seren-replicator 1.2.3\n  commit: 0123abc\n  built:  2026-12-06T12:00:00Z\n  go:     " + runtime.Version() + " " + runtime.GOOS + "/" + runtime.GOARCH + "\n"
	if flagOut.String() != want || cmdOut.String() != want {
		t.Errorf("--version:\n%s\nversion:\n%s\nwant:\n%s", flagOut.String(), cmdOut.String(), want)
	}
	if code := run(context.Background(), []string{"version", "--json"}, &jsonOut, &stderr); code != 0 {
		t.Fatalf("version --json: exit %d", code)
	}
	var bi BuildInfo
	if err := json.Unmarshal(jsonOut.Bytes(), &bi); err != nil || bi.Version != "1.2.3" || bi.Commit != "0123abc" || bi.Go != runtime.Version() {
		t.Errorf("version --json: %v %+v\n%s", err, bi, jsonOut.String())
	}

	version, commit, date = "dev", "", ""
	// Without -X stamps: the toolchain's VCS stamp when there is one, else unknown.
	if bi := buildInfo(); bi.Version != "dev" || bi.Commit == "" || bi.Date == "" || strings.Contains(bi.String(), ":  \n") {
		t.Errorf("unstamped build: %+v", bi)
	}
}
