package main

import (
	"context"
	"log/slog"

	"github.com/jackc/pgx/v5"

	"github.com/serenorg/postgres-seren-replicator/stream"
)

// PublicationFor is the publication init creates for db: --publication,
// else one named from db's slot, so that migrations of one source database
// with different slots never share a publication.
func (r Replication) PublicationFor(db string) string {
	if r.Publication != "" {
		return r.Publication
	}
	return stream.PublicationName(r.SlotFor(db))
}

// findPublication is the publication an existing migration on slot streams
// from, in the source database src is connected to: --publication, else the
// one named from the slot, else seren_replicator_pub for a migration
// created when every migration shared that one (see stream.FindPublication).
func (r Replication) findPublication(ctx context.Context, src *pgx.Conn, slot string, log *slog.Logger) (string, error) {
	if r.Publication != "" {
		return r.Publication, nil
	}
	name, legacy, err := stream.FindPublication(ctx, src, slot)
	if err == nil && legacy {
		log.Debug("streaming from the publication shared by migrations created before publications were named per slot",
			"slot", slot, "publication", name)
	}
	return name, err
}
