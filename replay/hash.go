package replay

import (
	"net/netip"

	"github.com/tcopy-tun/tcopy-tun/replay/session"
)

// mix is the splitmix64 finalizer: a bijection with full avalanche. The
// hashes built on it decide sampling, sharding and client mapping; they
// must be the same on every machine and Go version, so no maphash.
func mix(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

// hasher absorbs 64-bit words.
type hasher uint64

func (h hasher) word(v uint64) hasher {
	return hasher(mix(uint64(h) ^ mix(v+0x9e3779b97f4a7c15)))
}

func (h hasher) addr(a netip.Addr) hasher {
	b := a.Unmap().As16()
	hi := uint64(b[0])<<56 | uint64(b[1])<<48 | uint64(b[2])<<40 | uint64(b[3])<<32 |
		uint64(b[4])<<24 | uint64(b[5])<<16 | uint64(b[6])<<8 | uint64(b[7])
	lo := uint64(b[8])<<56 | uint64(b[9])<<48 | uint64(b[10])<<40 | uint64(b[11])<<32 |
		uint64(b[12])<<24 | uint64(b[13])<<16 | uint64(b[14])<<8 | uint64(b[15])
	return h.word(hi).word(lo)
}

func (h hasher) sum() uint64 { return uint64(h) }

// Domain separators, so that the sample, shard and mapping hashes of one
// session are independent.
const (
	domSession = 0x7365737369_6f6e // "session"
	domSample  = 0x73616d706c65    // "sample"
	domShard   = 0x7368617264      // "shard"
	domAddr    = 0x61646472        // "addr"
	domPort    = 0x706f7274        // "port"
	domRun     = 0x72756e          // "run"
)

// SessionHash identifies a captured session independently of the run: its
// 4-tuple, the client's ISN and its capture start time. Sampling and sharding
// use it, so that every machine replaying the same capture agrees on which
// session belongs where.
func SessionHash(s *session.Session) uint64 { return HeadHash(s.Head()) }

// HeadHash is SessionHash from what is known when the session starts.
func HeadHash(h *session.Head) uint64 {
	return hasher(domSession).
		addr(h.Client.Addr()).word(uint64(h.Client.Port())).
		addr(h.Server.Addr()).word(uint64(h.Server.Port())).
		word(uint64(h.ISN)).word(uint64(h.Start.UnixNano())).sum()
}

// selected reports whether a session with hash h is replayed under the
// sample fraction and shard.
func selected(h uint64, sample float64, shard Shard) bool {
	if sample > 0 && sample < 1 {
		// 53 bits make an exactly representable fraction in [0, 1).
		f := float64(mix(h^domSample)>>11) / (1 << 53)
		if f >= sample {
			return false
		}
	}
	if shard.Count > 1 && mix(h^domShard)%uint64(shard.Count) != uint64(shard.Index) {
		return false
	}
	return true
}
