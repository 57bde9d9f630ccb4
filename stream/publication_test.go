package stream

import (
	"strings"
	"testing"
)

func TestPublicationName(t *testing.T) {
	long := strings.Repeat("s", 63)
	tests := []struct {
		slot, want string
	}{
		{"seren_shop", "seren_shop_pub"},
		{strings.Repeat("a", 59), strings.Repeat("a", 59) + "_pub"},
	}
	for _, tt := range tests {
		if got := PublicationName(tt.slot); got != tt.want {
			t.Errorf("PublicationName(%q) = %q, want %q", tt.slot, got, tt.want)
		}
	}
	// Past 63 bytes the name is cut and a hash of the whole slot name keeps
	// slots that share their first bytes apart.
	seen := map[string]string{}
	for _, slot := range []string{strings.Repeat("a", 60), long, long[:62] + "t", DefaultSlotName(strings.Repeat("Db", 40))} {
		got := PublicationName(slot)
		if len(got) > 63 || !strings.HasSuffix(got, "_pub") {
			t.Errorf("PublicationName(%q) = %q (%d bytes)", slot, got, len(got))
		}
		if other, ok := seen[got]; ok {
			t.Errorf("slots %q and %q share publication %q", slot, other, got)
		}
		seen[got] = slot
		if got == LegacyPublication {
			t.Errorf("slot %q gets the shared publication", slot)
		}
	}
}
