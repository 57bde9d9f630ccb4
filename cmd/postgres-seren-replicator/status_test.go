package main

import (
	"testing"
	"time"
)

func TestByteSize(t *testing.T) {
	tests := []struct {
		in      string
		want    byteSize
		wantErr bool
	}{
		{"1000", 1000, false},
		{"256MiB", 256 << 20, false},
		{"1 GiB", 1 << 30, false},
		{"1.5kB", 1500, false},
		{"2GB", 2e9, false},
		{"12QB", 0, true},
		{"-1", 0, true},
		{"MiB", 0, true},
	}
	for _, tt := range tests {
		var got byteSize
		err := got.UnmarshalText([]byte(tt.in))
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("%q: got %d, %v; want %d, error %v", tt.in, got, err, tt.want, tt.wantErr)
		}
	}
}

func TestSeconds(t *testing.T) {
	tests := []struct {
		in      string
		want    time.Duration
		wantErr bool
	}{
		{"60", time.Minute, false},
		{"1.5", 1500 * time.Millisecond, false},
		{"5m", 5 * time.Minute, false},
		{"soon", 0, true},
		{"-3s", 0, true},
	}
	for _, tt := range tests {
		var got seconds
		err := got.UnmarshalText([]byte(tt.in))
		if (err != nil) != tt.wantErr || time.Duration(got) != tt.want {
			t.Errorf("%q: got %s, %v; want %s, error %v", tt.in, time.Duration(got), err, tt.want, tt.wantErr)
		}
	}
}
