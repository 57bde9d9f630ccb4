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
