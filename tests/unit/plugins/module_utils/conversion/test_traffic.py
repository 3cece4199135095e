"""Reading the boot check's captures: frames built here byte by byte as the protocols lay them out (the
functional tests read QEMU's own captures of real guests)."""

import ipaddress
import struct

from ansible_collections.xms.warm_migration.plugins.module_utils.conversion import traffic

GUEST = "00:50:56:01:00:07"
SLIRP = "52:55:0a:00:02:02"


def mac(text):
    return bytes(int(part, 16) for part in text.split(":"))


def ether(source, ethertype, payload, destination="ff:ff:ff:ff:ff:ff"):
    return mac(destination) + mac(source) + struct.pack("!H", ethertype) + payload


def ipv4(source, destination, protocol, payload):
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 0, 0, 64, protocol, 0,
                         ipaddress.IPv4Address(source).packed, ipaddress.IPv4Address(destination).packed)  # fmt: skip
    return header + payload


def dhcp(kind, requested=None):
    bootp = bytes([1, 1, 6, 0]) + bytes(232) + b"\x63\x82\x53\x63"  # op, htype, hlen, hops ... magic cookie
    options = bytes([53, 1, kind]) + (bytes([50, 4]) + ipaddress.IPv4Address(requested).packed if requested else b"")
    payload = bootp + options + b"\xff"
    udp = struct.pack("!HHHH", 68, 67, 8 + len(payload), 0) + payload
    return ether(GUEST, 0x0800, ipv4("0.0.0.0", "255.255.255.255", 17, udp))


def arp(op, sender, target, source=GUEST):
    body = struct.pack("!HHBBH", 1, 0x0800, 6, 4, op) + mac(source) + ipaddress.IPv4Address(sender).packed
    return ether(source, 0x0806, body + bytes(6) + ipaddress.IPv4Address(target).packed)


def ipv6(source, following, payload):
    header = struct.pack("!IHBB", 6 << 28, len(payload), following, 255)
    return ether(GUEST, 0x86DD, header + ipaddress.IPv6Address(source).packed + bytes(16) + payload)


def pcap(*records, truncated=b""):
    data = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)
    for frame in records:
        data += struct.pack("<IIII", 0, 0, len(frame), len(frame)) + frame
    if truncated:  # a record QEMU is still writing
        data += struct.pack("<IIII", 0, 0, len(truncated), len(truncated)) + truncated[:10]
    return data


def test_each_kind_of_frame_the_guest_sends_is_told_once_in_the_order_seen():
    hop_by_hop = bytes([58, 0, 5, 2, 0, 0, 1, 0])  # router alert, as an MLD report carries it
    capture = pcap(
        dhcp(1),
        dhcp(1),  # a retry: told once
        arp(1, "0.0.0.0", "10.10.1.50"),
        arp(1, "10.10.1.50", "10.10.1.50"),
        arp(1, "10.10.1.50", "10.10.1.1"),
        dhcp(3, requested="10.0.2.15"),
        ipv6("::", 58, bytes([135, 0, 0, 0]) + bytes(20)),
        ipv6("fe80::250:56ff:fe01:7", 58, bytes([133, 0, 0, 0, 0, 0, 0, 0])),
        ipv6("fe80::250:56ff:fe01:7", 0, hop_by_hop + bytes([143, 0, 0, 0]) + bytes(4)),
        ether(GUEST, 0x0800, ipv4("10.10.1.50", "10.10.1.1", 6, bytes(20))),
        arp(2, "10.0.2.2", "10.0.2.15", source=SLIRP),  # the host side's answer: not the guest's
        truncated=dhcp(7),
    )
    assert traffic.evidence(capture, GUEST) == [
        "DHCP discover",
        "ARP probe for 10.10.1.50",
        "ARP announcement of 10.10.1.50",
        "ARP for 10.10.1.1 from 10.10.1.50",
        "DHCP request for 10.0.2.15",
        "IPv6 neighbour solicitation",
    ]  # at most MAX_EVIDENCE lines
    later = traffic.evidence(pcap(*[ipv6("fe80::1", 58, bytes([133, 0, 0, 0]) + bytes(4))]), GUEST)
    assert later == ["IPv6 router solicitation from fe80::1"]
    mld = traffic.evidence(pcap(ipv6("fe80::1", 0, hop_by_hop + bytes([143]) + bytes(7))), GUEST)
    assert mld == ["IPv6 multicast listener report from fe80::1"]
    tcp = traffic.evidence(pcap(ether(GUEST, 0x0800, ipv4("10.10.1.50", "10.10.1.1", 6, bytes(20)))), GUEST)
    assert tcp == ["IPv4 TCP from 10.10.1.50"]


def test_a_silent_nic_an_empty_capture_and_a_short_frame_show_nothing():
    assert traffic.evidence(pcap(arp(2, "10.0.2.2", "10.0.2.15", source=SLIRP)), GUEST) == []
    assert traffic.evidence(b"", GUEST) == [] and traffic.evidence(pcap(), GUEST) == []
    assert traffic.evidence(pcap(mac(GUEST) * 2), GUEST) == []
    assert traffic.evidence_by_mac({GUEST: pcap(dhcp(1))}, [GUEST, SLIRP]) == {GUEST: ["DHCP discover"], SLIRP: []}


def test_a_capture_in_big_endian_byte_order_reads_alike():
    frame = dhcp(1)
    data = struct.pack(">IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)
    data += struct.pack(">IIII", 0, 0, len(frame), len(frame)) + frame
    assert traffic.evidence(data, GUEST) == ["DHCP discover"]


def test_the_addresses_a_nic_sent_from_are_its_arp_senders_and_ipv4_sources_never_the_unspecified_one():
    capture = pcap(
        dhcp(1),  # from 0.0.0.0: no address yet
        arp(1, "0.0.0.0", "10.10.1.50"),  # a probe: no address yet either
        arp(2, "10.10.1.50", "10.10.1.2"),  # the guest answers who holds 10.10.1.50
        ether(GUEST, 0x0800, ipv4("10.10.1.51", "10.10.1.1", 6, bytes(20))),
        arp(2, "10.10.1.2", "10.10.1.50", source=SLIRP),  # the router's own: not the guest's
    )
    assert traffic.sources(capture, GUEST) == {"10.10.1.50", "10.10.1.51"}
    assert traffic.sources(capture, SLIRP) == {"10.10.1.2"} and traffic.sources(b"", GUEST) == set()
