package snapshot

import (
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/schollz/progressbar/v3"
)

// DefaultProgressInterval is how often progress is logged when the output is
// not a terminal.
const DefaultProgressInterval = 10 * time.Second

// Progress reports the data copy: a live bar on a terminal (overall bytes,
// rate and ETA, with the tables in flight listed beneath it and a line per
// finished table), periodic log lines otherwise. A nil *Progress reports
// nothing.
type Progress struct {
	// Observer, when set, hears of the copy as it goes (for metrics).
	Observer CopyObserver

	mu       sync.Mutex
	bar      *progressbar.ProgressBar
	w        io.Writer
	log      *slog.Logger
	interval time.Duration
	stop     chan struct{}
	stopped  chan struct{}

	db                 string
	total, done        int64
	rows               int64
	pieces, piecesDone int
	active             map[string]time.Time
	started            time.Time
	left               map[*copyTable]int // pieces not finished, per table
}

// CopyObserver hears of init's data copy, one database at a time. Copied
// and PieceCopied are called from several goroutines.
type CopyObserver interface {
	// CopyStarted reports that db's copy of tables tables begins.
	CopyStarted(db string, tables int)
	// Copied reports n bytes of table (schema.name) streamed to the target.
	Copied(db, table string, n int64)
	// PieceCopied reports rows of table committed on the target; tableDone
	// is true when it was the table's last piece.
	PieceCopied(db, table string, rows int64, tableDone bool)
}

// NewProgress makes a reporter. On a terminal it draws on w; otherwise it
// logs to log every interval (DefaultProgressInterval when zero).
func NewProgress(w io.Writer, terminal bool, log *slog.Logger, interval time.Duration) *Progress {
	if interval <= 0 {
		interval = DefaultProgressInterval
	}
	p := &Progress{log: log, interval: interval}
	if terminal {
		p.w = w
	}
	return p
}

// begin starts reporting one database's copy of about total bytes.
func (p *Progress) begin(db string, total int64, all []piece) {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	pieces := len(all)
	p.db, p.total, p.done, p.rows, p.pieces, p.piecesDone = db, total, 0, 0, pieces, 0
	p.left = map[*copyTable]int{}
	for _, pc := range all {
		p.left[pc.table]++
	}
	if p.Observer != nil {
		p.Observer.CopyStarted(db, len(p.left))
	}
	p.active = map[string]time.Time{}
	p.started = time.Now()
	p.stop, p.stopped = make(chan struct{}), make(chan struct{})
	if p.w != nil {
		p.bar = progressbar.NewOptions64(max(total, 1),
			progressbar.OptionSetWriter(p.w),
			progressbar.OptionSetDescription("copy "+db),
			progressbar.OptionShowBytes(true),
			progressbar.OptionShowTotalBytes(true),
			progressbar.OptionSetPredictTime(true),
			progressbar.OptionSetElapsedTime(true),
			progressbar.OptionThrottle(200*time.Millisecond),
			progressbar.OptionSetWidth(30),
			progressbar.OptionUseANSICodes(true),
			progressbar.OptionSetRenderBlankState(true),
		)
		close(p.stopped)
		return
	}
	go p.logLoop(p.stop, p.stopped)
}

func (p *Progress) logLoop(stop, stopped chan struct{}) {
	defer close(stopped)
	t := time.NewTicker(p.interval)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			p.mu.Lock()
			elapsed := time.Since(p.started)
			rate := float64(p.done) / max(elapsed.Seconds(), 0.001)
			eta := "unknown"
			if rate > 0 && p.total > p.done {
				eta = time.Duration(float64(p.total-p.done) / rate * float64(time.Second)).Round(time.Second).String()
			}
			p.log.Info("copy progress", "db", p.db, "bytes", p.done, "of_bytes", p.total, "rows", p.rows,
				"pieces_done", p.piecesDone, "pieces", p.pieces, "rate", FormatBytes(int64(rate))+"/s", "eta", eta)
			p.mu.Unlock()
		}
	}
}

// end stops reporting the current database.
func (p *Progress) end() {
	if p == nil || p.stop == nil {
		return
	}
	close(p.stop)
	<-p.stopped
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.bar != nil {
		_ = p.bar.Finish()
		fmt.Fprintln(p.w)
		p.bar = nil
	}
	p.stop = nil
}

func (p *Progress) add(pc piece, n int64) {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.done += n
	if p.Observer != nil {
		p.Observer.Copied(p.db, pc.table.String(), n)
	}
	if p.bar != nil {
		if p.done > p.total { // the stream is larger than the tables on disk
			p.total = p.done + p.done/10
			p.bar.ChangeMax64(p.total)
		}
		_ = p.bar.Add64(n)
	}
}

func (p *Progress) start(pc piece) {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.active[pc.String()] = time.Now()
	p.describe()
}

func (p *Progress) skip(pc piece) { p.finish(pc, 0, 0, 0) }

func (p *Progress) finish(pc piece, rows, bytes int64, took time.Duration) {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.active, pc.String())
	p.rows += rows
	p.piecesDone++
	p.left[pc.table]--
	if p.Observer != nil {
		p.Observer.PieceCopied(p.db, pc.table.String(), rows, p.left[pc.table] == 0)
	}
	if p.bar != nil {
		_ = p.bar.Clear()
		fmt.Fprintf(p.w, "  done %-50s %12d rows %10s %8s %10s/s\n", pc.String(), rows, FormatBytes(bytes),
			took.Round(time.Millisecond), FormatBytes(int64(float64(bytes)/max(took.Seconds(), 0.001))))
		p.describe()
		return
	}
	p.log.Debug("copied", "db", p.db, "piece", pc.String(), "rows", rows, "bytes", bytes, "took", took)
}

// describe shows the pieces done and the rows copied so far; finished
// pieces get a line of their own above the bar.
func (p *Progress) describe() {
	if p.bar == nil {
		return
	}
	p.bar.Describe(fmt.Sprintf("copy %s: %d/%d pieces, %d in flight, %d rows", p.db, p.piecesDone, p.pieces, len(p.active), p.rows))
}

// FormatBytes renders a byte count with a binary unit.
func FormatBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
