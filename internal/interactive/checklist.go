package interactive

import (
	"strings"
)

// checklist is one list of the flow: rows the cursor moves through, checked
// with space, narrowed by typing. It holds no terminal state, so the model
// can keep one per database and go back to it.
type checklist struct {
	names   []string // what the filter matches, one per row
	rows    []string // the rendered rows, without cursor and check box
	checked []bool
	filter  string
	shown   []int // indexes of the rows that match the filter, in order
	cursor  int   // position in shown
	offset  int   // position in shown of the first row on screen
}

func newChecklist(names, rows []string) *checklist {
	l := &checklist{names: names, rows: rows, checked: make([]bool, len(rows))}
	l.refilter()
	return l
}

// refilter recomputes the shown rows: those whose name contains the filter,
// ignoring case. The cursor stays on its row when that row is still shown.
func (l *checklist) refilter() {
	current := -1
	if l.cursor < len(l.shown) {
		current = l.shown[l.cursor]
	}
	needle := strings.ToLower(l.filter)
	l.shown = l.shown[:0]
	l.cursor = 0
	for i, n := range l.names {
		if needle == "" || strings.Contains(strings.ToLower(n), needle) {
			if i == current {
				l.cursor = len(l.shown)
			}
			l.shown = append(l.shown, i)
		}
	}
	l.offset = 0
}

// typed adds s to the filter.
func (l *checklist) typed(s string) {
	l.filter += s
	l.refilter()
}

// backspace removes the filter's last character.
func (l *checklist) backspace() {
	if l.filter == "" {
		return
	}
	r := []rune(l.filter)
	l.filter = string(r[:len(r)-1])
	l.refilter()
}

// clearFilter shows every row again.
func (l *checklist) clearFilter() {
	l.filter = ""
	l.refilter()
}

// move moves the cursor by delta rows, stopping at either end.
func (l *checklist) move(delta int) {
	l.cursor = max(0, min(len(l.shown)-1, l.cursor+delta))
}

// toggle checks or unchecks the row under the cursor.
func (l *checklist) toggle() {
	if len(l.shown) == 0 {
		return
	}
	i := l.shown[l.cursor]
	l.checked[i] = !l.checked[i]
}

// toggleShown checks every shown row, or unchecks them all when they all
// are checked already.
func (l *checklist) toggleShown() {
	all := true
	for _, i := range l.shown {
		all = all && l.checked[i]
	}
	for _, i := range l.shown {
		l.checked[i] = !all
	}
}

// count is the number of checked rows, shown or not.
func (l *checklist) count() int {
	n := 0
	for _, c := range l.checked {
		if c {
			n++
		}
	}
	return n
}

// window returns the positions in shown that fit on height rows, keeping
// the cursor on screen.
func (l *checklist) window(height int) (from, to int) {
	height = max(1, height)
	if l.cursor < l.offset {
		l.offset = l.cursor
	}
	if l.cursor >= l.offset+height {
		l.offset = l.cursor - height + 1
	}
	l.offset = max(0, min(l.offset, len(l.shown)-height))
	return l.offset, min(len(l.shown), l.offset+height)
}
