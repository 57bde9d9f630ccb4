//go:build race

package main

// raceFlags build the export data TestEveryFlagIsRead reads as this test
// binary was built, so the build cache serves it.
var raceFlags = []string{"-race"}
