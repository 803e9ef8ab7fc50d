package capture

import (
	"strconv"

	"github.com/gopacket/gopacket/layers"
)

// Link types the decoder handles (LINKTYPE_* values from tcpdump.org; 12 and
// 14 are the BSD and OpenBSD numbers of DLT_RAW, which appear in files too).
const (
	linkNull     layers.LinkType = 0
	linkEthernet layers.LinkType = 1
	linkPPP      layers.LinkType = 9
	linkRaw12    layers.LinkType = 12
	linkRaw14    layers.LinkType = 14
	linkPPPHDLC  layers.LinkType = 50
	linkRaw      layers.LinkType = 101
	linkCHDLC    layers.LinkType = 104
	linkLoop     layers.LinkType = 108
	linkSLL      layers.LinkType = 113
	linkIPv4     layers.LinkType = 228
	linkIPv6     layers.LinkType = 229
	linkNFLOG    layers.LinkType = 239
	linkMPacket  layers.LinkType = 274
	linkSLL2     layers.LinkType = 276
	linkPPPEther layers.LinkType = 51
)

const supportedLinkTypesText = "0 NULL, 1 ETHERNET, 9 PPP, 12/14/101 RAW, 50 PPP_HDLC, 51 PPP_ETHER, 104 C_HDLC, 108 LOOP, 113 LINUX_SLL, 228 IPV4, 229 IPV6, 239 NFLOG, 274 ETHERNET_MPACKET, 276 LINUX_SLL2"

// SupportedLinkType reports whether the decoder handles link type lt.
func SupportedLinkType(lt layers.LinkType) bool {
	switch lt {
	case linkNull, linkEthernet, linkPPP, linkRaw12, linkRaw14, linkPPPHDLC, linkPPPEther,
		linkRaw, linkCHDLC, linkLoop, linkSLL, linkIPv4, linkIPv6, linkNFLOG, linkMPacket, linkSLL2:
		return true
	}
	return false
}

// linkTypeName returns the LINKTYPE_ name (without the prefix) of the link
// types one is likely to meet, for messages and inspect output.
func linkTypeName(lt layers.LinkType) string {
	switch lt {
	case 0:
		return "NULL"
	case 1:
		return "ETHERNET"
	case 6:
		return "IEEE802_5"
	case 8:
		return "SLIP"
	case 9:
		return "PPP"
	case 10:
		return "FDDI"
	case 12, 14, 101:
		return "RAW"
	case 50:
		return "PPP_HDLC"
	case 51:
		return "PPP_ETHER"
	case 100:
		return "ATM_RFC1483"
	case 104:
		return "C_HDLC"
	case 105:
		return "IEEE802_11"
	case 107:
		return "FRELAY"
	case 108:
		return "LOOP"
	case 113:
		return "LINUX_SLL"
	case 117:
		return "PFLOG"
	case 119:
		return "IEEE802_11_PRISM"
	case 127:
		return "IEEE802_11_RADIOTAP"
	case 143:
		return "DOCSIS"
	case 187:
		return "BLUETOOTH_HCI_H4"
	case 189:
		return "USB_LINUX"
	case 192:
		return "PPI"
	case 195:
		return "IEEE802_15_4_WITHFCS"
	case 197:
		return "ERF"
	case 201:
		return "BLUETOOTH_HCI_H4_WITH_PHDR"
	case 220:
		return "USB_LINUX_MMAPPED"
	case 227:
		return "CAN_SOCKETCAN"
	case 228:
		return "IPV4"
	case 229:
		return "IPV6"
	case 239:
		return "NFLOG"
	case 249:
		return "USBPCAP"
	case 251:
		return "BLUETOOTH_LE_LL"
	case 252:
		return "WIRESHARK_UPPER_PDU"
	case 253:
		return "NETLINK"
	case 274:
		return "ETHERNET_MPACKET"
	case 276:
		return "LINUX_SLL2"
	}
	if lt >= 147 && lt <= 162 {
		return "USER" + strconv.Itoa(int(lt)-147)
	}
	return ""
}

// LinkTypeName returns "<number> (<LINKTYPE name>)", or just the number
// for a type without a known name.
func LinkTypeName(lt layers.LinkType) string {
	n := strconv.Itoa(int(lt))
	if name := linkTypeName(lt); name != "" {
		return n + " (" + name + ")"
	}
	return n
}
