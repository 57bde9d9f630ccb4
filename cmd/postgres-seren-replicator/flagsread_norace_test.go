//go:build !race

package main

// raceFlags: see flagsread_race_test.go.
var raceFlags []string
