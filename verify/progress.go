package verify

import (
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/schollz/progressbar/v3"
)

// Progress receives progress events of one database at a time. Rows and
// TableDone are called from several goroutines.
type Progress interface {
	// Start begins a database of tables tables and about rows rows.
	Start(db string, tables int, rows int64)
	// Rows reports rows compared.
	Rows(n int64)
	// TableDone reports one more table finished.
	TableDone()
	// Finish ends the database.
	Finish()
}

type noProgress struct{}

func (noProgress) Start(string, int, int64) {}
func (noProgress) Rows(int64)               {}
func (noProgress) TableDone()               {}
func (noProgress) Finish()                  {}

// BarProgress draws a progress bar on a terminal: tables done, rows per
// second and the estimated time left.
type BarProgress struct {
	w      io.Writer
	mu     sync.Mutex
	bar    *progressbar.ProgressBar
	db     string
	tables int
	done   int
}

// NewBarProgress draws on w, which should be a terminal.
func NewBarProgress(w io.Writer) *BarProgress { return &BarProgress{w: w} }

// Start implements Progress.
func (p *BarProgress) Start(db string, tables int, rows int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.db, p.tables, p.done = db, tables, 0
	p.bar = progressbar.NewOptions64(max(rows, 1),
		progressbar.OptionSetWriter(p.w),
		progressbar.OptionSetDescription(p.describe()),
		progressbar.OptionShowCount(),
		progressbar.OptionShowIts(),
		progressbar.OptionSetItsString("rows"),
		progressbar.OptionSetPredictTime(true),
		progressbar.OptionThrottle(200*time.Millisecond),
		progressbar.OptionClearOnFinish(),
		progressbar.OptionFullWidth(),
	)
}

func (p *BarProgress) describe() string {
	return fmt.Sprintf("%s: %d/%d tables", p.db, p.done, p.tables)
}

// Rows implements Progress.
func (p *BarProgress) Rows(n int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.bar == nil {
		return
	}
	// The total is an estimate: grow it rather than overflow the bar.
	if cur := p.bar.State().CurrentNum; cur+n >= p.bar.GetMax64() {
		p.bar.ChangeMax64(cur + n + 1)
	}
	p.bar.Add64(n)
}

// TableDone implements Progress.
func (p *BarProgress) TableDone() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.done++
	if p.bar != nil {
		p.bar.Describe(p.describe())
	}
}

// Finish implements Progress.
func (p *BarProgress) Finish() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.bar != nil {
		p.bar.Finish()
		p.bar = nil
	}
}

// LogProgress logs a progress line every Interval, for runs without a terminal.
// Its ETA divides the rows left by the rate of the last interval, not of
// the whole run: rows are counted as whole ranges finish, so after a long
// range or a wait for the sync, a rate since the start would promise an
// end that has already passed. When no range finished in the last interval,
// or more rows were compared than the estimate, the ETA is "unknown".
type LogProgress struct {
	log      *slog.Logger
	interval time.Duration
	rows     atomic.Int64
	done     atomic.Int64
	stop     chan struct{}
	wg       sync.WaitGroup
}

// NewLogProgress logs to log every interval.
func NewLogProgress(log *slog.Logger, interval time.Duration) *LogProgress {
	return &LogProgress{log: log, interval: interval}
}

// Start implements Progress: it starts the logging goroutine, which Finish stops.
func (p *LogProgress) Start(db string, tables int, rows int64) {
	p.rows.Store(0)
	p.done.Store(0)
	p.stop = make(chan struct{})
	p.wg.Add(1)
	started := time.Now()
	go func() {
		defer p.wg.Done()
		tick := time.NewTicker(p.interval)
		defer tick.Stop()
		lastN, lastT := int64(0), started
		for {
			select {
			case <-p.stop:
				return
			case <-tick.C:
			}
			n, now := p.rows.Load(), time.Now()
			rate := float64(n) / now.Sub(started).Seconds()
			attrs := []any{"db", db, "tables_done", p.done.Load(), "tables", tables,
				"rows", n, "rows_estimated", rows, "rows_per_second", int64(rate)}
			attrs = append(attrs, "eta", eta(rows-n, float64(n-lastN)/now.Sub(lastT).Seconds()))
			lastN, lastT = n, now
			p.log.Info("verify progress", attrs...)
		}
	}()
}

// eta is the time left for left rows at rate rows per second, or "unknown"
// when nothing moved or the estimate was exceeded.
func eta(left int64, rate float64) string {
	if left <= 0 || rate <= 0 {
		return "unknown"
	}
	return time.Duration(float64(left) / rate * float64(time.Second)).Round(time.Second).String()
}

// Rows implements Progress.
func (p *LogProgress) Rows(n int64) { p.rows.Add(n) }

// TableDone implements Progress.
func (p *LogProgress) TableDone() { p.done.Add(1) }

// Finish implements Progress.
func (p *LogProgress) Finish() {
	if p.stop != nil {
		close(p.stop)
		p.wg.Wait()
		p.stop = nil
	}
}
