package stream

import (
	"context"
	"crypto/sha1"
	"encoding/hex"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// LegacyPublication is the publication every migration of a source
// database shared before each slot got its own: migrations created then
// still stream from it.
const LegacyPublication = "seren_replicator_pub"

// maxIdentifier is PostgreSQL's identifier length limit in bytes
// (NAMEDATALEN - 1).
const maxIdentifier = 63

// publicationSuffix ends every derived publication name.
const publicationSuffix = "_pub"

// PublicationName is the default publication of the migration whose slot
// is slot: the slot name with _pub appended, so that two migrations of one
// source database (which need two slots) never share a publication. A name
// that would pass 63 bytes is shortened and given a hash of the whole slot
// name, keeping it distinct.
func PublicationName(slot string) string {
	if len(slot)+len(publicationSuffix) <= maxIdentifier {
		return slot + publicationSuffix
	}
	sum := sha1.Sum([]byte(slot))
	hash := "_" + hex.EncodeToString(sum[:4])
	keep := maxIdentifier - len(hash) - len(publicationSuffix)
	// Cut at a character boundary: a slot name given by hand may hold
	// multibyte characters.
	for keep > 0 && keep < len(slot) && slot[keep]&0xC0 == 0x80 {
		keep--
	}
	return slot[:keep] + hash + publicationSuffix
}

// FindPublication returns the publication the migration of slot streams
// from in the source database conn is connected to, when the user named
// none: PublicationName(slot) when it exists; otherwise LegacyPublication
// when that exists (the migration was created before publications were
// named per slot); otherwise PublicationName(slot), for init to create or
// for a check to report missing. legacy says the second case.
func FindPublication(ctx context.Context, conn *pgx.Conn, slot string) (name string, legacy bool, err error) {
	name = PublicationName(slot)
	var own, old bool
	if err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = $1),
		EXISTS (SELECT 1 FROM pg_publication WHERE pubname = $2)`, name, LegacyPublication).Scan(&own, &old); err != nil {
		return "", false, fmt.Errorf("look up publication %s: %w", name, err)
	}
	if !own && old {
		return LegacyPublication, true, nil
	}
	return name, false, nil
}

// LegacyPublicationUsers returns the logical slots of the source database
// conn is connected to, other than slot, that may stream from
// LegacyPublication: those whose own derived publication does not exist.
// Dropping the shared publication would break their migrations.
func LegacyPublicationUsers(ctx context.Context, conn *pgx.Conn, slot string) ([]string, error) {
	rows, err := conn.Query(ctx, `SELECT slot_name FROM pg_replication_slots
		WHERE database = current_database() AND slot_type = 'logical' AND plugin = 'pgoutput' AND slot_name <> $1
		ORDER BY slot_name`, slot)
	if err != nil {
		return nil, fmt.Errorf("list replication slots: %w", err)
	}
	slots, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("list replication slots: %w", err)
	}
	var users []string
	for _, s := range slots {
		var own bool
		if err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = $1)`, PublicationName(s)).Scan(&own); err != nil {
			return nil, fmt.Errorf("look up publication of slot %s: %w", s, err)
		}
		if !own {
			users = append(users, s)
		}
	}
	return users, nil
}
