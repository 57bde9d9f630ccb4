package snapshot

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// loChunk is how much of a large object travels in one round trip.
const loChunk = 1 << 20

type largeObject struct {
	oid    uint32
	owner  string
	grants []string // "grantee privilege", grantee quoted or PUBLIC
}

// copyLargeObjects copies every large object with its OID, owner and
// privileges, reading inside the exported snapshot (src is a transaction
// that imported it) and writing in one target transaction together with its
// progress row. Owners and grants the target refuses are reported, not
// fatal.
func copyLargeObjects(ctx context.Context, src pgx.Tx, dst *pgx.Conn, progress *progressTable) (n int, bytes int64, notices []string, err error) {
	rows, err := src.Query(ctx, `SELECT l.oid, pg_get_userbyid(l.lomowner),
		COALESCE((SELECT array_agg(CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(a.grantee)) END
		                           || ' ' || a.privilege_type)
		          FROM aclexplode(l.lomacl) a WHERE a.grantee <> l.lomowner), '{}')
		FROM pg_largeobject_metadata l ORDER BY l.oid`)
	if err != nil {
		return 0, 0, nil, fmt.Errorf("list large objects: %w", err)
	}
	var los []largeObject
	for rows.Next() {
		var lo largeObject
		if err := rows.Scan(&lo.oid, &lo.owner, &lo.grants); err != nil {
			return 0, 0, nil, err
		}
		los = append(los, lo)
	}
	if err := rows.Err(); err != nil {
		return 0, 0, nil, fmt.Errorf("list large objects: %w", err)
	}
	if len(los) == 0 {
		return 0, 0, nil, nil
	}
	tx, err := dst.Begin(ctx)
	if err != nil {
		return 0, 0, nil, fmt.Errorf("copy large objects: %w", err)
	}
	defer tx.Rollback(context.Background())
	ownerFailed, grantFailed := 0, 0
	var firstOwnerErr, firstGrantErr error
	for _, lo := range los {
		if _, err := tx.Exec(ctx, `SELECT lo_create($1)`, lo.oid); err != nil {
			return 0, 0, nil, fmt.Errorf("create large object %d: %w", lo.oid, err)
		}
		for off := int64(0); ; off += loChunk {
			var data []byte
			if err := src.QueryRow(ctx, `SELECT lo_get($1, $2, $3)`, lo.oid, off, loChunk).Scan(&data); err != nil {
				return 0, 0, nil, fmt.Errorf("read large object %d: %w", lo.oid, err)
			}
			if len(data) > 0 {
				if _, err := tx.Exec(ctx, `SELECT lo_put($1, $2, $3)`, lo.oid, off, data); err != nil {
					return 0, 0, nil, fmt.Errorf("write large object %d: %w", lo.oid, err)
				}
			}
			bytes += int64(len(data))
			if len(data) < loChunk {
				break
			}
		}
		if err := trySavepoint(ctx, tx, fmt.Sprintf("ALTER LARGE OBJECT %d OWNER TO %s", lo.oid, pgx.Identifier{lo.owner}.Sanitize())); err != nil {
			ownerFailed++
			if firstOwnerErr == nil {
				firstOwnerErr = err
			}
		}
		for _, g := range lo.grants {
			var grantee, priv string
			fmt.Sscanf(g, "%s %s", &grantee, &priv)
			if err := trySavepoint(ctx, tx, fmt.Sprintf("GRANT %s ON LARGE OBJECT %d TO %s", priv, lo.oid, grantee)); err != nil {
				grantFailed++
				if firstGrantErr == nil {
					firstGrantErr = err
				}
			}
		}
	}
	if err := progress.record(ctx, tx, "large objects", int64(len(los)), bytes); err != nil {
		return 0, 0, nil, err
	}
	if err := tx.Commit(ctx); err != nil {
		return 0, 0, nil, fmt.Errorf("copy large objects: commit: %w", err)
	}
	if ownerFailed > 0 {
		notices = append(notices, fmt.Sprintf("owner of %d large objects not restored (%v)", ownerFailed, firstOwnerErr))
	}
	if grantFailed > 0 {
		notices = append(notices, fmt.Sprintf("%d large object privileges not restored (%v)", grantFailed, firstGrantErr))
	}
	return len(los), bytes, notices, nil
}

// trySavepoint runs one statement that the target may refuse without
// spoiling the surrounding transaction.
func trySavepoint(ctx context.Context, tx pgx.Tx, sql string) error {
	sp, err := tx.Begin(ctx)
	if err != nil {
		return err
	}
	if _, err := sp.Exec(ctx, sql); err != nil {
		_ = sp.Rollback(ctx)
		return err
	}
	return sp.Commit(ctx)
}
