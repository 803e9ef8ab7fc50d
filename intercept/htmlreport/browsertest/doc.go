// Package browsertest loads a page in a real browser, headless Chromium
// (Debian package chromium), for the tests of the HTML report: DumpDOM
// returns the document as the browser holds it once its scripts ran, and
// Screenshot writes a PNG of it.
//
// Chromium runs with no network use of its own (no background networking,
// component updates, sync or QUIC), in a fresh profile directory removed
// with the test, and is killed when it outlives its deadline. The pages it
// loads are local files. Chromium and its helpers run in a process group
// of their own, killed at the deadline and after the browser exits.
//
// When chromium is not installed the test is skipped with the package to
// install, or fails when TCOPY_TUN_PRIVILEGED_TESTS=1 (make check, CI),
// so that a runner without it cannot pass by skipping.
package browsertest
