package preflight

import (
	"context"
	"fmt"

	"github.com/serenorg/postgres-seren-replicator/internal/pgtools"
)

// checkPgDump checks that the local pg_dump can dump the source: pg_dump
// refuses servers of a newer major version than its own. With path empty it
// checks the pg_dump init would pick (pgtools.Find).
func checkPgDump(ctx context.Context, path string, sourceMajor int) (Check, error) {
	c := Check{Name: "pg_dump version", Status: Pass}
	var tools pgtools.Tools
	var err error
	if path != "" {
		tools, err = pgtools.At(ctx, path, sourceMajor)
	} else {
		tools, err = pgtools.Find(ctx, sourceMajor)
	}
	if err != nil {
		c.Status = Fail
		c.Detail = err.Error()
		c.Fix = pgtools.InstallHint(sourceMajor)
		return c, nil
	}
	c.Detail = fmt.Sprintf("%s is version %d; the source is %d", tools.PgDump, tools.Major, sourceMajor)
	return c, nil
}
