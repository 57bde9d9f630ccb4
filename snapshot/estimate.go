package snapshot

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/serenorg/postgres-seren-replicator/internal/plan"
	"github.com/serenorg/postgres-seren-replicator/internal/selection"
)

// CopyBytesPerSecond and IndexBytesPerSecond turn sizes into the time
// estimate init shows before it starts. They are measured, not guessed: on
// the development machine (2 shared cores, PostgreSQL 15 source and target
// on the same host, fsync off, other work running), `init --yes --jobs 2`
// of a pgbench database at scale 30 (pgbench_accounts: 384 MiB of heap,
// 64 MiB of primary key) copied the data in 4.3-4.6 s, about 85 MiB/s of
// source heap, and built the key in 1.7 s, about 38 MiB/s of index. In the
// same runs the floor (two binary COPY pipes by key range through psql, then
// ADD PRIMARY KEY) took 4.4-4.7 s and 1.6-1.9 s. Real servers with more
// cores and faster disks do better, a network between them worse: the
// figure is a rough guide, and the live progress shows the real rate.
const (
	CopyBytesPerSecond  = 85 << 20
	IndexBytesPerSecond = 38 << 20
)

// Estimate is the size of one database's copy and how long it should take.
type Estimate struct {
	Database string
	// DatabaseBytes is pg_database_size of the source database.
	DatabaseBytes int64
	// TableBytes is the heap and TOAST size of the selected tables (what is copied).
	TableBytes int64
	// IndexBytes is the size of their indexes (what is rebuilt).
	IndexBytes int64
	Tables     int
	// Encoding is the source database's encoding, for creating the target.
	Encoding string
	// SourceMajor is the source server's major version.
	SourceMajor int
	Duration    time.Duration
	// NoKey lists tables without a primary key or replica identity (leaf
	// tables): once published, UPDATE and DELETE on them fail on the source.
	NoKey []selection.Table
	// Unlogged lists unlogged tables: logical decoding never sees their
	// changes, and a publication cannot include them.
	Unlogged []selection.Table
	// Partitioned lists partitioned tables on a source older than
	// PostgreSQL 13, which cannot publish them.
	Partitioned []selection.Table
}

// EstimateDatabase measures db on the source from the catalog, without
// scanning any table.
func EstimateDatabase(ctx context.Context, db plan.Database) (Estimate, error) {
	e := Estimate{Database: db.Name}
	conn, err := db.Source.Connect(ctx)
	if err != nil {
		return e, err
	}
	defer conn.Close(context.Background())
	e.SourceMajor = serverMajor(conn.PgConn())
	if err := conn.QueryRow(ctx, `SELECT pg_database_size(current_database()), pg_encoding_to_char(encoding)
		FROM pg_database WHERE datname = current_database()`).Scan(&e.DatabaseBytes, &e.Encoding); err != nil {
		return e, fmt.Errorf("size of database %s: %w", db.Name, err)
	}
	if e.SourceMajor < 13 {
		for _, t := range db.Tables {
			var partitioned bool
			if err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_class WHERE oid = to_regclass($1) AND relkind = 'p')`,
				pgx.Identifier{t.Schema, t.Name}.Sanitize()).Scan(&partitioned); err != nil {
				return e, fmt.Errorf("look up %s: %w", t.Qualified(), err)
			}
			if partitioned {
				e.Partitioned = append(e.Partitioned, selection.Table{Database: db.Name, Schema: t.Schema, Name: t.Name})
			}
		}
	}
	tables, err := listCopyTables(ctx, conn, db.Tables)
	if err != nil {
		return e, err
	}
	e.Tables = len(tables)
	for _, t := range tables {
		e.TableBytes += t.Bytes
		var idx int64
		if err := conn.QueryRow(ctx, `SELECT pg_indexes_size($1::regclass)`, t.ident()).Scan(&idx); err != nil {
			return e, fmt.Errorf("index size of %s: %w", t, err)
		}
		e.IndexBytes += idx
		var keyed, unlogged bool
		if err := conn.QueryRow(ctx, `SELECT c.relreplident = 'f' OR (c.relreplident = 'i' AND EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisreplident))
			OR (c.relreplident = 'd' AND EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary)),
			c.relpersistence = 'u'
			FROM pg_class c WHERE c.oid = $1::regclass`, t.ident()).Scan(&keyed, &unlogged); err != nil {
			return e, fmt.Errorf("replica identity of %s: %w", t, err)
		}
		if unlogged {
			e.Unlogged = append(e.Unlogged, selection.Table{Database: db.Name, Schema: t.Schema, Name: t.Name})
			continue
		}
		if !keyed {
			e.NoKey = append(e.NoKey, selection.Table{Database: db.Name, Schema: t.Schema, Name: t.Name})
		}
	}
	e.Duration = time.Duration(float64(e.TableBytes)/CopyBytesPerSecond*float64(time.Second)) +
		time.Duration(float64(e.IndexBytes)/IndexBytesPerSecond*float64(time.Second))
	return e, nil
}
