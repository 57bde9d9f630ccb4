package apply

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/serenorg/postgres-seren-replicator/checkpoint"
)

// pipeline collects the statements of one round trip to the target, in
// order: runs of statements sent as one pgconn batch, and COPY segments for
// large multi-row inserts.
type pipeline struct {
	segments   []segment
	statements int
	bytes      int
	// commit is set when the pipeline ends the batch with COMMIT.
	commit *committed
}

// segment is either a run of statements (batch, infos) or one COPY.
type segment struct {
	batch pgconn.Batch
	infos []stmtInfo
	copy  *copyIn
}

// copyIn is a COPY ... FROM STDIN with its data in text format.
type copyIn struct {
	sql  string
	data bytes.Buffer
	info stmtInfo
}

// committed describes a batch whose COMMIT is in a pipeline: once the
// pipeline succeeds, pos is applied on the target, and durable once the
// target's WAL is flushed to commitLSN (durable.go).
type committed struct {
	pos           checkpoint.Position
	txns, changes int
	rows          map[[3]string]int
	started       time.Time
	// sync: the COMMIT waits for its WAL flush (synchronous_commit = on).
	sync bool
	// commitLSN is the target's WAL insert position read right after
	// COMMIT, at or past the end of its commit record; flushLSN how far the
	// target's WAL was flushed then. Set by execute.
	commitLSN, flushLSN pglogrepl.LSN
}

func (p *pipeline) add(sql, prepared string, params [][]byte, info stmtInfo) {
	if n := len(p.segments); n == 0 || p.segments[n-1].copy != nil {
		p.segments = append(p.segments, segment{})
	}
	seg := &p.segments[len(p.segments)-1]
	if prepared != "" {
		seg.batch.ExecPrepared(prepared, params, nil, nil)
	} else {
		seg.batch.ExecParams(sql, params, nil, nil, nil)
	}
	seg.infos = append(seg.infos, info)
	p.statements++
	for _, v := range params {
		p.bytes += len(v)
	}
}

// addCopy queues rows for COPY into table's columns, in COPY's text format.
func (p *pipeline) addCopy(sql string, rows [][][]byte, info stmtInfo) {
	size := 0
	for _, row := range rows {
		for _, v := range row {
			size += len(v) + 1
		}
	}
	c := &copyIn{sql: sql, info: info}
	c.data.Grow(size + size/32 + 16)
	for _, row := range rows {
		for i, v := range row {
			if i > 0 {
				c.data.WriteByte('\t')
			}
			writeCopyText(&c.data, v)
		}
		c.data.WriteByte('\n')
	}
	p.segments = append(p.segments, segment{copy: c})
	p.statements++
	p.bytes += c.data.Len()
}

// copySpecial marks the bytes COPY's text format escapes.
var copySpecial = [256]bool{'\\': true, '\n': true, '\r': true, '\t': true}

// writeCopyText escapes one value for COPY's text format; nil is NULL.
func writeCopyText(b *bytes.Buffer, v []byte) {
	if v == nil {
		b.WriteString(`\N`)
		return
	}
	if len(v) > 32 && bytes.IndexByte(v, '\\') < 0 && bytes.IndexByte(v, '\n') < 0 &&
		bytes.IndexByte(v, '\t') < 0 && bytes.IndexByte(v, '\r') < 0 {
		b.Write(v) // the common case, found by vectorised scans
		return
	}
	start := 0
	for i, c := range v {
		if !copySpecial[c] {
			continue
		}
		b.Write(v[start:i])
		b.WriteByte('\\')
		switch c {
		case '\n':
			b.WriteByte('n')
		case '\r':
			b.WriteByte('r')
		case '\t':
			b.WriteByte('t')
		default:
			b.WriteByte(c)
		}
		start = i + 1
	}
	b.Write(v[start:])
}

func (p *pipeline) empty() bool { return p.statements == 0 }

func (p *pipeline) full(statements, bytes int) bool {
	return p.statements >= statements || p.bytes >= bytes
}

// maxInFlight is how many pipelines may be sent and not yet confirmed: the
// target works through one while the next waits, so it is never idle while
// the applier builds the one after.
const maxInFlight = 2

// flight is one sent pipeline. Its goroutine runs it after the one before
// has finished, and stores err before closing finished.
type flight struct {
	p        *pipeline
	finished chan struct{}
	err      error
}

// errEarlierFailed marks a pipeline not run because the one before failed.
var errEarlierFailed = errors.New("an earlier statement failed")

// flush hands the queued statements to the target without waiting for their
// results, so the next statements are decoded and built while the target
// works. At most maxInFlight pipelines are in flight.
func (a *Applier) flush(ctx context.Context) error {
	if a.pipe.empty() {
		return nil
	}
	if len(a.flights) >= maxInFlight {
		if err := a.awaitOldest(); err != nil {
			return err
		}
	}
	f := &flight{p: a.pipe, finished: make(chan struct{})}
	a.pipe = &pipeline{}
	var prev *flight
	if n := len(a.flights); n > 0 {
		prev = a.flights[n-1]
	}
	a.flights = append(a.flights, f)
	// Executions do not stop with ctx: a graceful stop lets the batch in
	// flight finish, up to the shutdown timeout (execCtx).
	execCtx := a.execCtx
	go func() {
		defer close(f.finished)
		if prev != nil {
			<-prev.finished
			if prev.err != nil {
				f.err = errEarlierFailed
				return
			}
		}
		f.err = a.execute(execCtx, f.p)
	}()
	return nil
}

// await waits for every pipeline in flight (the connection is then idle).
func (a *Applier) await() error {
	for len(a.flights) > 0 {
		if err := a.awaitOldest(); err != nil {
			return err
		}
	}
	return nil
}

// awaitOldest waits for the oldest pipeline in flight. When it committed a
// batch, that batch's position is now applied: it becomes the checkpoint,
// and the acker hears of it and of what the target has flushed. On failure
// the later pipelines are waited out too (they do not run) and the first
// error is returned.
func (a *Applier) awaitOldest() error {
	f := a.flights[0]
	start := time.Now()
	<-f.finished
	a.stats.Busy += time.Since(start)
	a.flights = a.flights[1:]
	if f.err != nil {
		for _, later := range a.flights {
			<-later.finished
		}
		a.flights = nil
		return f.err
	}
	if c := f.p.commit; c != nil {
		c.pos.AppliedAt = time.Now()
		if err := a.b.committed(c.pos); err != nil {
			return fmt.Errorf("apply %s: %w", a.cfg.Database, err)
		}
		a.stats.Transactions += c.txns
		a.stats.Changes += c.changes
		a.stats.Batches++
		if err := a.batchCommitted(c); err != nil {
			return err
		}
		if o := a.cfg.Observer; o != nil {
			o.BatchCommitted(a.cfg.Database, c.txns, c.changes, time.Since(c.started), c.pos)
			for k, n := range c.rows {
				o.RowsApplied(a.cfg.Database, k[0], k[1], n)
			}
		}
	}
	return nil
}

// settle sends what is queued and waits for it: the connection is then idle
// and may run other statements.
func (a *Applier) settle(ctx context.Context) error {
	if err := a.flush(ctx); err != nil {
		return err
	}
	return a.await()
}

// execute runs one pipeline's segments in order and checks each result: an
// UPDATE or DELETE that matched no row means the target has diverged, and is
// an error, never skipped. A pipeline that ends a batch sends COMMIT only
// after every result checked out, so a failed check leaves the checkpoint
// where it was. It runs on the flight's goroutine and touches only p and the
// connection.
func (a *Applier) execute(ctx context.Context, p *pipeline) error {
	a.executing.Store(time.Now().UnixNano())
	defer a.executing.Store(0)
	for i := range p.segments {
		seg := &p.segments[i]
		if seg.copy != nil {
			tag, err := a.conn.CopyFrom(ctx, &seg.copy.data, seg.copy.sql)
			if err != nil {
				return statementError(a.cfg.Database, seg.copy.info, err)
			}
			if err := checkRows(seg.copy.info, tag); err != nil {
				return err
			}
			continue
		}
		mrr := a.conn.ExecBatch(ctx, &seg.batch)
		j := 0
		for ; mrr.NextResult(); j++ {
			tag, err := mrr.ResultReader().Close()
			if err != nil {
				mrr.Close()
				return statementError(a.cfg.Database, infoAt(seg.infos, j), err)
			}
			if err := checkRows(seg.infos[j], tag); err != nil {
				mrr.Close()
				return err
			}
		}
		if err := mrr.Close(); err != nil {
			return statementError(a.cfg.Database, infoAt(seg.infos, j), err)
		}
	}
	if p.commit == nil {
		return nil
	}
	res, err := a.conn.Exec(ctx, commitSQL).ReadAll()
	if err != nil {
		return classify(fmt.Errorf("commit batch on the target database of %s: %w", a.cfg.Database, err))
	}
	if len(res) != 2 || res[0].CommandTag.String() != "COMMIT" {
		return fmt.Errorf("commit batch on the target database of %s: the target rolled the transaction back", a.cfg.Database)
	}
	lsns, err := walPositions(res[1], 2)
	if err != nil {
		return fmt.Errorf("commit batch on the target database of %s: %w", a.cfg.Database, err)
	}
	p.commit.commitLSN, p.commit.flushLSN = lsns[0], lsns[1]
	return nil
}

func infoAt(infos []stmtInfo, i int) stmtInfo {
	if i < len(infos) {
		return infos[i]
	}
	return stmtInfo{}
}

// checkRows compares a statement's row count with what the source says it
// must be.
func checkRows(info stmtInfo, tag pgconn.CommandTag) error {
	n := tag.RowsAffected()
	if info.checkpoint && n != 1 {
		return fmt.Errorf("%s: %w", info.op, ErrCheckpointMoved)
	}
	if info.want != 0 && n != info.want || info.atMostOne && n > 1 {
		what := info.keyValues
		if what == "" {
			what = fmt.Sprintf("%d keys", info.want)
		}
		return permanent(fmt.Errorf("%s on table %s changed %d rows on the target for %s: the target has diverged from the source; run verify, and re-run init for this table",
			info.op, info.table, n, what))
	}
	return nil
}

func statementError(db string, info stmtInfo, err error) error {
	if info.table == "" {
		return classify(fmt.Errorf("apply batch to the target database of %s: %w", db, err))
	}
	key := ""
	if info.keyValues != "" {
		key = " (" + info.keyValues + ")"
	}
	return classify(fmt.Errorf("apply %s on target table %s%s: %w", info.op, info.table, key, err))
}
