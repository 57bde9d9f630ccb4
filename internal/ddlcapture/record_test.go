package ddlcapture

import (
	"testing"
)

func TestParseRecord(t *testing.T) {
	rec, err := ParseRecord(map[string][]byte{
		"id":          []byte("42"),
		"command_tag": []byte("ALTER TABLE"),
		"statement":   []byte("ALTER TABLE t ADD d int DEFAULT 7"),
		"nth":         []byte("1"),
		"objects": []byte(`[{"kind": "r", "root": "16414", "temp": false, "type": "table", "uses": null, "class": "pg_class", "owner": "postgres",
			"table": "16414", "schema": "public", "identity": "public.t", "in_extension": false},
			{"temp": false, "type": "table column", "names": ["public", "t", "a"], "normal": false, "schema": "public", "dropped": true,
			"identity": "public.t.a", "original": true},
			{"type": "type", "class": "pg_type", "identity": "public.mood", "uses": ["16414", "16500"]}]`),
		"tables":   []byte(`[{"oid": "16414", "name": "t", "schema": "public", "columns": [[1, "id"], [3, "m"], [4, "d"]], "missing": {"d": "{7}"}}]`),
		"settings": []byte(`{"search_path": "\"$user\", public", "TimeZone": "Europe/Paris"}`),
	})
	if err != nil {
		t.Fatal(err)
	}
	if rec.ID != 42 || rec.Tag != "ALTER TABLE" || rec.Nth != 1 || rec.Settings["TimeZone"] != "Europe/Paris" {
		t.Errorf("record %+v", rec)
	}
	if len(rec.Objects) != 3 || rec.Objects[0].Root.OID() != 16414 || rec.Objects[0].Kind != "r" ||
		!rec.Objects[1].Dropped || rec.Objects[1].Names[2] != "a" || !rec.Objects[1].Original ||
		len(rec.Objects[2].Uses) != 2 || rec.Objects[2].Uses[1].OID() != 16500 {
		t.Errorf("objects %+v", rec.Objects)
	}
	if len(rec.Tables) != 1 || rec.Tables[0].OID.OID() != 16414 || rec.Tables[0].Columns[2] != (Column{Num: 4, Name: "d"}) || rec.Tables[0].Missing["d"] != "{7}" {
		t.Errorf("tables %+v", rec.Tables)
	}
	if _, err := ParseRecord(map[string][]byte{"id": []byte("x")}); err == nil {
		t.Error("a row without a numeric id was read")
	}
	if _, err := ParseRecord(map[string][]byte{"id": []byte("1"), "objects": []byte("[{")}); err == nil {
		t.Error("broken objects were read")
	}
}

func TestIsOwnDumpEntry(t *testing.T) {
	for rest, want := range map[string]bool{
		"EVENT TRIGGER - seren_replicator_ddl_command_end postgres": true,
		"EVENT TRIGGER - seren_replicator_sql_drop admin":           true,
		"EVENT TRIGGER - audit_ddl postgres":                        false,
		"TABLE public seren_replicator_sql_drop postgres":           false,
	} {
		if got := IsOwnDumpEntry(rest); got != want {
			t.Errorf("IsOwnDumpEntry(%q) = %v, want %v", rest, got, want)
		}
	}
}
