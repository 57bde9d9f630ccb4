package ddlcapture

import (
	"errors"
	"strings"
)

// A captured command carries the text of the whole query the client sent
// (current_query()): one statement, or several in one query string, or a
// DO block, a function call or a procedure that ran the DDL. The lexer
// below tells these apart without parsing SQL: it cuts the text into
// statements where PostgreSQL would (top-level semicolons, outside quotes,
// comments, dollar quotes, parentheses and BEGIN ATOMIC bodies) and keeps
// the top-level words, so that a statement can be compared with the
// command tag the event trigger saw.

// Statement is one statement of a query string.
type Statement struct {
	// Text is the statement as the client wrote it, without the semicolon
	// that ended it.
	Text   string
	tokens []token
}

type tokenKind int

const (
	tokWord   tokenKind = iota // unquoted identifier or keyword
	tokIdent                   // "quoted identifier"
	tokString                  // any string literal, dollar-quoted included
	tokNumber
	tokParam // $1
	tokPunct // one character: ( ) , ; . and operator characters
)

type token struct {
	kind       tokenKind
	text       string // upper case for a word, the name for an identifier
	start, end int    // byte offsets in the statement's text
	depth      int    // parenthesis depth at the token
}

// ErrUnterminated means a quote, a comment or a dollar quote does not end:
// the text is not one PostgreSQL ran as it reads here.
var ErrUnterminated = errors.New("unterminated quote or comment")

// Split cuts a query string into its statements; empty ones (a lone
// semicolon, a comment) are left out. standardStrings is the session's
// standard_conforming_strings: off, a backslash escapes in every string.
func Split(sql string, standardStrings bool) ([]Statement, error) {
	toks, err := lex(sql, standardStrings)
	if err != nil {
		return nil, err
	}
	var out []Statement
	start := 0
	var cur []token
	atomic := 0 // nesting inside BEGIN ATOMIC … END
	flush := func(end int) {
		if len(cur) > 0 {
			text := sql[start:end]
			lead := len(text) - len(strings.TrimLeft(text, " \t\r\n\f"))
			st := Statement{Text: strings.TrimSpace(text)}
			for _, t := range cur {
				t.start -= start + lead
				t.end -= start + lead
				st.tokens = append(st.tokens, t)
			}
			out = append(out, st)
		}
		cur = nil
	}
	for i, t := range toks {
		if t.kind == tokPunct && t.text == ";" && t.depth == 0 && atomic == 0 {
			flush(t.start)
			start = t.end
			continue
		}
		if t.kind == tokWord {
			switch {
			case t.text == "ATOMIC" && i > 0 && toks[i-1].kind == tokWord && toks[i-1].text == "BEGIN":
				atomic++
			case atomic > 0 && t.text == "CASE":
				atomic++
			case atomic > 0 && t.text == "END":
				atomic--
			}
		}
		if len(cur) == 0 {
			// Comments before the first token belong to no statement.
			start = t.start
		}
		cur = append(cur, t)
	}
	flush(len(sql))
	return out, nil
}

func isIdentStart(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '_' || c >= 0x80
}

func isIdentChar(c byte) bool { return isIdentStart(c) || c >= '0' && c <= '9' || c == '$' }

// lex reads the tokens of sql.
func lex(sql string, standardStrings bool) ([]token, error) {
	var toks []token
	depth := 0
	i := 0
	n := len(sql)
	for i < n {
		c := sql[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f':
			i++
		case c == '-' && i+1 < n && sql[i+1] == '-':
			for i < n && sql[i] != '\n' {
				i++
			}
		case c == '/' && i+1 < n && sql[i+1] == '*':
			nest := 0
			for {
				if i+1 >= n {
					return nil, ErrUnterminated
				}
				if sql[i] == '/' && sql[i+1] == '*' {
					nest++
					i += 2
					continue
				}
				if sql[i] == '*' && sql[i+1] == '/' {
					nest--
					i += 2
					if nest == 0 {
						break
					}
					continue
				}
				i++
			}
		case c == '\'':
			end, err := stringEnd(sql, i, !standardStrings)
			if err != nil {
				return nil, err
			}
			toks = append(toks, token{kind: tokString, start: i, end: end, depth: depth})
			i = end
		case c == '"':
			end, name, err := identEnd(sql, i)
			if err != nil {
				return nil, err
			}
			toks = append(toks, token{kind: tokIdent, text: name, start: i, end: end, depth: depth})
			i = end
		case c == '$' && i+1 < n && sql[i+1] >= '0' && sql[i+1] <= '9':
			j := i + 1
			for j < n && sql[j] >= '0' && sql[j] <= '9' {
				j++
			}
			toks = append(toks, token{kind: tokParam, text: sql[i:j], start: i, end: j, depth: depth})
			i = j
		case c == '$':
			// A dollar quote: $$ or $tag$.
			j := i + 1
			for j < n && sql[j] != '$' && isIdentChar(sql[j]) {
				j++
			}
			if j >= n || sql[j] != '$' || (j > i+1 && !isIdentStart(sql[i+1])) {
				toks = append(toks, token{kind: tokPunct, text: "$", start: i, end: i + 1, depth: depth})
				i++
				continue
			}
			tag := sql[i : j+1]
			k := strings.Index(sql[j+1:], tag)
			if k < 0 {
				return nil, ErrUnterminated
			}
			end := j + 1 + k + len(tag)
			toks = append(toks, token{kind: tokString, start: i, end: end, depth: depth})
			i = end
		case isIdentStart(c):
			j := i
			for j < n && isIdentChar(sql[j]) {
				j++
			}
			word := sql[i:j]
			switch {
			case (word == "E" || word == "e") && j < n && sql[j] == '\'':
				end, err := stringEnd(sql, j, true)
				if err != nil {
					return nil, err
				}
				toks = append(toks, token{kind: tokString, start: i, end: end, depth: depth})
				i = end
				continue
			case (word == "B" || word == "b" || word == "X" || word == "x" || word == "N" || word == "n") && j < n && sql[j] == '\'':
				end, err := stringEnd(sql, j, !standardStrings)
				if err != nil {
					return nil, err
				}
				toks = append(toks, token{kind: tokString, start: i, end: end, depth: depth})
				i = end
				continue
			case (word == "U" || word == "u") && j+1 < n && sql[j] == '&' && sql[j+1] == '\'':
				end, err := stringEnd(sql, j+1, !standardStrings)
				if err != nil {
					return nil, err
				}
				toks = append(toks, token{kind: tokString, start: i, end: end, depth: depth})
				i = end
				continue
			case (word == "U" || word == "u") && j+1 < n && sql[j] == '&' && sql[j+1] == '"':
				end, name, err := identEnd(sql, j+1)
				if err != nil {
					return nil, err
				}
				toks = append(toks, token{kind: tokIdent, text: name, start: i, end: end, depth: depth})
				i = end
				continue
			}
			toks = append(toks, token{kind: tokWord, text: strings.ToUpper(word), start: i, end: j, depth: depth})
			i = j
		case c >= '0' && c <= '9' || c == '.' && i+1 < n && sql[i+1] >= '0' && sql[i+1] <= '9':
			j := i
			for j < n && (sql[j] >= '0' && sql[j] <= '9' || sql[j] == '.' || sql[j] == '_' || isIdentStart(sql[j])) {
				j++
			}
			toks = append(toks, token{kind: tokNumber, text: sql[i:j], start: i, end: j, depth: depth})
			i = j
		default:
			if c == ')' && depth > 0 {
				depth--
			}
			toks = append(toks, token{kind: tokPunct, text: string(c), start: i, end: i + 1, depth: depth})
			if c == '(' {
				depth++
			}
			i++
		}
	}
	return toks, nil
}

// stringEnd returns the offset after the string literal whose opening
// quote is at i; backslashes escape when escapes is set.
func stringEnd(sql string, i int, escapes bool) (int, error) {
	for j := i + 1; j < len(sql); j++ {
		switch sql[j] {
		case '\\':
			if escapes {
				j++
			}
		case '\'':
			if j+1 < len(sql) && sql[j+1] == '\'' {
				j++
				continue
			}
			return j + 1, nil
		}
	}
	return 0, ErrUnterminated
}

// identEnd returns the offset after the quoted identifier whose opening
// quote is at i, and the name it stands for.
func identEnd(sql string, i int) (int, string, error) {
	var b strings.Builder
	for j := i + 1; j < len(sql); j++ {
		if sql[j] == '"' {
			if j+1 < len(sql) && sql[j+1] == '"' {
				b.WriteByte('"')
				j++
				continue
			}
			return j + 1, b.String(), nil
		}
		b.WriteByte(sql[j])
	}
	return 0, "", ErrUnterminated
}

// words are the statement's leading unquoted words, in upper case, up to
// the first token of another kind or n words.
func (s Statement) words(n int) []string {
	var out []string
	for _, t := range s.tokens {
		if t.kind != tokWord || len(out) == n {
			break
		}
		out = append(out, t.text)
	}
	return out
}

// MatchesTag reports whether the statement is the command an event trigger
// reported with this command tag: it starts with the tag's first word and
// holds the tag's other words, in order, among its first words (CREATE OR
// REPLACE FUNCTION, CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS, ALTER
// TABLE IF EXISTS ONLY). A DO block, a SELECT of a function or a CALL that
// ran the command does not match.
func (s Statement) MatchesTag(tag string) bool {
	want := strings.Fields(strings.ToUpper(tag))
	if len(want) == 0 {
		return false
	}
	have := s.words(len(want) + 5)
	if len(have) == 0 || have[0] != want[0] {
		return false
	}
	k := 1
	for _, w := range have[1:] {
		if k < len(want) && w == want[k] {
			k++
		}
	}
	return k == len(want)
}

// Has reports whether the statement holds the unquoted keyword word.
func (s Statement) Has(word string) bool {
	word = strings.ToUpper(word)
	for _, t := range s.tokens {
		if t.kind == tokWord && t.text == word {
			return true
		}
	}
	return false
}

// Without returns the statement's text without the unquoted keyword word
// (DROP INDEX CONCURRENTLY, which cannot run in a transaction block, is
// the same drop without it).
func (s Statement) Without(word string) string {
	word = strings.ToUpper(word)
	var b strings.Builder
	last := 0
	for _, t := range s.tokens {
		if t.kind == tokWord && t.text == word {
			b.WriteString(s.Text[last:t.start])
			last = t.end
		}
	}
	b.WriteString(s.Text[last:])
	return b.String()
}

// TypeChangeCalls lists the functions an ALTER TABLE statement's type
// changes call in their USING expressions (ALTER COLUMN … TYPE … USING
// expr): the names, in lower case for unquoted ones, of words and quoted
// identifiers followed by a parenthesis there. Type modifiers (numeric(10,
// 2)) and keywords followed by a parenthesis come along; the caller looks
// the names up as functions.
func (s Statement) TypeChangeCalls() []string {
	var out []string
	inType, inUsing := false, false
	for i, t := range s.tokens {
		switch {
		case t.kind == tokPunct && t.text == "," && t.depth == 0:
			inType, inUsing = false, false
		case t.kind == tokWord && t.depth == 0 && t.text == "TYPE":
			inType = true
		case t.kind == tokWord && t.depth == 0 && t.text == "USING" && inType:
			inUsing = true
		case inUsing && (t.kind == tokWord || t.kind == tokIdent) && i+1 < len(s.tokens) &&
			s.tokens[i+1].kind == tokPunct && s.tokens[i+1].text == "(":
			name := t.text
			if t.kind == tokWord {
				name = strings.ToLower(name)
			}
			out = append(out, name)
		}
	}
	return out
}
