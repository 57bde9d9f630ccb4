// Package sqltext renders values as SQL text, for the statements that cannot
// take parameters (DDL, publication options).
package sqltext

import "strings"

// Literal quotes s as an SQL string literal. It assumes
// standard_conforming_strings = on (the default since PostgreSQL 9.1), where
// a backslash is an ordinary character.
func Literal(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }
