//go:build race

package main

// e2eRace: the tests run with the race detector, so the binary under test
// is built with it too.
const e2eRace = true
