package apply

import (
	"bytes"
	"testing"
)

func TestMergeKeyDoesNotCollide(t *testing.T) {
	keys := [][][]byte{
		{[]byte("a"), []byte("bc")},
		{[]byte("ab"), []byte("c")},
		{[]byte("abc")},
		{nil, []byte("abc")},
		{[]byte(""), []byte("abc")},
		{[]byte("1:a")},
		{[]byte("1"), []byte("a")},
	}
	seen := map[string]int{}
	for i, k := range keys {
		m := mergeKey(k)
		if j, ok := seen[m]; ok {
			t.Fatalf("keys %d and %d render the same merge key %q", j, i, m)
		}
		seen[m] = i
	}
}

func TestWriteCopyText(t *testing.T) {
	tests := []struct {
		in   []byte
		want string
	}{
		{nil, `\N`},
		{[]byte(""), ``},
		{[]byte(`\N`), `\\N`},
		{[]byte("a\tb\nc\rd\\e"), `a\tb\nc\rd\\e`},
		{[]byte("plain"), "plain"},
	}
	for _, tt := range tests {
		var b bytes.Buffer
		writeCopyText(&b, tt.in)
		if got := b.String(); got != tt.want {
			t.Errorf("writeCopyText(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestWriteCopyTextLong(t *testing.T) {
	long := bytes.Repeat([]byte("abcdefgh"), 8)
	for _, special := range []string{"\\", "\n", "\r", "\t"} {
		in := append(append(append([]byte{}, long...), special...), long...)
		var b bytes.Buffer
		writeCopyText(&b, in)
		want := string(long) + map[string]string{"\\": `\\`, "\n": `\n`, "\r": `\r`, "\t": `\t`}[special] + string(long)
		if b.String() != want {
			t.Errorf("writeCopyText(long with %q) = %q", special, b.String())
		}
	}
	var b bytes.Buffer
	writeCopyText(&b, long)
	if b.String() != string(long) {
		t.Errorf("writeCopyText(long plain) = %q", b.String())
	}
}

func TestArrays(t *testing.T) {
	rows := [][][]byte{
		{[]byte("1"), []byte(`say "hi"`), nil},
		{[]byte("2"), []byte(`back\slash`), []byte("")},
		{[]byte("3"), []byte("NULL"), []byte("{1,2}")},
	}
	got := arrays(rows, 3, nil)
	want := []string{`{"1","2","3"}`, `{"say \"hi\"","back\\slash","NULL"}`, `{NULL,"","{1,2}"}`}
	for i := range want {
		if string(got[i]) != want[i] {
			t.Errorf("column %d: %s, want %s", i, got[i], want[i])
		}
	}
	if got := arrays(rows, 3, []int{2}); len(got) != 1 || string(got[0]) != want[2] {
		t.Errorf("cols [2]: %q", got)
	}
}
