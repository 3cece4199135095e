"""What a booted guest sent on its NICs: the boot check's proof that needs nothing inside the guest.

QEMU's ``filter-dump`` writes each NIC's frames to a pcap file. A frame whose source is the NIC's
MAC shows that the guest's kernel, its virtio drivers and its network configuration brought that
interface up: an interface no configuration names stays down and sends nothing, which is how a
guest that lost its network identity looks. Each frame is told as the operator would read a
capture: ``DHCP discover``, ``ARP for 10.0.2.2 from 10.10.1.50``, ``IPv6 router solicitation``.
"""

from __future__ import annotations

import ipaddress
import struct
from typing import Dict, Iterator, List, Optional, Sequence, Set

PCAP_HEADER = 24
RECORD_HEADER = 16
MAX_EVIDENCE = 6  # per NIC: enough to read, short enough for a result

DHCP_TYPES = {1: "discover", 3: "request", 4: "decline", 7: "release", 8: "inform"}
ICMP6_TYPES = {133: "router solicitation", 135: "neighbour solicitation", 136: "neighbour advertisement",
               143: "multicast listener report"}  # fmt: skip
IP_PROTOCOLS = {1: "ICMP", 6: "TCP", 17: "UDP"}


def frames(data: bytes) -> Iterator[bytes]:
    """The complete frames of a pcap capture (QEMU writes it in the host's byte order; a record being
    written while this reads is left for the next read)."""
    if len(data) < PCAP_HEADER:
        return
    order = "<" if data[:4] == b"\xd4\xc3\xb2\xa1" else ">"
    offset = PCAP_HEADER
    while offset + RECORD_HEADER <= len(data):
        captured = struct.unpack_from(order + "I", data, offset + 8)[0]
        start = offset + RECORD_HEADER
        if start + captured > len(data):
            return
        yield data[start : start + captured]
        offset = start + captured


def mac_text(raw: bytes) -> str:
    return ":".join(f"{b:02x}" for b in raw)


def describe(frame: bytes) -> Optional[str]:
    """One line for a frame the guest sent; None for what is too short to read."""
    if len(frame) < 14:
        return None
    ethertype, payload = _inside(frame)
    if ethertype == 0x0806:
        return _arp(payload)
    if ethertype == 0x0800:
        return _ipv4(payload)
    if ethertype == 0x86DD:
        return _ipv6(payload)
    return f"ethertype 0x{ethertype:04x}"


def evidence(data: bytes, mac: str) -> List[str]:
    """What the capture ``data`` shows ``mac`` sent, each kind once, in the order first seen."""
    seen: List[str] = []
    for frame in frames(data):
        if mac_text(frame[6:12]) != mac:
            continue
        line = describe(frame)
        if line and line not in seen:
            seen.append(line)
            if len(seen) == MAX_EVIDENCE:
                break
    return seen


def evidence_by_mac(captures: Dict[str, bytes], macs: Sequence[str]) -> Dict[str, List[str]]:
    """``captures`` maps a MAC to its NIC's capture; the result lists what each MAC sent."""
    return {mac: evidence(captures.get(mac, b""), mac) for mac in macs}


def sources(data: bytes, mac: str) -> Set[str]:
    """The IPv4 addresses ``mac`` sent from in the capture ``data``: the sender of its ARP requests, replies and
    announcements, the source of its IPv4 packets. An address here is one the guest holds on that interface."""
    found: Set[str] = set()
    for frame in frames(data):
        if len(frame) < 14 or mac_text(frame[6:12]) != mac:
            continue
        ethertype, payload = _inside(frame)
        if ethertype == 0x0806 and len(payload) >= 28:
            found.add(_ip4(payload[14:18]))
        elif ethertype == 0x0800 and len(payload) >= 20:
            found.add(_ip4(payload[12:16]))
    found.discard("0.0.0.0")
    return found


def _inside(frame: bytes):
    """A frame's ethertype and payload (those of the frame inside a VLAN tag, where there is one)."""
    ethertype, payload = struct.unpack_from("!H", frame, 12)[0], frame[14:]
    if ethertype == 0x8100 and len(payload) >= 4:
        ethertype, payload = struct.unpack_from("!H", payload, 2)[0], payload[4:]
    return ethertype, payload


def _ip4(raw: bytes) -> str:
    return str(ipaddress.IPv4Address(raw))


def _arp(payload: bytes) -> Optional[str]:
    if len(payload) < 28:
        return None
    op, sender, target = struct.unpack_from("!H", payload, 6)[0], _ip4(payload[14:18]), _ip4(payload[24:28])
    if op == 2:
        return f"ARP reply from {sender}"
    if sender == "0.0.0.0":
        return f"ARP probe for {target}"
    if sender == target:
        return f"ARP announcement of {sender}"
    return f"ARP for {target} from {sender}"


def _ipv4(payload: bytes) -> Optional[str]:
    if len(payload) < 20:
        return None
    header = (payload[0] & 0x0F) * 4
    protocol, source = payload[9], _ip4(payload[12:16])
    udp = payload[header:]
    if protocol == 17 and len(udp) >= 8 and struct.unpack_from("!HH", udp) == (68, 67):
        return _dhcp(udp[8:])
    return f"IPv4 {IP_PROTOCOLS.get(protocol, f'protocol {protocol}')} from {source}"


def _dhcp(bootp: bytes) -> str:
    """The DHCP message type (option 53), and the address asked for (option 50) where there is one."""
    kind, asked, offset = "message", None, 240  # the options follow the magic cookie
    while offset + 2 <= len(bootp) and bootp[offset] != 255:
        code = bootp[offset]
        if code == 0:
            offset += 1
            continue
        length = bootp[offset + 1]
        value = bootp[offset + 2 : offset + 2 + length]
        if code == 53 and value:
            kind = DHCP_TYPES.get(value[0], f"message {value[0]}")
        elif code == 50 and len(value) == 4:
            asked = _ip4(value)
        offset += 2 + length
    return f"DHCP {kind}" + (f" for {asked}" if asked else "")


def _ipv6(payload: bytes) -> Optional[str]:
    if len(payload) < 40:
        return None
    following, source, rest = payload[6], ipaddress.IPv6Address(payload[8:24]), payload[40:]
    if following == 0 and len(rest) >= 8:  # hop-by-hop options (MLD reports carry one)
        following, rest = rest[0], rest[(rest[1] + 1) * 8 :]
    if following == 58 and rest:
        kind = ICMP6_TYPES.get(rest[0], f"ICMPv6 type {rest[0]}")
        return f"IPv6 {kind}" + ("" if source.is_unspecified else f" from {source}")
    return f"IPv6 from {source}"
