package replay

// growStack grows the calling goroutine's stack to at least
// stackFrame bytes in one step, while the goroutine is still shallow.
//
// Why: a session's goroutines go deep into the TCP stack (gVisor's connect
// and receive paths). A new goroutine starts with a small stack, and Go
// grows a stack by doubling and copying it, frame by frame, when a call
// does not fit — here several times per session, each time with a deep
// stack to copy: 9 % of the replayer's CPU in a profile of short sessions
// through the TUN. One growth at the start copies only a few frames.
// (Reusing goroutines does not help: the collector shrinks idle stacks.)
func growStack() byte { return growStackFrame(0) }

// stackFrame is the frame growStackFrame asks for; the stack becomes the
// next power of two above it plus what is in use.
const stackFrame = 12 << 10

//go:noinline
func growStackFrame(i int) byte {
	var b [stackFrame]byte // an index from a parameter keeps the array
	return b[i]
}
