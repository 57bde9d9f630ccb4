// Package metrics defines the Prometheus collectors of the replicator. They
// live on a registry the caller passes in, never the global one, and their
// labels carry database, table and fixed words only: never a connection
// string, a host or a user.
//
// Every method is safe on a nil *Metrics (it does nothing), so code that runs
// with and without --metrics-addr needs no conditionals.
package metrics

import (
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Namespace prefixes every metric name.
const Namespace = "seren_replicator"

// Label names.
const (
	LabelDatabase  = "database"
	LabelTable     = "table"
	LabelOperation = "operation"
	LabelSide      = "side"
	LabelKind      = "kind"
)

// Operations for RowsApplied.
const (
	OpInsert   = "insert"
	OpUpdate   = "update"
	OpDelete   = "delete"
	OpTruncate = "truncate"
)

// Sides for Reconnect.
const (
	SideSource = "source"
	SideTarget = "target"
)

// Error kinds for Error. Keep the set small and fixed: each kind is a label
// value, and a free-form message would make a new series per message.
const (
	KindConnect    = "connect"    // opening or keeping a connection failed
	KindStream     = "stream"     // reading or decoding the replication stream
	KindApply      = "apply"      // a target statement or commit failed
	KindCheckpoint = "checkpoint" // loading or saving the checkpoint
	KindSnapshot   = "snapshot"   // schema dump or table copy during init
)

// Metrics holds every collector. Build it with New.
type Metrics struct {
	appliedTxns     *prometheus.CounterVec
	appliedRows     *prometheus.CounterVec
	batchChanges    *prometheus.HistogramVec
	applyDuration   *prometheus.HistogramVec
	lagBytes        *prometheus.GaugeVec
	lagSeconds      *prometheus.GaugeVec
	stallSeconds    *prometheus.GaugeVec
	checkpointLSN   *prometheus.GaugeVec
	slotRetained    *prometheus.GaugeVec
	reconnects      *prometheus.CounterVec
	errors          *prometheus.CounterVec
	lastApply       *prometheus.GaugeVec
	snapshotBytes   *prometheus.CounterVec
	snapshotDone    *prometheus.GaugeVec
	snapshotTables  *prometheus.GaugeVec
	snapshotStarted *prometheus.GaugeVec
	tablesAdded     *prometheus.CounterVec
}

// New creates the collectors and registers them on reg. It panics when reg
// already holds collectors of the same names (a programming error, like
// prometheus.MustRegister).
func New(reg prometheus.Registerer) *Metrics {
	db := []string{LabelDatabase}
	m := &Metrics{
		appliedTxns: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Name: "applied_transactions_total",
			Help: "Source transactions applied to the target.",
		}, db),
		appliedRows: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Name: "applied_rows_total",
			Help: "Row changes applied to the target, by table and operation (insert, update, delete, truncate).",
		}, []string{LabelDatabase, LabelTable, LabelOperation}),
		batchChanges: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: Namespace, Name: "apply_batch_changes",
			Help:    "Row changes per applied batch (one target transaction).",
			Buckets: prometheus.ExponentialBuckets(1, 4, 10), // 1 .. 262144
		}, db),
		applyDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: Namespace, Name: "apply_duration_seconds",
			Help:    "Time to apply and commit one batch on the target.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2.5, 12), // 1 ms .. ~24 s
		}, db),
		lagBytes: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: Namespace, Name: "lag_bytes",
			Help: "Source WAL position minus the applied checkpoint.",
		}, db),
		lagSeconds: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: Namespace, Name: "lag_seconds",
			Help: "Age of the oldest source commit received and not yet applied; 0 when caught up.",
		}, db),
		stallSeconds: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: Namespace, Name: "stall_seconds",
			Help: "How long the source has left a request for a reply unanswered (side=source), or the statements running on the target have waited (side=target); 0 when nothing waits.",
		}, []string{LabelDatabase, LabelSide}),
		checkpointLSN: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: Namespace, Name: "checkpoint_lsn",
			Help: "Applied checkpoint position as a number (end LSN of the last applied source transaction).",
		}, db),
		slotRetained: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: Namespace, Name: "slot_retained_wal_bytes",
			Help: "WAL the replication slot keeps on the source.",
		}, db),
		reconnects: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Name: "reconnects_total",
			Help: "Connections reopened after a failure, by side (source, target).",
		}, []string{LabelDatabase, LabelSide}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Name: "errors_total",
			Help: "Errors by kind (connect, stream, apply, checkpoint, snapshot).",
		}, []string{LabelDatabase, LabelKind}),
		lastApply: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: Namespace, Name: "last_apply_timestamp_seconds",
			Help: "Unix time of the last successful commit on the target.",
		}, db),
		snapshotBytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Name: "snapshot_copied_bytes_total",
			Help: "Bytes of table data copied by init.",
		}, db),
		snapshotDone: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: Namespace, Name: "snapshot_tables_done",
			Help: "Tables init has finished copying.",
		}, db),
		snapshotTables: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: Namespace, Name: "snapshot_tables",
			Help: "Tables init copies in total.",
		}, db),
		snapshotStarted: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: Namespace, Name: "snapshot_start_timestamp_seconds",
			Help: "Unix time init started copying.",
		}, db),
		tablesAdded: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Name: "tables_added_total",
			Help: "Tables that joined the migration while sync ran (created on the source after init, or newly selected), copied and streaming.",
		}, db),
	}
	reg.MustRegister(m.appliedTxns, m.appliedRows, m.batchChanges, m.applyDuration,
		m.lagBytes, m.lagSeconds, m.stallSeconds, m.checkpointLSN, m.slotRetained, m.reconnects,
		m.errors, m.lastApply, m.snapshotBytes, m.snapshotDone, m.snapshotTables, m.snapshotStarted, m.tablesAdded)
	return m
}

// NewRegistry returns a fresh registry holding the Go runtime and process
// collectors, ready for New and for serving.
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// BatchApplied records one committed target transaction holding txns source
// transactions and changes row changes, which took d to apply and commit. It
// also sets the last-apply timestamp to now.
func (m *Metrics) BatchApplied(db string, txns, changes int, d time.Duration) {
	if m == nil {
		return
	}
	m.appliedTxns.WithLabelValues(db).Add(float64(txns))
	m.batchChanges.WithLabelValues(db).Observe(float64(changes))
	m.applyDuration.WithLabelValues(db).Observe(d.Seconds())
	m.lastApply.WithLabelValues(db).Set(float64(time.Now().UnixNano()) / 1e9)
}

// RowsApplied counts n row changes applied to table (schema.name) with op
// (OpInsert, OpUpdate, OpDelete, OpTruncate).
func (m *Metrics) RowsApplied(db, table, op string, n int) {
	if m == nil || n == 0 {
		return
	}
	m.appliedRows.WithLabelValues(db, table, op).Add(float64(n))
}

// SetLag sets the lag in bytes and in seconds.
func (m *Metrics) SetLag(db string, bytes int64, lag time.Duration) {
	if m == nil {
		return
	}
	m.lagBytes.WithLabelValues(db).Set(float64(bytes))
	m.lagSeconds.WithLabelValues(db).Set(lag.Seconds())
}

// SetStall sets how long side (SideSource, SideTarget) has kept the
// pipeline waiting.
func (m *Metrics) SetStall(db, side string, d time.Duration) {
	if m == nil {
		return
	}
	m.stallSeconds.WithLabelValues(db, side).Set(d.Seconds())
}

// SetCheckpoint sets the applied checkpoint position.
func (m *Metrics) SetCheckpoint(db string, lsn pglogrepl.LSN) {
	if m == nil {
		return
	}
	m.checkpointLSN.WithLabelValues(db).Set(float64(lsn))
}

// SetSlotRetained sets the WAL the slot keeps on the source, in bytes.
func (m *Metrics) SetSlotRetained(db string, bytes int64) {
	if m == nil {
		return
	}
	m.slotRetained.WithLabelValues(db).Set(float64(bytes))
}

// Reconnect counts a connection reopened after a failure on side (SideSource, SideTarget).
func (m *Metrics) Reconnect(db, side string) {
	if m == nil {
		return
	}
	m.reconnects.WithLabelValues(db, side).Inc()
}

// Error counts an error of kind (KindConnect, KindStream, ...).
func (m *Metrics) Error(db, kind string) {
	if m == nil {
		return
	}
	m.errors.WithLabelValues(db, kind).Inc()
}

// SnapshotStarted records that init starts copying tables tables of db.
func (m *Metrics) SnapshotStarted(db string, tables int) {
	if m == nil {
		return
	}
	m.snapshotTables.WithLabelValues(db).Set(float64(tables))
	m.snapshotDone.WithLabelValues(db).Set(0)
	m.snapshotBytes.WithLabelValues(db).Add(0)
	m.snapshotStarted.WithLabelValues(db).Set(float64(time.Now().UnixNano()) / 1e9)
}

// SnapshotCopied adds n bytes of table data copied by init.
func (m *Metrics) SnapshotCopied(db string, n int64) {
	if m == nil {
		return
	}
	m.snapshotBytes.WithLabelValues(db).Add(float64(n))
}

// SnapshotTableDone records that init finished copying one table.
func (m *Metrics) SnapshotTableDone(db string) {
	if m == nil {
		return
	}
	m.snapshotDone.WithLabelValues(db).Inc()
}

// TablesAdded counts n tables that joined db's migration while sync ran.
func (m *Metrics) TablesAdded(db string, n int) {
	if m == nil {
		return
	}
	m.tablesAdded.WithLabelValues(db).Add(float64(n))
}
