// Package tuntest holds the helpers that privileged tests of tcopy-tun share:
// a probe of the real capability (Privileged), throw-away network namespaces
// (NewNetns, Netns), running a test function inside a fresh namespace by
// re-executing the test binary (InNetns), and veth pairs joining two
// namespaces for the "target on another host" topology (Veth).
//
// It owns nothing outside the namespaces it creates: every namespace is named
// tcopytest-<package>-<random>, every process it starts is stopped by PID, and
// both are removed in t.Cleanup even when the test fails. Traffic never
// leaves those namespaces.
//
// It must not know about gVisor, sessions or the tun package itself: it only
// drives ip(8) and a few system calls, so any package's tests can use it.
//
// Privileged tests are named TestPrivileged...; they call Privileged (or
// NewNetns / InNetns, which call it) first. When the capability is missing
// they skip with a remedy, unless TCOPY_TUN_PRIVILEGED_TESTS=1 is set (CI):
// then they fail.
//
// Concurrency: a *Netns may be used from several goroutines of one test; its
// cleanup runs once, after the test and its subtests have finished.
package tuntest
