"""Reading VMware Tools' view of the guest's addresses (``guest.net``), from pyVmomi's own data objects as
vCenter returns them for a Windows guest (origins given) and a Linux one (origins unset)."""

from pyVmomi import vim

from ansible_collections.xms.warm_migration.plugins.module_utils.vsphere.inventory import (
    guest_addresses,
    guest_routing,
)


def nic(mac, *addresses):
    config = vim.net.IpConfigInfo(
        ipAddress=[
            vim.net.IpConfigInfo.IpAddress(ipAddress=ip, prefixLength=length, origin=origin)
            for ip, length, origin in addresses
        ]
    )
    return vim.vm.GuestInfo.NicInfo(macAddress=mac, connected=True, deviceConfigId=4000, ipConfig=config)


def test_the_addresses_a_guest_may_hold_statically_are_kept_per_mac_leases_and_ipv6_left_out():
    """Left out: leases, link-local and random addresses (whatever the origin says), IPv6."""
    net = [
        nic("00:50:56:01:00:09", ("10.10.1.50", 24, "manual"), ("fe80::250:56ff:fe01:9", 64, "linklayer")),
        nic("00:50:56:01:00:0A", ("192.168.7.20", 24, "dhcp"), ("192.168.7.21", 24, None), ("10.9.9.9", 24, "random")),
        nic("00:50:56:01:00:0d", ("169.254.10.20", 16, "linklayer"), ("169.254.10.21", 16, None)),  # Windows' APIPA
        nic("00:50:56:01:00:0b"),  # up, no address
        vim.vm.GuestInfo.NicInfo(macAddress="00:50:56:01:00:0c", connected=False, deviceConfigId=4002),
    ]
    assert guest_addresses(net) == {"00:50:56:01:00:09": ("10.10.1.50/24",), "00:50:56:01:00:0a": ("192.168.7.21/24",)}
    assert guest_addresses([]) == {}


def stack(routes, dns):
    route = vim.net.IpRouteConfigInfo.IpRoute
    return vim.vm.GuestInfo.StackInfo(
        ipRouteConfig=vim.net.IpRouteConfigInfo(
            ipRoute=[
                route(network=net, prefixLength=length, gateway=vim.net.IpRouteConfigInfo.Gateway(ipAddress=gw))
                for net, length, gw in routes
            ]
        ),
        dnsConfig=vim.net.DnsConfigInfo(dhcp=False, hostName="win-estate01", domainName="", ipAddress=dns),
    )


def test_the_default_gateway_and_dns_servers_come_from_the_first_ip_stack():
    routes = [("10.10.1.0", 24, None), ("0.0.0.0", 0, "10.10.1.1"), ("::", 0, "fe80::1")]
    stacks = [stack(routes, ["10.10.1.1", "fe80::53", "10.0.0.53"]), stack([("0.0.0.0", 0, "192.168.0.1")], [])]
    assert guest_routing(stacks) == ("10.10.1.1", ("10.10.1.1", "10.0.0.53"))
    assert guest_routing([stack([("10.10.1.0", 24, None)], [])]) == ("", ())  # no default route
    assert guest_routing([]) == ("", ())  # tools not running
