package interactive

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	"charm.land/bubbles/v2/key"
	tea "charm.land/bubbletea/v2"

	"github.com/serenorg/postgres-seren-replicator/internal/health"
)

// View implements tea.Model. The screens take the alternate screen, as a
// full-screen program does: the terminal's history keeps none of them, and
// Run prints the answered summary once they are gone.
func (m *model) View() tea.View {
	v := tea.NewView(m.render())
	v.AltScreen = true
	return v
}

// render is the screen: the list or the summary shown now; nothing once
// canceled.
func (m *model) render() string {
	if m.canceled {
		return ""
	}
	if m.stage == stageSummary {
		return m.summaryView()
	}
	l := m.list()
	var b strings.Builder
	var footer string
	bindings := []key.Binding{m.keys.move, m.keys.toggle, m.keys.all, m.keys.filter}
	if m.stage == stageDatabases {
		b.WriteString(m.style.title.Render("Databases to replicate") + m.style.faint.Render(fmt.Sprintf("  (%d on the source)", len(m.dbs))))
		var size int64
		for i, c := range l.checked {
			if c {
				size += m.dbs[i].Bytes
			}
		}
		footer = fmt.Sprintf("%d of %d selected · %s", l.count(), len(m.dbs), health.FormatBytes(size))
	} else {
		d := m.dbs[m.chosen[m.current]]
		where := ""
		if len(m.chosen) > 1 {
			where = fmt.Sprintf(" (database %d of %d)", m.current+1, len(m.chosen))
		}
		b.WriteString(m.style.title.Render("Tables of "+d.Name+" to EXCLUDE") + m.style.faint.Render(where+" · enter with none keeps all"))
		var size, kept int64
		for i, t := range d.Tables {
			size += t.Bytes
			if !l.checked[i] {
				kept += t.Bytes
			}
		}
		footer = fmt.Sprintf("excluding %d of %d tables · replicating %s of %s", l.count(), len(d.Tables), health.FormatBytes(kept), health.FormatBytes(size))
		bindings[1] = key.NewBinding(key.WithKeys("space"), key.WithHelp("space", "exclude"))
	}
	if m.stage == stageTables && (m.multi || m.current > 0) {
		bindings = append(bindings, m.keys.back)
	}
	bindings = append(bindings, m.keys.confirm, m.keys.cancel)
	b.WriteByte('\n')
	if l.filter == "" {
		b.WriteString(m.style.faint.Render("  type to filter"))
	} else {
		b.WriteString(fmt.Sprintf("  filter: %s▏ %s", l.filter, m.style.faint.Render(fmt.Sprintf("(%d of %d shown; esc clears)", len(l.shown), len(l.rows)))))
	}
	b.WriteByte('\n')
	from, to := l.window(m.listHeight())
	if from > 0 {
		b.WriteString(m.style.faint.Render(fmt.Sprintf("  ↑ %d more", from)))
	}
	b.WriteByte('\n')
	if len(l.shown) == 0 {
		b.WriteString(m.style.faint.Render("  nothing matches the filter") + "\n")
	}
	for pos := from; pos < to; pos++ {
		i := l.shown[pos]
		box := "[ ]"
		if l.checked[i] {
			box = m.style.checked.Render("[x]")
		}
		if pos == l.cursor {
			b.WriteString(m.style.cursor.Render("> ") + box + " " + m.style.cursor.Render(l.rows[i]))
		} else {
			b.WriteString("  " + box + " " + l.rows[i])
		}
		b.WriteByte('\n')
	}
	if rest := len(l.shown) - to; rest > 0 {
		b.WriteString(m.style.faint.Render(fmt.Sprintf("  ↓ %d more", rest)))
	}
	b.WriteByte('\n')
	b.WriteString(footer + "\n")
	if m.note != "" {
		b.WriteString(m.style.note.Render(m.note) + "\n")
	}
	b.WriteString(m.help.ShortHelpView(bindings))
	return b.String()
}

func (m *model) summaryView() string {
	var b strings.Builder
	b.WriteString(m.style.title.Render("Summary") + "\n")
	b.WriteString("  Will be replicated:\n")
	c := m.choice()
	width := nameWidth(len(m.chosen), func(i int) string { return m.dbs[m.chosen[i]].Name })
	var kept, leftOut []string
	if m.multi {
		for i, d := range m.dbs {
			if !m.databases.checked[i] {
				leftOut = append(leftOut, fmt.Sprintf("%s  (database, %s)", d.Name, health.FormatBytes(d.Bytes)))
			}
		}
	}
	for _, i := range m.chosen {
		d := m.dbs[i]
		excluded := c.Excluded[d.Name]
		var bytes int64
		for _, t := range d.Tables {
			if slices.Contains(excluded, t.Table) {
				leftOut = append(leftOut, fmt.Sprintf("%s  (table, %s)", t.Table, health.FormatBytes(t.Bytes)))
			} else {
				bytes += t.Bytes
			}
		}
		what := fmt.Sprintf("all %s", countTables(len(d.Tables)))
		if len(excluded) > 0 {
			what = fmt.Sprintf("%d of %d tables (%d excluded)", len(d.Tables)-len(excluded), len(d.Tables), len(excluded))
		}
		kept = append(kept, fmt.Sprintf("%s  %s, %s", pad(d.Name, width), what, health.FormatBytes(bytes)))
	}
	// Both lists and the five other lines fit on the terminal.
	most := min(maxListed, max(2, (m.screenHeight()-7)/2))
	writeList(&b, kept, most)
	b.WriteString("  Will not be replicated:")
	if len(leftOut) == 0 {
		b.WriteString(" nothing")
	}
	b.WriteByte('\n')
	writeList(&b, leftOut, most)
	b.WriteString(m.style.title.Render("Proceed with this configuration? [Y/n]") + " ")
	if m.answered != "" {
		b.WriteString(m.answered)
		return b.String()
	}
	b.WriteString("\n" + m.help.ShortHelpView([]key.Binding{m.keys.yes, m.keys.no, m.keys.back, m.keys.cancel}))
	return b.String()
}

// writeList writes lines, indented, at most most of them: past that the
// last line counts the rest.
func writeList(b *strings.Builder, lines []string, most int) {
	for i, s := range lines {
		if i == most-1 && len(lines) > most {
			fmt.Fprintf(b, "    … and %d more\n", len(lines)-i)
			return
		}
		b.WriteString("    " + s + "\n")
	}
}

// nameWidth is the width of a name column of n names.
func nameWidth(n int, name func(int) string) int {
	w := 0
	for i := range n {
		w = max(w, len([]rune(name(i))))
	}
	return min(w, maxNameWidth)
}

// pad cuts or pads s to width runes.
func pad(s string, width int) string {
	r := []rune(s)
	if len(r) > width {
		return string(r[:width-1]) + "…"
	}
	return s + strings.Repeat(" ", width-len(r))
}

func countTables(n int) string {
	if n == 1 {
		return "1 table"
	}
	return strconv.Itoa(n) + " tables"
}

// countRows renders a row estimate: ~1,234 rows, or "? rows" for a table
// never analysed.
func countRows(n int64) string {
	if n < 0 {
		return "? rows"
	}
	s := strconv.FormatInt(n, 10)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	if n == 1 {
		return "~1 row"
	}
	return "~" + s + " rows"
}
