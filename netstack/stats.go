package netstack

// Stats is a snapshot of a Stack's counters, for summaries, benchmarks and
// tests. Counters are cumulative since New.
type Stats struct {
	// AssignedAddresses is the number of local addresses currently
	// assigned to the NIC on behalf of live conns and listeners.
	AssignedAddresses int

	// TCP.
	ActiveOpens        uint64 // dials that sent a SYN
	PassiveOpens       uint64 // connections accepted by listeners
	FailedOpens        uint64 // handshakes that failed (refused, timed out, unreachable)
	CurrentEstablished uint64 // connections in ESTABLISHED or CLOSE_WAIT
	SegmentsSent       uint64
	SegmentsReceived   uint64 // valid segments only
	Retransmits        uint64
	Timeouts           uint64 // retransmission timeouts (RTO) fired
	ResetsSent         uint64
	ResetsReceived     uint64

	// NIC.
	PacketsSent     uint64
	PacketsReceived uint64
	// TxDroppedNoBufferSpace counts packets the link endpoint refused
	// because its queue was full.
	TxDroppedNoBufferSpace uint64

	// Link: the batch endpoint's own counters (zero for other endpoints).
	LinkTxDropped uint64 // queued packets dropped: queue full, or left at Close
	LinkTxErrors  uint64 // packets the device refused (write errors)
}

// linkCounters is implemented by link endpoints that count their own drops.
type linkCounters interface {
	counters() (txDropped, txErrors uint64)
}

// Stats returns a snapshot of the stack's counters.
func (st *Stack) Stats() Stats {
	st.addrMu.Lock()
	n := len(st.addrs)
	st.addrMu.Unlock()
	s := st.s.Stats()
	tcp := s.TCP
	out := Stats{
		AssignedAddresses:  n,
		ActiveOpens:        tcp.ActiveConnectionOpenings.Value(),
		PassiveOpens:       tcp.PassiveConnectionOpenings.Value(),
		FailedOpens:        tcp.FailedConnectionAttempts.Value(),
		CurrentEstablished: tcp.CurrentEstablished.Value(),
		SegmentsSent:       tcp.SegmentsSent.Value(),
		SegmentsReceived:   tcp.ValidSegmentsReceived.Value(),
		Retransmits:        tcp.Retransmits.Value(),
		Timeouts:           tcp.Timeouts.Value(),
		ResetsSent:         tcp.ResetsSent.Value(),
		ResetsReceived:     tcp.ResetsReceived.Value(),
	}
	if lc, ok := st.ep.(linkCounters); ok {
		out.LinkTxDropped, out.LinkTxErrors = lc.counters()
	}
	if nic, ok := st.s.NICInfo()[nicID]; ok {
		out.PacketsSent = nic.Stats.Tx.Packets.Value()
		out.PacketsReceived = nic.Stats.Rx.Packets.Value()
		out.TxDroppedNoBufferSpace = nic.Stats.TxPacketsDroppedNoBufferSpace.Value()
	}
	return out
}
