package health

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/serenorg/postgres-seren-replicator/stream"
)

func TestJudge(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	base := Report{Database: "app", Slot: "seren_app", SlotExists: true, PublicationExists: true, HasCheckpoint: true,
		ConfirmedFlush: 100, Checkpoint: 100, SourceLSN: 100, CommitTime: now.Add(-time.Hour), AppliedAt: now.Add(-time.Second)}
	tests := []struct {
		name        string
		edit        func(r *Report)
		wantVerdict Verdict
		wantReason  string
		wantLag     time.Duration
	}{
		{"caught up idle", func(r *Report) {}, Healthy, "no sync connected", 0},
		{"caught up streaming", func(r *Report) { r.SlotActive = true }, Healthy, "caught up", 0},
		{"unrelated WAL only", func(r *Report) { r.SourceLSN, r.LagBytes, r.Pending = 500, 400, ptr(false) }, Healthy, "caught up", 0},
		{"pending no sync", func(r *Report) { r.SourceLSN, r.LagBytes, r.Pending = 500, 400, ptr(true) }, Stalled, "no sync", time.Hour},
		{"pending unknown", func(r *Report) { r.SourceLSN, r.LagBytes = 500, 400 }, Stalled, "no sync", time.Hour},
		{"streaming behind", func(r *Report) {
			r.SlotActive, r.SourceLSN, r.LagBytes, r.Pending, r.CommitTime = true, 500, 400, ptr(true), now.Add(-2*time.Second)
		}, Healthy, "streaming", 2 * time.Second},
		{"lagging seconds", func(r *Report) { r.SlotActive, r.SourceLSN, r.LagBytes, r.Pending = true, 500, 400, ptr(true) }, Lagging, "lag 1h0m0s", time.Hour},
		{"lagging bytes", func(r *Report) {
			r.SlotActive, r.LagBytes, r.Pending, r.CommitTime = true, DefaultMaxLagBytes+1, ptr(true), now
		}, Lagging, "256.0 MiB", 0},
		{"stalled active", func(r *Report) {
			r.SlotActive, r.LagBytes, r.Pending, r.AppliedAt = true, 10, ptr(true), now.Add(-time.Hour)
		}, Stalled, "nothing was applied for 1h0m0s", time.Hour},
		{"after init no commit time", func(r *Report) {
			r.SlotActive, r.LagBytes, r.Pending, r.CommitTime, r.AppliedAt = true, 10, ptr(true), time.Time{}, now.Add(-3*time.Second)
		}, Healthy, "streaming", 3 * time.Second},
		{"slot missing", func(r *Report) { r.SlotExists = false }, Broken, "does not exist", 0},
		{"wal lost", func(r *Report) { r.WALStatus = "lost" }, Broken, "lost WAL", 0},
		{"publication missing", func(r *Report) { r.PublicationExists = false }, Broken, "publication", 0},
		{"checkpoint missing", func(r *Report) { r.HasCheckpoint = false }, Broken, "no checkpoint", 0},
		{"checkpoint behind", func(r *Report) { r.Checkpoint = 99 }, Broken, "behind", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := base
			tt.edit(&r)
			judge(&r, stream.SlotState{Database: "app", Plugin: "pgoutput"}, Options{Now: func() time.Time { return now }}.withDefaults("app"))
			if r.Verdict != tt.wantVerdict || !strings.Contains(r.Reason, tt.wantReason) || r.Lag != tt.wantLag {
				t.Errorf("got %s (%s) lag %s, want %s (...%s...) lag %s", r.Verdict, r.Reason, r.Lag, tt.wantVerdict, tt.wantReason, tt.wantLag)
			}
		})
	}
}

func TestJudgeWarnsAboutRetainedWAL(t *testing.T) {
	r := Report{Slot: "s", SlotExists: true, RetainedBytes: 2 << 30}
	judge(&r, stream.SlotState{}, Options{}.withDefaults("app"))
	if len(r.Warnings) != 1 || !strings.Contains(r.Warnings[0], "2.0 GiB") || !strings.Contains(r.Warnings[0], "cleanup") {
		t.Errorf("got %q, want a warning with the size and cleanup", r.Warnings)
	}
	r = Report{Slot: "s", SlotExists: true, SlotActive: true, RetainedBytes: 2 << 30}
	judge(&r, stream.SlotState{}, Options{}.withDefaults("app"))
	if len(r.Warnings) != 0 {
		t.Errorf("got %q, want no warning for an active slot", r.Warnings)
	}
}

func TestReportJSON(t *testing.T) {
	b, err := json.Marshal(Report{Database: "app", SlotExists: true, ConfirmedFlush: 1 << 32, HasCheckpoint: false, Lag: 1500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"confirmed_flush_lsn":"1/0"`, `"checkpoint_lsn":null`, `"lag_seconds":1.5`, `"sequences_behind":[]`, `"commit_time":null`} {
		if !strings.Contains(string(b), want) {
			t.Errorf("%s lacks %s", b, want)
		}
	}
}

func TestFormatBytes(t *testing.T) {
	for n, want := range map[int64]string{0: "0 B", 1023: "1023 B", 1024: "1.0 KiB", 1536: "1.5 KiB", 256 << 20: "256.0 MiB", 3 << 40: "3.0 TiB"} {
		if got := FormatBytes(n); got != want {
			t.Errorf("FormatBytes(%d) = %q, want %q", n, got, want)
		}
	}
}

// Healthy streaming is not the same as ready to repoint the application:
// the status says which, and why not.
func TestReadyForCutover(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	base := Report{Database: "app", Slot: "seren_app", SlotExists: true, SlotActive: true, PublicationExists: true, HasCheckpoint: true,
		ConfirmedFlush: 100, Checkpoint: 100, SourceLSN: 100, CommitTime: now.Add(-time.Hour), AppliedAt: now.Add(-time.Second),
		confirmedAtStart: true}
	opts := Options{Now: func() time.Time { return now }}.withDefaults("app")
	tests := []struct {
		name      string
		edit      func(r *Report)
		ready     bool
		wantInWhy string
	}{
		{"caught up, sequences current", func(r *Report) {}, true, ""},
		{"caught up, sequences behind", func(r *Report) { r.SequencesBehind = []string{`"public"."orders_id_seq"`} }, false, "1 sequence is behind"},
		{"sent all but not confirmed the start position", func(r *Report) { r.confirmedAtStart = false }, false, "not yet confirmed"},
		{"stopped daemon, nothing pending", func(r *Report) { r.SlotActive, r.confirmedAtStart = false, false }, true, ""},
		{"still applying", func(r *Report) { r.SourceLSN, r.LagBytes, r.Pending, r.CommitTime = 500, 400, ptr(true), now }, false, "still being applied"},
		{"broken", func(r *Report) { r.WALStatus = "lost" }, false, "broken"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := base
			tt.edit(&r)
			judge(&r, stream.SlotState{Database: "app", Plugin: "pgoutput"}, opts)
			if r.ReadyForCutover != tt.ready || !strings.Contains(r.NotReadyBecause, tt.wantInWhy) {
				t.Fatalf("ready %v because %q; want %v, %q", r.ReadyForCutover, r.NotReadyBecause, tt.ready, tt.wantInWhy)
			}
			if r.Verdict == Healthy && !strings.Contains(r.Reason, "cutover") {
				t.Errorf("a healthy reason must say whether it is ready for cutover: %q", r.Reason)
			}
			b, _ := json.Marshal(r)
			if !strings.Contains(string(b), fmt.Sprintf(`"ready_for_cutover":%v`, tt.ready)) {
				t.Errorf("JSON lacks ready_for_cutover %v: %s", tt.ready, b)
			}
		})
	}
}
