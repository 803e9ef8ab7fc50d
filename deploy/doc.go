// Package deploy holds no code: it is the home of the tests of what
// deploy/ ships, in a Go module of its own so that the Kubernetes API types
// they decode into stay out of tcopy-tun's own module.
//
//   - Dockerfile: the tcopy-tun image (a static binary on distroless, uid
//     65532) and the capture-agent image (tcpdump and netcat).
//     dockerfile_test.go copies what the build stage COPYs into an empty
//     directory, runs its `go build` there, and checks that the binary is
//     static (no ELF interpreter) and that the Go image is at least go.mod's
//     Go.
//   - kubernetes/: the sharded replay Job, the test pod with its tcopy-tun
//     sidecar, the capture-agent DaemonSet and their Services and volume.
//     manifest_test.go decodes every manifest strictly into k8s.io/api types
//     (an unknown or duplicate field fails) and checks how they are wired
//     together. Running them for real without a cluster is in cmd/tcopy-tun:
//     TestPrivilegedKubernetesJob (the Job's N pods against nginx),
//     TestPrivilegedKubernetesSidecar (the sidecar confined as a container)
//     and TestPrivilegedKubernetesCaptureAgent (the agent's stream).
//
// Run with `cd deploy && go test ./...`; `make test` and `make lint` cover
// this module too.
package deploy
