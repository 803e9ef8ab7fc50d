//go:build race

package main

// realRace: the test binary runs with the race detector, so the suite builds
// tcopy-tun with it too; real servers and real traffic then exercise the
// product's concurrency under the detector.
const realRace = true
