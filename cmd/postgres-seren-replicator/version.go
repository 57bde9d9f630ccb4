package main

import (
	"encoding/json"
	"fmt"
	"runtime"
	"runtime/debug"
	"strings"
)

// Set at build time with -ldflags "-X main.version=... -X main.commit=...
// -X main.date=..." (make build, make release). A build without them falls
// back to what the Go toolchain recorded (go install module@version, or the
// VCS stamp of a build from a checkout).
var (
	commit = ""
	date   = ""
)

// BuildInfo is what `version` and `--version` print.
type BuildInfo struct {
	Version  string `json:"version"`
	Commit   string `json:"commit"`
	Date     string `json:"date"`
	Go       string `json:"go"`
	Platform string `json:"platform"`
}

// buildInfo collects the version stamped in at build time, completed from
// the toolchain's build information.
func buildInfo() BuildInfo {
	bi := BuildInfo{Version: version, Commit: commit, Date: date, Go: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH}
	if info, ok := debug.ReadBuildInfo(); ok {
		if bi.Version == "dev" && info.Main.Version != "" && info.Main.Version != "(devel)" {
			bi.Version = info.Main.Version // go install ...@vX.Y.Z
		}
		modified := false
		for _, s := range info.Settings {
			switch s.Key {
			case "vcs.revision":
				if bi.Commit == "" {
					bi.Commit = s.Value
				}
			case "vcs.time":
				if bi.Date == "" {
					bi.Date = s.Value
				}
			case "vcs.modified":
				modified = s.Value == "true"
			}
		}
		if modified && commit == "" && bi.Commit != "" {
			bi.Commit += "-dirty"
		}
	}
	bi.Version = strings.TrimPrefix(bi.Version, "v")
	if bi.Commit == "" {
		bi.Commit = "unknown"
	}
	if bi.Date == "" {
		bi.Date = "unknown"
	}
	return bi
}

// String is the text of `version` and `--version`.
func (b BuildInfo) String() string {
	return fmt.Sprintf("postgres-seren-replicator %s\n  commit: %s\n  built:  %s\n  go:     %s %s\n",
		b.Version, b.Commit, b.Date, b.Go, b.Platform)
}

// VersionCmd prints the version, commit, build date and Go version.
type VersionCmd struct {
	JSON bool `name:"json" help:"Print a JSON document instead of text."`
}

// Run prints the build information on stdout.
func (c *VersionCmd) Run(env *Env) error {
	bi := buildInfo()
	if c.JSON {
		enc := json.NewEncoder(env.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(bi)
	}
	_, err := fmt.Fprint(env.Stdout, bi.String())
	return err
}
