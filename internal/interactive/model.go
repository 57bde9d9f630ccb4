package interactive

import (
	"fmt"

	"charm.land/bubbles/v2/help"
	"charm.land/bubbles/v2/key"
	tea "charm.land/bubbletea/v2"
	"charm.land/lipgloss/v2"

	"github.com/serenorg/postgres-seren-replicator/internal/health"
	"github.com/serenorg/postgres-seren-replicator/internal/selection"
)

// The screens of the flow, in order.
type stage int

const (
	stageDatabases stage = iota // which databases to replicate
	stageTables                 // per chosen database: which tables to leave out
	stageSummary                // what will and will not be replicated, [Y/n]
)

const (
	// defaultHeight is the terminal height assumed until the terminal
	// reports its size.
	defaultHeight = 24
	// chromeLines are the lines of a list screen around its rows: title,
	// filter, the two scroll markers, footer, note and help.
	chromeLines = 7
	// maxNameWidth caps the name column; longer names are cut with "…".
	maxNameWidth = 48
	// maxListed is how many lines each of the summary's two lists takes at
	// most (fewer on a short terminal) before it only counts the rest.
	maxListed = 10
)

type keyMap struct {
	move, toggle, all, filter, back, confirm, cancel key.Binding
	up, down, pageUp, pageDown, home, end, clear     key.Binding
	yes, no                                          key.Binding
}

func newKeyMap() keyMap {
	return keyMap{
		move:   key.NewBinding(key.WithKeys("up", "down"), key.WithHelp("↑/↓", "move")),
		toggle: key.NewBinding(key.WithKeys("space"), key.WithHelp("space", "select")),
		all:    key.NewBinding(key.WithKeys("ctrl+a"), key.WithHelp("ctrl+a", "all shown")),
		// Typing is read as text, not matched: the binding is for the help.
		filter:   key.NewBinding(key.WithKeys(""), key.WithHelp("type", "filter")),
		back:     key.NewBinding(key.WithKeys("esc"), key.WithHelp("esc", "back")),
		confirm:  key.NewBinding(key.WithKeys("enter"), key.WithHelp("enter", "confirm")),
		cancel:   key.NewBinding(key.WithKeys("ctrl+c"), key.WithHelp("ctrl+c", "cancel")),
		up:       key.NewBinding(key.WithKeys("up", "ctrl+p")),
		down:     key.NewBinding(key.WithKeys("down", "ctrl+n")),
		pageUp:   key.NewBinding(key.WithKeys("pgup")),
		pageDown: key.NewBinding(key.WithKeys("pgdown")),
		home:     key.NewBinding(key.WithKeys("home")),
		end:      key.NewBinding(key.WithKeys("end")),
		clear:    key.NewBinding(key.WithKeys("backspace", "ctrl+h")),
		yes:      key.NewBinding(key.WithKeys("y", "Y", "enter"), key.WithHelp("y/enter", "proceed")),
		no:       key.NewBinding(key.WithKeys("n", "N"), key.WithHelp("n", "stop")),
	}
}

type styles struct {
	title, faint, cursor, checked, note lipgloss.Style
}

// newStyles are the few attributes the screens use: the terminal's own
// green and yellow, so they read on dark and light backgrounds alike
// (bubbletea drops them on a terminal without colours, or with NO_COLOR).
func newStyles() styles {
	return styles{
		title:   lipgloss.NewStyle().Bold(true),
		faint:   lipgloss.NewStyle().Faint(true),
		cursor:  lipgloss.NewStyle().Bold(true),
		checked: lipgloss.NewStyle().Foreground(lipgloss.Green),
		note:    lipgloss.NewStyle().Foreground(lipgloss.Yellow),
	}
}

// model is the whole interactive flow as one bubbletea model.
type model struct {
	dbs   []Database
	multi bool
	stage stage

	databases *checklist   // the database list (multi only)
	tables    []*checklist // per database (index as dbs), made when first shown
	chosen    []int        // indexes into dbs of the chosen databases
	current   int          // position in chosen of the table list shown

	note      string // why the last enter was refused
	height    int    // the terminal's, 0 until it reports it
	canceled  bool
	confirmed bool
	answered  string // the summary's answer, shown after the prompt

	keys  keyMap
	help  help.Model
	style styles
}

func newModel(dbs []Database, multi bool) *model {
	m := &model{dbs: dbs, multi: multi, tables: make([]*checklist, len(dbs)), keys: newKeyMap(), help: help.New()}
	m.style = newStyles()
	m.help.Styles = help.Styles{
		ShortKey: m.style.faint, ShortDesc: m.style.faint, ShortSeparator: m.style.faint, Ellipsis: m.style.faint,
	}
	if multi {
		names := make([]string, len(dbs))
		rows := make([]string, len(dbs))
		width := nameWidth(len(dbs), func(i int) string { return dbs[i].Name })
		for i, d := range dbs {
			names[i] = d.Name
			rows[i] = fmt.Sprintf("%s  %10s  %s", pad(d.Name, width), health.FormatBytes(d.Bytes), countTables(len(d.Tables)))
		}
		m.databases = newChecklist(names, rows)
		m.stage = stageDatabases
	} else {
		m.chosen = []int{0}
		m.current = -1
		m.nextTables()
	}
	return m
}

// Init implements tea.Model.
func (m *model) Init() tea.Cmd { return nil }

// Update implements tea.Model.
func (m *model) Update(msg tea.Msg) (tea.Model, tea.Cmd) {
	switch msg := msg.(type) {
	case tea.WindowSizeMsg:
		m.height = msg.Height
		m.help.SetWidth(msg.Width)
	case tea.KeyPressMsg:
		if key.Matches(msg, m.keys.cancel) {
			m.canceled = true
			return m, tea.Quit
		}
		if m.stage == stageSummary {
			return m, m.updateSummary(msg)
		}
		return m, m.updateList(msg)
	}
	return m, nil
}

func (m *model) list() *checklist {
	if m.stage == stageDatabases {
		return m.databases
	}
	return m.tables[m.chosen[m.current]]
}

func (m *model) updateList(msg tea.KeyPressMsg) tea.Cmd {
	l := m.list()
	switch {
	case key.Matches(msg, m.keys.up):
		l.move(-1)
	case key.Matches(msg, m.keys.down):
		l.move(1)
	case key.Matches(msg, m.keys.pageUp):
		l.move(-m.listHeight())
	case key.Matches(msg, m.keys.pageDown):
		l.move(m.listHeight())
	case key.Matches(msg, m.keys.home):
		l.move(-len(l.shown))
	case key.Matches(msg, m.keys.end):
		l.move(len(l.shown))
	case key.Matches(msg, m.keys.toggle):
		l.toggle()
		m.note = ""
	case key.Matches(msg, m.keys.all):
		l.toggleShown()
		m.note = ""
	case key.Matches(msg, m.keys.clear):
		l.backspace()
	case key.Matches(msg, m.keys.back):
		if l.filter != "" {
			l.clearFilter()
		} else {
			m.back()
		}
	case key.Matches(msg, m.keys.confirm):
		m.confirmList()
	case msg.Text != "" && msg.Mod&^tea.ModShift == 0:
		l.typed(msg.Text)
	}
	return nil
}

// confirmList accepts the list shown (enter) and goes to the next screen,
// or says why it cannot.
func (m *model) confirmList() {
	m.note = ""
	switch m.stage {
	case stageDatabases:
		if m.databases.count() == 0 {
			m.note = "Select at least one database with space (ctrl+a selects all shown)."
			return
		}
		m.chosen = m.chosen[:0]
		for i, c := range m.databases.checked {
			if c {
				m.chosen = append(m.chosen, i)
			}
		}
		m.current = -1
		m.nextTables()
	case stageTables:
		d := m.dbs[m.chosen[m.current]]
		if n := m.list().count(); n == len(d.Tables) {
			m.note = fmt.Sprintf("All %d tables of %s are excluded: keep at least one, or go back (esc) and leave the database out.", n, d.Name)
			return
		}
		m.nextTables()
	}
}

// nextTables shows the table list of the next chosen database that has
// tables, or the summary after the last.
func (m *model) nextTables() {
	for m.current++; m.current < len(m.chosen); m.current++ {
		i := m.chosen[m.current]
		if len(m.dbs[i].Tables) == 0 {
			continue
		}
		if m.tables[i] == nil {
			m.tables[i] = tableList(m.dbs[i])
		}
		m.stage = stageTables
		return
	}
	m.stage = stageSummary
}

// back returns to the previous screen (esc), keeping what was checked there.
func (m *model) back() {
	m.note = ""
	if m.stage == stageDatabases {
		return
	}
	if m.stage == stageSummary {
		m.current = len(m.chosen)
	}
	for m.current--; m.current >= 0; m.current-- {
		if len(m.dbs[m.chosen[m.current]].Tables) > 0 {
			m.stage = stageTables
			return
		}
	}
	if m.multi {
		m.stage = stageDatabases
		return
	}
	m.current = -1 // nothing before: stay where we were
	m.nextTables()
}

func (m *model) updateSummary(msg tea.KeyPressMsg) tea.Cmd {
	switch {
	case key.Matches(msg, m.keys.yes):
		m.confirmed, m.answered = true, "y"
		return tea.Quit
	case key.Matches(msg, m.keys.no):
		m.answered = "n"
		return tea.Quit
	case key.Matches(msg, m.keys.back):
		m.back()
	}
	return nil
}

func tableList(d Database) *checklist {
	names := make([]string, len(d.Tables))
	rows := make([]string, len(d.Tables))
	width := nameWidth(len(d.Tables), func(i int) string { return d.Tables[i].Qualified() })
	for i, t := range d.Tables {
		names[i] = t.Qualified()
		rows[i] = fmt.Sprintf("%s  %10s  %s", pad(names[i], width), health.FormatBytes(t.Bytes), countRows(t.Rows))
	}
	return newChecklist(names, rows)
}

// choice is what the checklists hold.
func (m *model) choice() Choice {
	c := Choice{Excluded: map[string][]selection.Table{}}
	for _, i := range m.chosen {
		d := m.dbs[i]
		c.Databases = append(c.Databases, d.Name)
		if l := m.tables[i]; l != nil {
			for j, t := range d.Tables {
				if l.checked[j] {
					c.Excluded[d.Name] = append(c.Excluded[d.Name], t.Table)
				}
			}
		}
	}
	return c
}

// screenHeight is the terminal's height, or a usual one until it is known.
func (m *model) screenHeight() int {
	if m.height <= 0 {
		return defaultHeight
	}
	return m.height
}

func (m *model) listHeight() int {
	return max(3, m.screenHeight()-chromeLines)
}
