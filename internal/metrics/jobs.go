package metrics

import "github.com/prometheus/client_golang/prometheus"

// Jobs holds the collectors of the one-shot commands beyond the daemon's:
// init's copy per table and verify's key ranges. Build it with NewJobs.
// Every method is safe on a nil *Jobs.
type Jobs struct {
	tableBytes      *prometheus.CounterVec
	tableRows       *prometheus.CounterVec
	verifyRanges    *prometheus.GaugeVec
	verifyDone      *prometheus.CounterVec
	verifyDiffering *prometheus.CounterVec
	verifyRows      *prometheus.CounterVec
}

// NewJobs creates the collectors and registers them on reg (which may also
// hold New's).
func NewJobs(reg prometheus.Registerer) *Jobs {
	db := []string{LabelDatabase}
	table := []string{LabelDatabase, LabelTable}
	j := &Jobs{
		tableBytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Name: "snapshot_table_copied_bytes_total",
			Help: "Bytes of one table's data copied by init, counted as they stream.",
		}, table),
		tableRows: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Name: "snapshot_table_copied_rows_total",
			Help: "Rows of one table copied by init, counted as each piece commits on the target.",
		}, table),
		verifyRanges: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: Namespace, Name: "verify_ranges",
			Help: "Key ranges verify compares in total.",
		}, db),
		verifyDone: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Name: "verify_ranges_done_total",
			Help: "Key ranges verify has compared.",
		}, db),
		verifyDiffering: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Name: "verify_ranges_differing_total",
			Help: "Key ranges whose source and target rows differ.",
		}, db),
		verifyRows: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Name: "verify_rows_compared_total",
			Help: "Source rows in the key ranges verify has compared.",
		}, db),
	}
	reg.MustRegister(j.tableBytes, j.tableRows, j.verifyRanges, j.verifyDone, j.verifyDiffering, j.verifyRows)
	return j
}

// TableCopied adds n bytes of table's data streamed to the target.
func (j *Jobs) TableCopied(db, table string, n int64) {
	if j == nil {
		return
	}
	j.tableBytes.WithLabelValues(db, table).Add(float64(n))
}

// TableRows adds rows of table committed on the target (0 makes the series
// exist, for a table with no rows).
func (j *Jobs) TableRows(db, table string, rows int64) {
	if j == nil {
		return
	}
	j.tableRows.WithLabelValues(db, table).Add(float64(rows))
}

// VerifyPlanned sets the ranges verify compares for db, and starts its
// counters at zero.
func (j *Jobs) VerifyPlanned(db string, ranges int) {
	if j == nil {
		return
	}
	j.verifyRanges.WithLabelValues(db).Set(float64(ranges))
	j.verifyDone.WithLabelValues(db).Add(0)
	j.verifyDiffering.WithLabelValues(db).Add(0)
	j.verifyRows.WithLabelValues(db).Add(0)
}

// VerifyRange counts one compared range of rows source rows.
func (j *Jobs) VerifyRange(db string, rows int64, differs bool) {
	if j == nil {
		return
	}
	j.verifyDone.WithLabelValues(db).Inc()
	j.verifyRows.WithLabelValues(db).Add(float64(rows))
	if differs {
		j.verifyDiffering.WithLabelValues(db).Inc()
	}
}

// StartAtZero makes the daemon's error and reconnect counters of each
// database exist at zero from the start, for every side and kind, so that
// rate() and increase() see the first failure and a dashboard shows 0
// rather than no data.
func (m *Metrics) StartAtZero(dbs ...string) {
	if m == nil {
		return
	}
	for _, db := range dbs {
		for _, side := range []string{SideSource, SideTarget} {
			m.reconnects.WithLabelValues(db, side).Add(0)
		}
		for _, kind := range []string{KindConnect, KindStream, KindApply, KindCheckpoint} {
			m.errors.WithLabelValues(db, kind).Add(0)
		}
		m.tablesAdded.WithLabelValues(db).Add(0)
	}
}
