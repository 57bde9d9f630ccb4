package apply

import (
	"errors"
	"fmt"

	"github.com/serenorg/postgres-seren-replicator/stream"
)

// RecopyError is returned when the target's copy of a table cannot follow a
// schema change of the source by DDL alone: the source's catalog cannot
// tell a rename from a drop and an add (it has changed again since the
// change being applied), or the source filled a column with values the
// target cannot recompute (a volatile default, a type change whose USING
// expression the target's values do not take). Copying the table again at
// a new snapshot (the path of a table added to the migration) follows it
// exactly; Config.Recopy says the caller does that. Nothing of the
// transaction that met the change was applied.
type RecopyError struct {
	Schema, Name string
	// RelID is the table's OID on the source, which finds it if it has
	// been renamed since.
	RelID uint32
	// Why is the schema change that could not be followed.
	Why string
}

func (e *RecopyError) Error() string {
	return fmt.Sprintf("table %s.%s: %s", e.Schema, e.Name, e.Why)
}

// cannotFollowError is a schema change DDL cannot follow: why says what it
// is, stop is the error with what to do by hand.
type cannotFollowError struct {
	why  string
	stop error
}

func (e cannotFollowError) Error() string { return e.stop.Error() }

// cannotFollow turns a cannotFollowError met while comparing a table with
// its Relation message into a RecopyError when the caller copies tables
// again and schema changes are applied, and into the error with what to do
// by hand otherwise; other errors pass.
func (a *Applier) cannotFollow(msg *stream.Relation, err error) error {
	var cf cannotFollowError
	if !errors.As(err, &cf) {
		return err
	}
	if a.cfg.Recopy && a.cfg.SchemaChanges != SchemaChangesStop {
		return &RecopyError{Schema: msg.Namespace, Name: msg.Name, RelID: msg.ID, Why: cf.why}
	}
	return permanent(cf.stop)
}
