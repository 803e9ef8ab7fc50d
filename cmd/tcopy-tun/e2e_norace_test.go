//go:build !race

package main

// e2eRace: the tests run without the race detector; so is the binary.
const e2eRace = false
