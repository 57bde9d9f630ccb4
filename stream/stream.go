// Package stream reads a source database's pgoutput stream over a
// replication connection and hands the decoded messages, in WAL order, to
// the applier. It reports to the source only the position the applier has
// made durable on the target (SetFlushed), never what it merely received.
package stream

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/serenorg/postgres-seren-replicator/internal/conninfo"
	"github.com/serenorg/postgres-seren-replicator/internal/sqltext"
)

// Defaults for Config.
const (
	// DefaultStatusInterval is how often a status update goes to the source
	// even when nothing changed: well inside the default 60 s wal_sender_timeout.
	DefaultStatusInterval = 5 * time.Second
	// DefaultBuffer is how many events may wait between stream and applier.
	DefaultBuffer = 4096
	// DefaultReceiveTimeout is how long the source may send nothing at all
	// before the connection counts as dead: PostgreSQL's own
	// wal_receiver_timeout default.
	DefaultReceiveTimeout = 60 * time.Second
)

// OutputSettings make the source's text output of values match what the
// target parses and prints (dates, intervals, floats, bytea), whatever the
// servers' defaults are.
var OutputSettings = map[string]string{
	"DateStyle":          "ISO, MDY",
	"IntervalStyle":      "postgres",
	"TimeZone":           "UTC",
	"extra_float_digits": "3",
	"bytea_output":       "hex",
}

// Event is one item of the pipeline. Either Msg is set (a decoded pgoutput
// message at WAL position LSN), or it is a keepalive: the source has sent
// everything before KeepaliveLSN, so once the applier has durably applied
// every earlier message it may treat that position as reached.
type Event struct {
	Msg          Message
	LSN          pglogrepl.LSN
	KeepaliveLSN pglogrepl.LSN
}

// Config selects what to stream.
type Config struct {
	// Slot is the logical replication slot to read.
	Slot string
	// Publication names the publication the slot decodes.
	Publication string
	// Start is the position to resume from: the stored checkpoint.
	Start pglogrepl.LSN
	// StatusInterval is the longest time between status updates; DefaultStatusInterval when zero.
	StatusInterval time.Duration
	// Buffer is the capacity of the event channel; DefaultBuffer when zero.
	Buffer int
	// ReceiveTimeout is how long the source may stay silent while the
	// stream waits for it. Halfway, the stream asks the source to reply at
	// once (an idle walsender sends nothing otherwise); when the whole
	// timeout passes without a message, Run returns ErrSilent.
	// DefaultReceiveTimeout when zero.
	ReceiveTimeout time.Duration
}

// Stream is one open replication connection streaming one slot.
type Stream struct {
	conn    *pgconn.PgConn
	cfg     Config
	log     *slog.Logger
	events  chan Event
	flushed atomic.Uint64 // durable on the target: the only position reported as flush
	applied atomic.Uint64 // committed on the target, possibly not yet durable
	nudge   chan struct{}

	received     atomic.Uint64 // highest WAL position seen; reported as write only
	lastReported pglogrepl.LSN
	lastStatus   time.Time
	closeOnce    sync.Once

	// heardAt is when the stream last received a message or, after handing
	// an event to a busy applier, resumed reading (unix nanoseconds).
	heardAt  atomic.Int64
	pingedAt atomic.Int64 // when an unanswered reply request was sent; 0 for none
	pinged   bool         // a reply was requested since the last message
	warned   bool         // the missing reply was logged
	pending  pendingTxns

	// Reads wait on the connection's read deadline rather than a context
	// per message (a context costs a watcher goroutine hand-off per read,
	// which was a quarter of the process's CPU at full speed).
	deadlineMu sync.Mutex
	stopping   bool      // Run's context ended: keep the deadline in the past
	armedAt    time.Time // when the read deadline was last set; zero forces a reset

	coalesce coalescer
}

// A large source transaction cannot be applied before its Commit arrives,
// so while one is being received a read that finds nothing waiting is not
// worth a wake-up per message: the stream pauses for coalesceDelay and then
// reads what has accumulated in one go. Reading each row of a
// million-row transaction as it trickled in cost a read system call and two
// goroutine wake-ups per row, most of our process's CPU on a two-core
// machine that the source and the target share.
const (
	coalesceAfter = 1000                  // messages into a transaction before pausing
	coalesceWait  = 50 * time.Microsecond // a read this slow waited for the source
	coalesceDelay = 1 * time.Millisecond  // the pause: a hundred rows or so at full speed
)

// coalescer decides when the stream pauses before a read (see
// coalesceAfter). It does no I/O and reads no clock.
type coalescer struct {
	txnMessages int  // messages of the transaction being received; 0 between transactions
	waited      bool // the last read waited for the source
	pauses      int  // pauses so far
}

// read records how long a read took.
func (c *coalescer) read(took time.Duration) { c.waited = took >= coalesceWait }

// message records a decoded message.
func (c *coalescer) message(m Message) {
	switch m.(type) {
	case *Begin, *Commit:
		c.txnMessages = 0
	default:
		c.txnMessages++
	}
}

// pause returns how long to wait before the next read: 0 between or early
// in transactions, and while reads find data waiting.
func (c *coalescer) pause() time.Duration {
	if !c.waited || c.txnMessages < coalesceAfter {
		return 0
	}
	c.pauses++
	return coalesceDelay
}

// FenceMessagePrefix is the prefix of the logical message a cutover writes
// to the source's WAL right after its fence (pg_logical_emit_message,
// outside a transaction): the applier checkpoints the next position at
// once. Sources before PostgreSQL 14 do not send messages.
const FenceMessagePrefix = "seren-replicator-cutover"

// Open connects to the source database and starts streaming the slot from
// cfg.Start.
func Open(ctx context.Context, src *conninfo.Conn, cfg Config, log *slog.Logger) (*Stream, error) {
	if cfg.StatusInterval <= 0 {
		cfg.StatusInterval = DefaultStatusInterval
	}
	if cfg.Buffer <= 0 {
		cfg.Buffer = DefaultBuffer
	}
	if cfg.ReceiveTimeout <= 0 {
		cfg.ReceiveTimeout = DefaultReceiveTimeout
	}
	conn, err := src.ConnectReplicationWith(ctx, OutputSettings)
	if err != nil {
		return nil, err
	}
	args := []string{
		"proto_version '1'",
		"publication_names " + sqltext.Literal(pgx.Identifier{cfg.Publication}.Sanitize()),
	}
	if serverMajor(conn) >= 14 {
		// Logical messages, for a cutover's fence mark (FenceMessagePrefix).
		args = append(args, "messages 'true'")
	}
	err = pglogrepl.StartReplication(ctx, conn, pgx.Identifier{cfg.Slot}.Sanitize(), cfg.Start, pglogrepl.StartReplicationOptions{
		Mode: pglogrepl.LogicalReplication, PluginArgs: args,
	})
	if err != nil {
		conn.Close(context.Background())
		if pgErr, ok := errors.AsType[*pgconn.PgError](err); ok && pgErr.Code == "55006" { // object_in_use
			return nil, fmt.Errorf("start replication on slot %s: %s: %w", cfg.Slot, pgErr.Message, ErrSlotActive)
		}
		return nil, fmt.Errorf("start replication on slot %s: %s", cfg.Slot, conninfo.Redact(err.Error()))
	}
	s := &Stream{conn: conn, cfg: cfg, log: log, events: make(chan Event, cfg.Buffer), nudge: make(chan struct{}, 1)}
	s.flushed.Store(uint64(cfg.Start))
	s.applied.Store(uint64(cfg.Start))
	s.received.Store(uint64(cfg.Start))
	s.heard()
	return s, nil
}

// Events is the channel the applier reads. It is closed when Run returns.
func (s *Stream) Events() <-chan Event { return s.events }

// SetApplied records that everything up to lsn is committed on the target,
// and visible there, though perhaps not durable yet: lag is measured to it,
// and it is never reported to the source.
func (s *Stream) SetApplied(lsn pglogrepl.LSN) {
	raise(&s.applied, lsn)
	s.pending.applied(lsn)
}

// SetFlushed records that everything up to lsn is durably applied on the
// target; the next status update reports it to the source.
func (s *Stream) SetFlushed(lsn pglogrepl.LSN) {
	raise(&s.flushed, lsn)
	s.SetApplied(lsn)
	select {
	case s.nudge <- struct{}{}:
	default:
	}
}

// raise moves v up to lsn, never down.
func raise(v *atomic.Uint64, lsn pglogrepl.LSN) {
	for {
		cur := v.Load()
		if uint64(lsn) <= cur || v.CompareAndSwap(cur, uint64(lsn)) {
			return
		}
	}
}

// Flushed is the durable position last recorded with SetFlushed.
func (s *Stream) Flushed() pglogrepl.LSN { return pglogrepl.LSN(s.flushed.Load()) }

// Applied is the committed position last recorded with SetApplied or
// SetFlushed.
func (s *Stream) Applied() pglogrepl.LSN { return pglogrepl.LSN(s.applied.Load()) }

// Run receives messages until ctx ends or the connection fails, delivering
// them on Events. Before returning it sends a final status update with the
// flushed position. Run closes Events.
func (s *Stream) Run(ctx context.Context) error {
	defer close(s.events)
	defer func() {
		// A last report, on a fresh context: ctx may already be done. Not
		// on a connection that failed, which cannot carry it: pgconn is
		// closing it in a goroutine of its own that writes to it.
		if s.conn.IsClosed() {
			return
		}
		fctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = s.sendStatus(fctx, false)
	}()
	stop := context.AfterFunc(ctx, func() {
		s.deadlineMu.Lock()
		defer s.deadlineMu.Unlock()
		s.stopping = true
		_ = s.conn.Conn().SetReadDeadline(time.Unix(1, 0)) // wake the read now
	})
	defer stop()
	for {
		if ctx.Err() != nil {
			return nil
		}
		if err := s.maybeSendStatus(ctx); err != nil {
			return err
		}
		if d := s.coalesce.pause(); d > 0 {
			time.Sleep(d)
		}
		start := s.armDeadline()
		raw, err := s.conn.ReceiveMessage(context.Background())
		s.coalesce.read(time.Since(start))
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if pgconn.Timeout(err) {
				s.armedAt = time.Time{}
				if err := s.checkSilence(ctx); err != nil {
					return err
				}
				continue
			}
			return fmt.Errorf("receive from slot %s: %s: %w", s.cfg.Slot, conninfo.Redact(err.Error()), ErrConnection)
		}
		s.heard()
		switch msg := raw.(type) {
		case *pgproto3.CopyData:
			if err := s.handleCopyData(ctx, msg.Data); err != nil {
				return err
			}
		case *pgproto3.ErrorResponse:
			return fmt.Errorf("slot %s: source error: %s (SQLSTATE %s)", s.cfg.Slot, msg.Message, msg.Code)
		case *pgproto3.CopyDone:
			return fmt.Errorf("slot %s: source ended the stream: %w", s.cfg.Slot, ErrConnection)
		}
	}
}

// ErrConnection marks a lost or ended replication connection: worth a retry.
var ErrConnection = errors.New("replication connection lost")

// ErrSilent marks a connection on which the source sent nothing, not even
// a reply to a request for one, for the whole receive timeout: the
// connection is dead or the network path drops packets. It wraps
// ErrConnection, so a retry (a new connection) is the cure.
var ErrSilent = fmt.Errorf("source silent: %w", ErrConnection)

// ErrProtocol marks a message the stream cannot decode: the same bytes come
// again after a reconnect, so a retry cannot help.
var ErrProtocol = errors.New("replication protocol error")

func (s *Stream) handleCopyData(ctx context.Context, data []byte) error {
	if len(data) == 0 {
		return fmt.Errorf("slot %s: empty CopyData message: %w", s.cfg.Slot, ErrProtocol)
	}
	switch data[0] {
	case pglogrepl.PrimaryKeepaliveMessageByteID:
		ka, err := pglogrepl.ParsePrimaryKeepaliveMessage(data[1:])
		if err != nil {
			return fmt.Errorf("slot %s: keepalive: %w: %w", s.cfg.Slot, ErrProtocol, err)
		}
		s.advanceReceived(ka.ServerWALEnd)
		if ka.ReplyRequested {
			if err := s.sendStatus(ctx, false); err != nil {
				return err
			}
		}
		// Keepalives travel through the pipeline so the applier can move the
		// checkpoint past WAL that holds nothing for us; never block on them.
		select {
		case s.events <- Event{KeepaliveLSN: ka.ServerWALEnd}:
		default:
		}
	case pglogrepl.XLogDataByteID:
		xld, err := pglogrepl.ParseXLogData(data[1:])
		if err != nil {
			return fmt.Errorf("slot %s: XLogData: %w: %w", s.cfg.Slot, ErrProtocol, err)
		}
		msg, err := Decode(xld.WALData)
		if err != nil {
			return fmt.Errorf("slot %s: decode pgoutput at %s: %w: %w", s.cfg.Slot, xld.WALStart, ErrProtocol, err)
		}
		s.advanceReceived(xld.WALStart)
		s.coalesce.message(msg)
		if b, ok := msg.(*Begin); ok && b.FinalLSN >= s.Flushed() {
			s.pending.begun(b.FinalLSN, b.CommitTime)
		}
		return s.deliver(ctx, Event{Msg: msg, LSN: xld.WALStart})
	default:
		return fmt.Errorf("slot %s: unknown replication message %q: %w", s.cfg.Slot, data[0], ErrProtocol)
	}
	return nil
}

// deliver hands an event to the applier. While the applier is busy (the
// channel is full) it keeps sending status updates, so a long apply never
// makes the walsender time out.
func (s *Stream) deliver(ctx context.Context, ev Event) error {
	select {
	case s.events <- ev:
		return nil
	default:
	}
	// Nothing is read meanwhile, so the source's silence is not measured.
	defer s.heard()
	tick := time.NewTicker(s.cfg.StatusInterval / 2)
	defer tick.Stop()
	for {
		select {
		case s.events <- ev:
			return nil
		case <-tick.C:
			if err := s.sendStatus(ctx, false); err != nil {
				return err
			}
		case <-ctx.Done():
			return nil
		}
	}
}

func (s *Stream) advanceReceived(lsn pglogrepl.LSN) {
	if uint64(lsn) > s.received.Load() {
		s.received.Store(uint64(lsn)) // only Run's goroutine writes it
	}
}

// Received is the highest WAL position the source has sent.
func (s *Stream) Received() pglogrepl.LSN { return pglogrepl.LSN(s.received.Load()) }

// armDeadline makes the next read return by the time a status update is
// due. While messages flow it resets the deadline at most every 100 ms.
func (s *Stream) armDeadline() (now time.Time) {
	now = time.Now()
	if now.Sub(s.armedAt) < 100*time.Millisecond {
		return now
	}
	s.deadlineMu.Lock()
	defer s.deadlineMu.Unlock()
	if s.stopping {
		return now
	}
	s.armedAt = now
	_ = s.conn.Conn().SetReadDeadline(now.Add(s.untilNextStatus()))
	return now
}

func (s *Stream) untilNextStatus() time.Duration {
	d := time.Until(s.lastStatus.Add(s.cfg.StatusInterval))
	if silence := time.Until(s.heardTime().Add(s.cfg.ReceiveTimeout / 2)); silence > 0 && silence < d {
		d = silence // wake up to ask the source for a reply
	}
	if d > time.Second {
		d = time.Second // wake up to report newly flushed positions promptly
	}
	if d < 10*time.Millisecond {
		d = 10 * time.Millisecond
	}
	return d
}

// maybeSendStatus sends a status update when the interval has passed or the
// flushed position moved.
func (s *Stream) maybeSendStatus(ctx context.Context) error {
	moved := false
	select {
	case <-s.nudge:
		moved = s.Flushed() != s.lastReported
	default:
	}
	if moved || time.Since(s.lastStatus) >= s.cfg.StatusInterval {
		return s.sendStatus(ctx, false)
	}
	return nil
}

// sendStatus reports write = received and flush = apply = durably applied.
// All three are set explicitly: pglogrepl fills zero flush/apply with write.
// With replyNow the source is asked to answer at once.
func (s *Stream) sendStatus(ctx context.Context, replyNow bool) error {
	flushed := s.Flushed()
	write := s.Received()
	if write < flushed {
		write = flushed
	}
	err := pglogrepl.SendStandbyStatusUpdate(ctx, s.conn, pglogrepl.StandbyStatusUpdate{
		WALWritePosition: write,
		WALFlushPosition: flushed,
		WALApplyPosition: flushed,
		ClientTime:       time.Now(),
		ReplyRequested:   replyNow,
	})
	if err != nil {
		return fmt.Errorf("slot %s: send status update: %s: %w", s.cfg.Slot, conninfo.Redact(err.Error()), ErrConnection)
	}
	s.lastReported = flushed
	s.lastStatus = time.Now()
	s.armedAt = time.Time{} // a context on the send may have cleared the read deadline
	return nil
}

// Close closes the replication connection.
func (s *Stream) Close() {
	s.closeOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s.conn.Close(ctx)
	})
}
