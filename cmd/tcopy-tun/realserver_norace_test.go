//go:build !race

package main

// realRace: see realserver_race_test.go.
const realRace = false
