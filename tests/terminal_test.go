package tests

import (
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/creack/pty"
	"golang.org/x/sys/unix"
)

// terminal runs the binary on a pseudo-terminal and keeps what a terminal
// would show: a small emulator applies the output's cursor movements and
// erasures to a screen of rows×cols cells, so a test asserts on the screen
// as the user sees it (colours and other attributes dropped), not on the
// stream of redraws.
type terminal struct {
	t    *testing.T
	cmd  *exec.Cmd
	pty  *os.File
	done chan struct{} // closed when the output ends
	err  error         // the process's exit, once done

	mu     sync.Mutex
	screen *screen
	stream strings.Builder // everything written, escape sequences removed
}

// startTerminal starts the binary with args on a new 40×160 pseudo-terminal
// (stdin, stdout and stderr), with the clean test environment.
func startTerminal(t *testing.T, args ...string) *terminal {
	t.Helper()
	return startTerminalStdout(t, nil, args...)
}

// startTerminalStdout is startTerminal with stdout going to w instead of
// the terminal (nil: the terminal).
func startTerminalStdout(t *testing.T, w io.Writer, args ...string) *terminal {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	cmd := exec.CommandContext(ctx, binary, args...)
	cmd.Env = append(cleanEnv(), "TERM=xterm-256color")
	cmd.Stdout = w // pty.Start gives the terminal to what is left nil
	f, err := pty.StartWithSize(cmd, &pty.Winsize{Rows: 40, Cols: 160})
	if err != nil {
		t.Fatalf("start on a pty: %v", err)
	}
	term := &terminal{t: t, cmd: cmd, pty: f, done: make(chan struct{}), screen: newScreen(40, 160)}
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := f.Read(buf)
			term.mu.Lock()
			term.screen.write(buf[:n], &term.stream)
			term.mu.Unlock()
			if err != nil { // EIO once the process and its children closed the pty
				break
			}
		}
		term.err = cmd.Wait()
		close(term.done)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-term.done
		f.Close()
	})
	return term
}

// send types keys: text, or escape sequences such as keyDown.
func (term *terminal) send(keys ...string) {
	term.t.Helper()
	for _, k := range keys {
		if _, err := io.WriteString(term.pty, k); err != nil {
			term.t.Fatalf("send %q: %v", k, err)
		}
	}
}

// Keys as a terminal sends them.
const (
	keyUp    = "\x1b[A"
	keyDown  = "\x1b[B"
	keyEnter = "\r"
	keySpace = " "
	keyEsc   = "\x1b"
	keyCtrlA = "\x01"
	keyCtrlC = "\x03"
)

// text is the screen now, one line per row, trailing blanks cut.
func (term *terminal) text() string {
	term.mu.Lock()
	defer term.mu.Unlock()
	return term.screen.text()
}

// waitFor waits until the screen shows every one of want, and returns it.
func (term *terminal) waitFor(want ...string) string {
	term.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		s := term.text()
		missing := ""
		for _, w := range want {
			if !strings.Contains(s, w) {
				missing = w
				break
			}
		}
		if missing == "" {
			return s
		}
		select {
		case <-term.done:
			term.t.Fatalf("the process ended (%v) before the screen showed %q; screen:\n%s", term.err, missing, term.text())
		default:
		}
		if time.Now().After(deadline) {
			term.t.Fatalf("the screen does not show %q; screen:\n%s", missing, s)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// wait waits for the process to end and returns its exit code and all it
// wrote, escape sequences removed.
func (term *terminal) wait() (int, string) {
	term.t.Helper()
	select {
	case <-term.done:
	case <-time.After(90 * time.Second):
		term.t.Fatalf("the process did not end; screen:\n%s", term.text())
	}
	term.mu.Lock()
	out := term.stream.String()
	term.mu.Unlock()
	var exit *exec.ExitError
	switch {
	case term.err == nil:
		return 0, out
	case errors.As(term.err, &exit):
		return exit.ExitCode(), out
	}
	term.t.Fatalf("wait: %v", term.err)
	return 0, out
}

// restored checks that the process left the terminal in line mode with
// echo, as it found it: a program that ends while the lists show must
// not leave the user's shell in raw mode.
func (term *terminal) restored() {
	term.t.Helper()
	tios, err := unix.IoctlGetTermios(int(term.pty.Fd()), unix.TCGETS)
	if err != nil {
		term.t.Fatalf("read the terminal's mode: %v", err)
	}
	if tios.Lflag&unix.ICANON == 0 || tios.Lflag&unix.ECHO == 0 || tios.Lflag&unix.ISIG == 0 {
		term.t.Errorf("the terminal is left in raw mode (lflag %#x)", tios.Lflag)
	}
}

// screen is a minimal terminal emulator: printable characters, CR, LF,
// backspace, tab, reverse index, the alternate screen (mode 1049), a
// scrolling region, and the CSI sequences that move the cursor (A B C D E
// F G H d f), erase (J K X), insert and delete characters and lines (@ P L
// M), scroll (S T) and repeat (b). Everything else (colours, other modes,
// OSC strings, queries) is read and dropped.
type screen struct {
	rows, cols  int
	cells       [][]rune
	row, col    int
	top, bottom int // the scrolling region, rows inclusive
	last        rune
	savedRow    int
	savedCol    int
	main        [][]rune // the main screen while the alternate one shows
	mainRow     int
	mainCol     int
	pending     []byte // an incomplete escape sequence or UTF-8 character
}

func newScreen(rows, cols int) *screen {
	s := &screen{rows: rows, cols: cols, bottom: rows - 1}
	s.cells = s.blank()
	return s
}

func (s *screen) blank() [][]rune {
	out := make([][]rune, s.rows)
	for i := range out {
		out[i] = blankLine(s.cols)
	}
	return out
}

func blankLine(cols int) []rune {
	return []rune(strings.Repeat(" ", cols))
}

func (s *screen) text() string {
	lines := make([]string, len(s.cells))
	for i, l := range s.cells {
		lines[i] = strings.TrimRight(string(l), " ")
	}
	return strings.TrimRight(strings.Join(lines, "\n"), "\n")
}

func (s *screen) write(p []byte, stream *strings.Builder) {
	b := append(s.pending, p...)
	s.pending = nil
	for len(b) > 0 {
		if b[0] == 0x1b {
			n := escapeLength(b)
			if n == 0 { // incomplete: wait for the rest
				s.pending = append([]byte(nil), b...)
				return
			}
			s.escape(b[:n])
			b = b[n:]
			continue
		}
		if !utf8.FullRune(b) {
			s.pending = append([]byte(nil), b...)
			return
		}
		r, n := utf8.DecodeRune(b)
		b = b[n:]
		stream.WriteRune(r)
		switch r {
		case '\r':
			s.col = 0
		case '\n':
			s.lineFeed()
		case '\b':
			s.col = max(0, s.col-1)
		case '\t':
			s.col = min(s.cols-1, (s.col/8+1)*8)
		default:
			if r < 0x20 || r == 0x7f {
				continue
			}
			s.put(r)
		}
	}
}

func (s *screen) put(r rune) {
	if s.col >= s.cols { // deferred wrap, as xterm does
		s.col = 0
		s.lineFeed()
	}
	s.cells[s.row][s.col] = r
	s.col++
	s.last = r
}

func (s *screen) lineFeed() {
	switch {
	case s.row == s.bottom:
		s.scrollUp(1)
	case s.row < s.rows-1:
		s.row++
	}
}

// scrollUp moves the lines of the scrolling region up by n, blank lines
// coming in at its bottom (and a full-screen scroll of the main screen
// drops the top line, as into a history).
func (s *screen) scrollUp(n int) {
	for range n {
		copy(s.cells[s.top:s.bottom], s.cells[s.top+1:s.bottom+1])
		s.cells[s.bottom] = blankLine(s.cols)
	}
}

func (s *screen) scrollDown(n int) {
	for range n {
		copy(s.cells[s.top+1:s.bottom+1], s.cells[s.top:s.bottom])
		s.cells[s.top] = blankLine(s.cols)
	}
}

// escapeLength is the length of the escape sequence b starts with, or 0
// when b ends before it does.
func escapeLength(b []byte) int {
	if len(b) < 2 {
		return 0
	}
	switch b[1] {
	case '[': // CSI: parameters, then a final byte in 0x40–0x7e
		for i := 2; i < len(b); i++ {
			if b[i] >= 0x40 && b[i] <= 0x7e {
				return i + 1
			}
		}
		return 0
	case ']', 'P', '_', '^': // string, ended by BEL or ESC \
		for i := 2; i < len(b); i++ {
			if b[i] == 0x07 {
				return i + 1
			}
			if b[i] == 0x1b && i+1 < len(b) && b[i+1] == '\\' {
				return i + 2
			}
		}
		return 0
	case '(', ')', '*', '+', '#': // designate a character set: one more byte
		if len(b) < 3 {
			return 0
		}
		return 3
	}
	return 2
}

func (s *screen) escape(seq []byte) {
	if len(seq) == 2 {
		switch seq[1] {
		case 'M': // reverse index
			if s.row == s.top {
				s.scrollDown(1)
			} else {
				s.row = max(0, s.row-1)
			}
		case 'D':
			s.lineFeed()
		case '7':
			s.savedRow, s.savedCol = s.row, s.col
		case '8':
			s.row, s.col = s.savedRow, s.savedCol
		}
		return
	}
	if seq[1] != '[' {
		return
	}
	final := seq[len(seq)-1]
	params := string(seq[2 : len(seq)-1])
	if strings.HasPrefix(params, "?") {
		if final == 'h' || final == 'l' {
			s.privateMode(strings.TrimPrefix(params, "?"), final == 'h')
		}
		return // other modes: cursor visibility, bracketed paste, queries
	}
	if strings.ContainsAny(params, "<>=") {
		return // keyboard protocol and other queries
	}
	var nums []int
	for _, p := range strings.Split(params, ";") {
		n, _ := strconv.Atoi(p)
		nums = append(nums, n)
	}
	arg := func(i, def int) int {
		if i < len(nums) && nums[i] > 0 {
			return nums[i]
		}
		return def
	}
	clampRow := func(r int) int { return max(0, min(s.rows-1, r)) }
	clampCol := func(c int) int { return max(0, min(s.cols-1, c)) }
	line := s.cells[s.row]
	switch final {
	case 'A':
		s.row = clampRow(s.row - arg(0, 1))
	case 'B':
		s.row = clampRow(s.row + arg(0, 1))
	case 'C':
		s.col = clampCol(s.col + arg(0, 1))
	case 'D':
		s.col = clampCol(min(s.col, s.cols-1) - arg(0, 1))
	case 'E':
		s.row, s.col = clampRow(s.row+arg(0, 1)), 0
	case 'F':
		s.row, s.col = clampRow(s.row-arg(0, 1)), 0
	case 'G':
		s.col = clampCol(arg(0, 1) - 1)
	case 'd':
		s.row = clampRow(arg(0, 1) - 1)
	case 'H', 'f':
		s.row, s.col = clampRow(arg(0, 1)-1), clampCol(arg(1, 1)-1)
	case 'J':
		switch arg(0, 0) {
		case 0:
			s.eraseLine(s.row, min(s.col, s.cols), s.cols)
			for r := s.row + 1; r < s.rows; r++ {
				s.cells[r] = blankLine(s.cols)
			}
		case 1:
			for r := 0; r < s.row; r++ {
				s.cells[r] = blankLine(s.cols)
			}
			s.eraseLine(s.row, 0, min(s.col+1, s.cols))
		default:
			s.cells = s.blank()
		}
	case 'K':
		switch arg(0, 0) {
		case 0:
			s.eraseLine(s.row, min(s.col, s.cols), s.cols)
		case 1:
			s.eraseLine(s.row, 0, min(s.col+1, s.cols))
		default:
			s.eraseLine(s.row, 0, s.cols)
		}
	case 'X':
		s.eraseLine(s.row, min(s.col, s.cols), min(s.cols, s.col+arg(0, 1)))
	case 'P': // delete characters: the rest of the line moves left
		at, n := min(s.col, s.cols), arg(0, 1)
		copy(line[at:], line[min(s.cols, at+n):])
		s.eraseLine(s.row, max(at, s.cols-n), s.cols)
	case '@': // insert blanks: the rest of the line moves right
		at, n := min(s.col, s.cols), arg(0, 1)
		copy(line[min(s.cols, at+n):], line[at:])
		s.eraseLine(s.row, at, min(s.cols, at+n))
	case 'M', 'L': // delete or insert lines within the scrolling region
		if s.row < s.top || s.row > s.bottom {
			return
		}
		top := s.top
		s.top = s.row
		if final == 'M' {
			s.scrollUp(min(arg(0, 1), s.bottom-s.row+1))
		} else {
			s.scrollDown(min(arg(0, 1), s.bottom-s.row+1))
		}
		s.top = top
		s.col = 0
	case 'S':
		s.scrollUp(arg(0, 1))
	case 'T':
		s.scrollDown(arg(0, 1))
	case 'r':
		s.top, s.bottom = clampRow(arg(0, 1)-1), clampRow(arg(1, s.rows)-1)
		if s.top >= s.bottom {
			s.top, s.bottom = 0, s.rows-1
		}
		s.row, s.col = 0, 0
	case 'b':
		for range arg(0, 1) {
			s.put(s.last)
		}
	case 's':
		s.savedRow, s.savedCol = s.row, s.col
	case 'u':
		s.row, s.col = s.savedRow, s.savedCol
	}
}

// privateMode switches the alternate screen (1049, with the cursor saved
// and restored, as xterm does); other modes change nothing shown.
func (s *screen) privateMode(mode string, on bool) {
	if mode != "1049" {
		return
	}
	switch {
	case on && s.main == nil:
		s.main, s.mainRow, s.mainCol = s.cells, s.row, s.col
		s.cells = s.blank()
	case !on && s.main != nil:
		s.cells, s.row, s.col = s.main, s.mainRow, s.mainCol
		s.main = nil
	}
	s.top, s.bottom = 0, s.rows-1
}

func (s *screen) eraseLine(row, from, to int) {
	for c := from; c < to; c++ {
		s.cells[row][c] = ' '
	}
}

// TestScreen checks the emulator on the sequences bubbletea's renderer
// writes: a redraw from three lines up that repaints only a changed line,
// an erase below, and a wrap.
func TestScreen(t *testing.T) {
	s := newScreen(5, 10)
	var stream strings.Builder
	feed := func(chunks ...string) {
		for _, c := range chunks {
			for i := 0; i < len(c); i++ { // byte by byte: sequences split anywhere
				s.write([]byte{c[i]}, &stream)
			}
		}
	}
	feed("\x1b[?25l\ra\x1b[1;32mb\x1b[0m\x1b[K\r\nline2\r\nline3\x1b[K\r")
	if got, want := s.text(), "ab\nline2\nline3"; got != want {
		t.Fatalf("first frame %q, want %q", got, want)
	}
	feed("\x1b[2A\n", "LINE2\x1b[K\r\n", "x\x1b[K\x1b[J\r")
	if got, want := s.text(), "ab\nLINE2\nx"; got != want {
		t.Fatalf("second frame %q, want %q", got, want)
	}
	feed("\x1b[2A\x1b[J✓ done\r\n0123456789ab\r\n")
	if got, want := s.text(), "✓ done\n0123456789\nab"; got != want {
		t.Fatalf("third frame %q, want %q", got, want)
	}
	feed("\r\n\r\n\r\nlast")
	if got, want := s.text(), "ab\n\n\n\nlast"; got != want {
		t.Fatalf("after scrolling %q, want %q", got, want)
	}
	// The alternate screen: drawn with absolute moves, a scrolling region,
	// deleted lines and characters, a repeat; gone when left.
	feed("\x1b[?1049h\x1b[Hone\r\ntwo\r\nthree\x1b[2;4r\x1b[2d\x1b[1M\x1b[r\x1b[1;2H\x1b[1P\x1b[3;1Hx\x1b[2b\x1bM\x1bM")
	if got, want := s.text(), "oe\nthree\nxxx"; got != want {
		t.Fatalf("alternate screen %q, want %q", got, want)
	}
	feed("\x1b[?1049l!")
	if got, want := s.text(), "ab\n\n\n\nlast!"; got != want {
		t.Fatalf("back from the alternate screen %q, want %q", got, want)
	}
}
