// Package tlsdecrypt decrypts captured TLS connections with the secrets
// their endpoints logged, so that a TLS session can be replayed as the
// plaintext it carried.
//
// What it owns:
//   - KeyLog: the NSS key log format (SSLKEYLOGFILE), written by curl,
//     browsers, Go (tls.Config.KeyLogWriter), OpenSSL and Java agents, and
//     stored by Wireshark in pcapng decryption secrets blocks. It keeps
//     CLIENT_RANDOM (TLS 1.2 master secret) and the TLS 1.3
//     CLIENT_/SERVER_HANDSHAKE_TRAFFIC_SECRET and CLIENT_/SERVER_TRAFFIC_SECRET_0,
//     by client random; other labels, comments and blank lines are skipped.
//     Bounded: MaxKeyLogLine per line, MaxKeyLogEntries client randoms.
//     A KeyLog shared by the connections of a capture also remembers the
//     TLS 1.2 master secrets it saw used, by session ID and ticket (at most
//     65536), because a resumed TLS 1.2 session reuses its master secret
//     and not every endpoint logs it again (crypto/tls does not).
//   - Conn: one TCP connection's decryptor. It is fed the two byte streams
//     (client→server, server→client) in capture order, each piece with its
//     stream offset and capture time; it parses records across pieces,
//     reads the hellos (client random, SNI, ALPN, version, suite,
//     HelloRetryRequest, resumption), derives keys (TLS 1.2 PRF with
//     SHA-256 or SHA-384 from the master secret; TLS 1.3 HKDF-Expand-Label
//     from the traffic secrets, KeyUpdate included) and opens records:
//     TLS 1.3 AES-128-GCM, AES-256-GCM, ChaCha20-Poly1305; TLS 1.2 AES-GCM,
//     ChaCha20-Poly1305 and AES-CBC (SHA-1, SHA-256, SHA-384 MACs, with or
//     without encrypt_then_mac). It emits Pieces: application data with its
//     plaintext offset, capture time and the ciphertext offsets of the record
//     that carried it.
//   - Result and Status: what became of a connection — decrypting, not TLS,
//     no keys, an unsupported version or suite or renegotiation, a hole in a
//     stream, a record that did not open — with an error wrapping one of the
//     sentinel errors. Alerts end their direction. Nothing here panics on
//     input; the fuzz tests hold it to that.
//
// What it does not do: TLS 1.0/1.1 and SSL 3 (other PRFs), RSA key exchange
// from a private key (only logged secrets), 0-RTT early data (its records
// are skipped and counted: CLIENT_EARLY_TRAFFIC_SECRET is not used), and
// renegotiation.
//
// What it must not know: packets, sessions and their reassembly
// (replay/session), the network stack, the replay. The capture package
// hands it pcapng secrets through capture.SecretsHandler without importing
// it.
//
// Concurrency: a KeyLog may be read and grown concurrently; a Conn belongs
// to one goroutine. Memory: a Conn holds at most about one record and one
// handshake message (maxHandshake) per direction beyond what it emits.
package tlsdecrypt
