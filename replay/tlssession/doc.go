// Package tlssession turns the TLS sessions of a capture into the plaintext
// sessions they carried, between the session Builder and whatever consumes
// sessions (the replay, inspect, the comparison).
//
// What it owns: Sink, a session.Sink wrapper. A session whose first client
// bytes are a TLS handshake record is decrypted with replay/tlsdecrypt: its
// client chunks become chunks of plaintext (the capture time of the record
// that carried them, ServerBytesBefore counted in plaintext server bytes —
// the plaintext of the server records the client had wholly received), its
// server bytes become the server's plaintext, and what cannot be decrypted
// (no keys, an unsupported suite, a hole, a damaged record) becomes a Hole
// from the point where decryption stopped. Every other session passes
// through unchanged. Stats counts the outcomes.
//
// What it must not know: packets and captures (it sees session events),
// the network stack, the replay.
//
// Concurrency: like any session.Sink, it is called on the Builder's
// goroutine; Stats may be read once the Builder is done (or under the
// caller's own synchronisation).
//
// Limits: the server stream must reach it whole for the translation of
// ServerBytesBefore and for the server's plaintext — a Builder whose
// ServerDataLimit cuts the server stream leaves the rest as a hole. So
// cmd/tcopy-tun lifts the Builder's limit and puts session.LimitServer
// after the Sink: --response-limit cuts the plaintext.
// Memory per session: the decryptor's (about one record per direction)
// plus one entry per server record not yet passed by a client chunk's
// acknowledgment.
package tlssession
