package metrics

import (
	"strings"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
)

func TestNilMetricsIsNoop(t *testing.T) {
	var m *Metrics
	m.BatchApplied("db", 1, 2, time.Second)
	m.RowsApplied("db", "public.t", OpInsert, 3)
	m.SetLag("db", 1, time.Second)
	m.SetCheckpoint("db", 1)
	m.SetSlotRetained("db", 1)
	m.Reconnect("db", SideSource)
	m.Error("db", KindApply)
	m.SnapshotStarted("db", 2)
	m.SnapshotCopied("db", 10)
	m.SnapshotTableDone("db")
}

func TestValues(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := New(reg)
	m.BatchApplied("app", 3, 10, 20*time.Millisecond)
	m.BatchApplied("app", 2, 5, 40*time.Millisecond)
	m.RowsApplied("app", "public.t", OpInsert, 7)
	m.RowsApplied("app", "public.t", OpInsert, 1)
	m.RowsApplied("app", "public.t", OpDelete, 2)
	m.SetLag("app", 4096, 1500*time.Millisecond)
	lsn, _ := pglogrepl.ParseLSN("1/0")
	m.SetCheckpoint("app", lsn)
	m.SetSlotRetained("app", 1<<20)
	m.Reconnect("app", SideTarget)
	m.Reconnect("app", SideTarget)
	m.Error("app", KindStream)
	m.SnapshotStarted("app", 4)
	m.SnapshotCopied("app", 100)
	m.SnapshotCopied("app", 50)
	m.SnapshotTableDone("app")

	tests := []struct {
		name string
		c    prometheus.Collector
		want float64
	}{
		{"transactions", m.appliedTxns.WithLabelValues("app"), 5},
		{"rows insert", m.appliedRows.WithLabelValues("app", "public.t", OpInsert), 8},
		{"rows delete", m.appliedRows.WithLabelValues("app", "public.t", OpDelete), 2},
		{"lag bytes", m.lagBytes.WithLabelValues("app"), 4096},
		{"lag seconds", m.lagSeconds.WithLabelValues("app"), 1.5},
		{"checkpoint", m.checkpointLSN.WithLabelValues("app"), 1 << 32},
		{"retained", m.slotRetained.WithLabelValues("app"), 1 << 20},
		{"reconnects", m.reconnects.WithLabelValues("app", SideTarget), 2},
		{"errors", m.errors.WithLabelValues("app", KindStream), 1},
		{"snapshot bytes", m.snapshotBytes.WithLabelValues("app"), 150},
		{"snapshot done", m.snapshotDone.WithLabelValues("app"), 1},
		{"snapshot tables", m.snapshotTables.WithLabelValues("app"), 4},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := testutil.ToFloat64(tt.c); got != tt.want {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
	if got := testutil.ToFloat64(m.lastApply.WithLabelValues("app")); time.Since(time.Unix(int64(got), 0)) > time.Minute {
		t.Errorf("last apply timestamp %v is not now", got)
	}
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() == Namespace+"_apply_batch_changes" {
			h := f.GetMetric()[0].GetHistogram()
			if h.GetSampleCount() != 2 || h.GetSampleSum() != 15 {
				t.Errorf("batch histogram count %d sum %v, want 2 and 15", h.GetSampleCount(), h.GetSampleSum())
			}
		}
	}
}

// TestNamingAndLabels checks Prometheus naming conventions and that labels
// are only the fixed, connection-free set.
func TestNamingAndLabels(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := New(reg)
	m.BatchApplied("d", 1, 1, time.Millisecond)
	m.RowsApplied("d", "s.t", OpUpdate, 1)
	m.SetLag("d", 0, 0)
	m.SetCheckpoint("d", 0)
	m.SetSlotRetained("d", 0)
	m.Reconnect("d", SideSource)
	m.Error("d", KindConnect)
	m.SnapshotStarted("d", 1)
	m.SnapshotTableDone("d")
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	if got, want := len(families), 15; got != want {
		t.Errorf("got %d families, want %d (a collector without a sample or a new one untested?)", got, want)
	}
	allowed := map[string]bool{LabelDatabase: true, LabelTable: true, LabelOperation: true, LabelSide: true, LabelKind: true}
	for _, f := range families {
		name := f.GetName()
		if !strings.HasPrefix(name, Namespace+"_") {
			t.Errorf("%s lacks the %s_ prefix", name, Namespace)
		}
		if f.GetType() == dto.MetricType_COUNTER && !strings.HasSuffix(name, "_total") {
			t.Errorf("counter %s does not end in _total", name)
		}
		if f.GetType() != dto.MetricType_COUNTER && strings.HasSuffix(name, "_total") {
			t.Errorf("%s ends in _total but is not a counter", name)
		}
		for _, metric := range f.GetMetric() {
			for _, l := range metric.GetLabel() {
				if !allowed[l.GetName()] {
					t.Errorf("%s has label %q outside the allowed set", name, l.GetName())
				}
			}
		}
	}
}

func TestNewRegistryServesRuntimeMetrics(t *testing.T) {
	reg := NewRegistry()
	New(reg)
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, f := range families {
		found = found || f.GetName() == "go_goroutines"
	}
	if !found {
		t.Error("go_goroutines missing from NewRegistry")
	}
}
