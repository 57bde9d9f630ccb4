package ddlcapture

import (
	"encoding/json"
	"fmt"
	"strconv"
)

// Record is one row of the capture table: one DDL command as the source's
// event trigger saw it at its end.
type Record struct {
	ID  int64
	Tag string // command tag: ALTER TABLE, CREATE INDEX, ...
	// Objects are what the command made, changed or dropped.
	Objects []Object
	// Tables are, for ALTER TABLE, the columns of the altered tables and
	// of their partitions once the command had run.
	Tables   []TableColumns
	Settings map[string]string
	// Statement is the text of the whole query the client sent; empty for
	// the second and later commands of one query (Nth > 1).
	Statement string
	Nth       int
	// Error is set when the capture failed on the source: the command ran
	// there, but what it was is not known beyond Statement.
	Error string
	// Role is the session's login role on the source.
	Role string
}

// Object is one object a command touched.
type Object struct {
	Type     string `json:"type"`     // table, index, table column, type, function, ...
	Identity string `json:"identity"` // schema-qualified, quoted as needed; empty for GRANT
	Schema   string `json:"schema"`
	Class    string `json:"class"` // catalog: pg_class, pg_type, ...
	Kind     string `json:"kind"`  // relkind, for pg_class objects
	// Table is the source OID of the table the object belongs to (itself
	// for a table), Root that table's partition root (the table itself
	// when it is not a partition); 0 for an object of no table.
	Table oidText `json:"table"`
	Root  oidText `json:"root"`
	Owner string  `json:"owner"`
	// Uses are, for a type, the tables (partition roots) whose columns use
	// it.
	Uses        []oidText `json:"uses"`
	Temp        bool      `json:"temp"`
	InExtension bool      `json:"in_extension"`
	// Dropped objects come from sql_drop: Names are their address names
	// (schema, table, column for a column), Original says the command
	// named the object, Normal that it went with one (CASCADE).
	Dropped  bool     `json:"dropped"`
	Names    []string `json:"names"`
	Original bool     `json:"original"`
	Normal   bool     `json:"normal"`
}

// TableColumns is a table's columns once an ALTER TABLE had run.
type TableColumns struct {
	OID    oidText `json:"oid"`
	Schema string  `json:"schema"`
	Name   string  `json:"name"`
	// Columns are the attribute numbers and names of the columns the
	// stream carries (not generated ones).
	Columns []Column `json:"columns"`
	// Missing is, by column, the value rows older than the column read
	// (attmissingval, as text of a one-element array).
	Missing map[string]string `json:"missing"`
}

// Column is one column's attribute number and name.
type Column struct {
	Num  int16
	Name string
}

// UnmarshalJSON reads [attnum, name].
func (c *Column) UnmarshalJSON(b []byte) error {
	var pair [2]json.RawMessage
	if err := json.Unmarshal(b, &pair); err != nil {
		return err
	}
	if err := json.Unmarshal(pair[0], &c.Num); err != nil {
		return err
	}
	return json.Unmarshal(pair[1], &c.Name)
}

// oidText is an OID that jsonb renders as a string.
type oidText uint32

func (o *oidText) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		var n uint32
		if nerr := json.Unmarshal(b, &n); nerr != nil {
			return err
		}
		*o = oidText(n)
		return nil
	}
	if s == "" {
		return nil
	}
	n, err := strconv.ParseUint(s, 10, 32)
	if err != nil {
		return fmt.Errorf("oid %q: %w", s, err)
	}
	*o = oidText(n)
	return nil
}

// OID returns the OID (0 for none).
func (o oidText) OID() uint32 { return uint32(o) }

// ParseRecord reads a row of the capture table from its columns' text
// values by name (nil for NULL), as the stream delivers an insert.
func ParseRecord(values map[string][]byte) (Record, error) {
	var r Record
	text := func(col string) string { return string(values[col]) }
	var err error
	if r.ID, err = strconv.ParseInt(text("id"), 10, 64); err != nil {
		return r, fmt.Errorf("%s.%s: id %q: %w", Schema, Table, text("id"), err)
	}
	r.Tag = text("command_tag")
	r.Statement = text("statement")
	r.Error = text("error")
	r.Role = text("session_role")
	r.Nth = 1
	if v := text("nth"); v != "" {
		if r.Nth, err = strconv.Atoi(v); err != nil {
			return r, fmt.Errorf("%s.%s row %d: nth %q: %w", Schema, Table, r.ID, v, err)
		}
	}
	for col, into := range map[string]any{"objects": &r.Objects, "tables": &r.Tables, "settings": &r.Settings} {
		if v := values[col]; len(v) > 0 {
			if err := json.Unmarshal(v, into); err != nil {
				return r, fmt.Errorf("%s.%s row %d: %s: %w", Schema, Table, r.ID, col, err)
			}
		}
	}
	return r, nil
}
