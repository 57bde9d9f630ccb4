package snapshot

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/serenorg/postgres-seren-replicator/internal/conninfo"
	"github.com/serenorg/postgres-seren-replicator/internal/sqltext"
)

// maxAttempts bounds how often one piece is tried. A retry reconnects and
// imports the same exported snapshot again, which works as long as the
// slot's replication connection is open: a dropped connection costs one
// piece, not the run.
const maxAttempts = 3

// copyBuffer is how much of the COPY stream is gathered before it is passed on.
const copyBuffer = 256 << 10

// copier runs the parallel data copy of one database.
type copier struct {
	src, dst *conninfo.Conn
	snapshot string
	hold     []string // the selected tables, locked by every session (holdTables)
	progress *progressTable
	report   *Progress
	log      *slog.Logger
	// tally, when set, hears of each piece committed (or found committed).
	tally *tableTally

	rows, bytes atomic.Int64
}

// copyStats is what the data step copied.
type copyStats struct {
	Rows, Bytes int64
	Pieces      int
}

// run copies every piece with jobs workers; the first error stops the rest.
func (c *copier) run(ctx context.Context, pieces []piece, jobs int) (copyStats, error) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	queue := make(chan piece)
	var wg sync.WaitGroup
	var firstErr error
	var once sync.Once
	for i := 0; i < max(1, min(jobs, len(pieces))); i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := c.worker(ctx, queue); err != nil {
				once.Do(func() { firstErr = err })
				cancel(err)
			}
		}()
	}
feed:
	for _, p := range pieces {
		select {
		case queue <- p:
		case <-ctx.Done():
			break feed
		}
	}
	close(queue)
	wg.Wait()
	if firstErr == nil && ctx.Err() != nil {
		firstErr = context.Cause(ctx)
	}
	return copyStats{Rows: c.rows.Load(), Bytes: c.bytes.Load(), Pieces: len(pieces)}, firstErr
}

// session is one worker's pair of connections: a source transaction inside
// the exported snapshot and a target session.
type session struct {
	src *pgconn.PgConn
	dst *pgx.Conn
}

func (s *session) close() {
	if s.src != nil {
		s.src.Close(context.Background())
	}
	if s.dst != nil {
		s.dst.Close(context.Background())
	}
	s.src, s.dst = nil, nil
}

func (c *copier) open(ctx context.Context) (*session, error) {
	s := &session{}
	var err error
	if s.src, err = c.src.ConnectPg(ctx); err != nil {
		return nil, err
	}
	if err = importSnapshot(ctx, s.src, c.snapshot); err != nil {
		s.close()
		return nil, err
	}
	if err = holdTables(ctx, s.src, c.hold); err != nil {
		s.close()
		return nil, err
	}
	if s.dst, err = c.dst.Connect(ctx); err != nil {
		s.close()
		return nil, err
	}
	// Safe: a piece's rows and its progress row commit together, and a
	// later synchronous commit (the checkpoint) flushes all earlier WAL.
	if _, err = s.dst.Exec(ctx, "SET synchronous_commit = off; SET row_security = off"); err != nil {
		s.close()
		return nil, fmt.Errorf("configure target session: %w", err)
	}
	return s, nil
}

// importSnapshot starts a repeatable-read transaction that sees exactly what
// the slot's exported snapshot saw. Row-level security is off: a table whose
// policies hide rows from the role fails to copy instead of copying a part.
func importSnapshot(ctx context.Context, conn *pgconn.PgConn, name string) error {
	err := conn.Exec(ctx, "SET idle_in_transaction_session_timeout = 0; SET row_security = off; BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY; SET TRANSACTION SNAPSHOT "+sqltext.Literal(name)).Close()
	if err != nil {
		return fmt.Errorf("import snapshot %s: %w", name, err)
	}
	return nil
}

func (c *copier) worker(ctx context.Context, queue <-chan piece) error {
	var s *session
	defer func() {
		if s != nil {
			s.close()
		}
	}()
	for p := range queue {
		for attempt := 1; ; attempt++ {
			var err error
			if s == nil {
				s, err = c.open(ctx)
			}
			if err == nil {
				err = c.copyPiece(ctx, s, p)
			}
			if err == nil {
				if err := c.tally.pieceDone(ctx, s.dst, p); err != nil {
					return err
				}
				break
			}
			if ctx.Err() != nil {
				return context.Cause(ctx)
			}
			if attempt >= maxAttempts || !retryable(err) {
				return err
			}
			c.log.Warn("copy failed, retrying in the same snapshot", "piece", p.String(), "attempt", attempt, "err", err)
			if s != nil {
				s.close()
				s = nil
			}
			select {
			case <-time.After(time.Duration(attempt) * time.Second):
			case <-ctx.Done():
				return context.Cause(ctx)
			}
		}
	}
	return nil
}

// copyPiece streams one piece from source to target and commits it with its
// progress row, so a piece is either wholly there and recorded, or absent.
func (c *copier) copyPiece(ctx context.Context, s *session, p piece) error {
	done, err := c.progress.done(ctx, s.dst, p.key())
	if err != nil {
		return err
	}
	if done { // committed by an earlier attempt whose answer was lost
		c.report.skip(p)
		return nil
	}
	c.report.start(p)
	started := time.Now()
	tx, err := s.dst.Begin(ctx)
	if err != nil {
		return fmt.Errorf("copy %s: %w", p, err)
	}
	defer tx.Rollback(context.Background())
	pr, pw := io.Pipe()
	counted := &countingWriter{w: pw, add: func(n int64) { c.report.add(p, n) }}
	srcDone := make(chan error, 1)
	go func() {
		// COPY TO hands over one row per write: batching them keeps the
		// target's COPY FROM sending large messages instead of one per row.
		bw := bufio.NewWriterSize(counted, copyBuffer)
		_, err := s.src.CopyTo(ctx, bw, p.sourceSQL())
		if err == nil {
			err = bw.Flush()
		}
		pw.CloseWithError(err)
		srcDone <- err
	}()
	tag, dstErr := s.dst.PgConn().CopyFrom(ctx, pr, p.targetSQL())
	pr.CloseWithError(errTargetDone)
	srcErr := <-srcDone
	switch {
	case srcErr != nil && !errors.Is(srcErr, errTargetDone):
		s.src.Close(context.Background()) // mid-COPY: unusable
		return fmt.Errorf("copy %s: read source: %w", p, srcErr)
	case dstErr != nil:
		return fmt.Errorf("copy %s: write target: %w", p, dstErr)
	}
	rows := tag.RowsAffected()
	if err := c.progress.record(ctx, tx, p.key(), rows, counted.n); err != nil {
		return err
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("copy %s: commit: %w", p, err)
	}
	c.rows.Add(rows)
	c.bytes.Add(counted.n)
	c.report.finish(p, rows, counted.n, time.Since(started))
	return nil
}

var errTargetDone = errors.New("target stopped reading")

type countingWriter struct {
	w   io.Writer
	n   int64
	add func(int64)
}

func (cw *countingWriter) Write(b []byte) (int, error) {
	n, err := cw.w.Write(b)
	cw.n += int64(n)
	cw.add(int64(n))
	return n, err
}

// retryable tells a lost session (network, server restart, terminated
// backend) from a server's refusal of the data, which a retry would only
// repeat.
func retryable(err error) bool {
	if errors.Is(err, ErrRewritten) {
		return false
	}
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		return true
	}
	return strings.HasPrefix(pgErr.Code, "08") || strings.HasPrefix(pgErr.Code, "57P")
}
