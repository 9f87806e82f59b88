"""`uplinkctl audit`: can traffic from a LAN leave by a way its configuration does not allow?

Two checks, both asking the live kernel rather than trusting the plan:

- with a `full` tunnel: can a LAN source reach an uplink directly, around the tunnel
  (`tunnel_audit`, by routing);
- per configured LAN, in IPv6: for a source in each global prefix the LAN interface holds
  (and the mode's own prefix), how the kernel would route a forwarded packet to the internet,
  and then what uplinkd's nft table does with it (`plan.leaks`): a packet that would leave an
  uplink in a way the LAN's mode does not allow is a problem that names the LAN, the
  source, the uplink and why.

Returns (problems, what was checked); the command exits 1 when there is any problem.
"""

from __future__ import annotations

import ipaddress

from uplinkd.config import Config
from uplinkd.kernel.state import Kernel
from uplinkd.model import AF_INET, AF_INET6, NFT, IPAddress, KernelState, NftIpv6, NftState, Observed
from uplinkd.plan import Facts
from uplinkd.plan import desired as plan_desired
from uplinkd.plan.lan6 import lan_mode
from uplinkd.plan.leaks import allowed, fate

# A destination outside every private range, for route lookups only (no packet is sent).
AUDIT_DESTINATIONS: tuple[tuple[int, IPAddress], ...] = (
    (AF_INET, ipaddress.ip_address("192.0.2.1")),
    (AF_INET6, ipaddress.ip_address("2001:db8:ffff::1")),
)


async def _survey(kernel: Kernel, config: Config) -> tuple[Observed, KernelState, dict[str, str]]:
    """What the kernel holds, and the uplinks' devices → names as the controller plans them."""
    observed, actual = await kernel.read()
    intent = plan_desired(config, Facts(observed))
    return observed, actual, {s.dev: s.name for s in intent.uplinks if s.dev}


def _marks(config: Config) -> list[tuple[str, int | None]]:
    """A LAN packet unmarked, and as each policy's steering rules would mark it."""
    return [("", None), *((p, config.policy_mark(p)) for p in config.policies)]


def _delegating(config: Config, lan: str) -> bool:
    """Whether `lan` is a `delegate` LAN, whose IPv6 leaves by its uplink by choice."""
    return lan in config.lan and config.lan[lan].ipv6.mode == "delegate"


async def tunnel_audit(config: Config) -> tuple[list[str], list[str]]:
    """With a `full` tunnel configured, can a LAN source reach an uplink
    directly? For every interface with an address that is neither an uplink nor a tunnel (the
    LANs), in each family it has an address in, the kernel is asked how it would route a
    packet forwarded from a host there to the internet: unmarked, and with each policy's mark
    (what a steering rule would give it). Returns (problems, what was checked):
    a problem names the interface, the packet, the rule and the uplink it would leave by."""
    if not any(t.full for t in config.tunnels.values()):
        return [], ["no tunnel with route 'full' is configured: nothing to audit"]
    kernel = Kernel(config)
    try:
        observed, _, uplinks = await _survey(kernel, config)
        tunnel_devs = {t.interface for t in config.tunnels.values()}
        problems: list[str] = []
        checked: list[str] = []
        for link in sorted(observed.links.values(), key=lambda li: li.index):
            if link.name in uplinks or link.name in tunnel_devs or link.name == "lo":
                continue
            for family, dst in AUDIT_DESTINATIONS:
                addrs = observed.addrs_of(link.index, family)
                if not addrs or (family == AF_INET6 and _delegating(config, link.name)):
                    continue  # a delegate LAN's IPv6 goes by its uplink: uplinkd.audit judges it
                net = addrs[0].network
                src = next(h for h in (net.network_address + 2, net.network_address + 3) if h != addrs[0].ip)
                for policy, mark in _marks(config):
                    ex = await kernel.explain(
                        dst=dst, src=src, iif=link.name, mark=mark, uplinks_by_dev=uplinks
                    )
                    what = (
                        f"{link.name}: {src} → {dst}{' steered to policy ' + policy if policy else ''}: "
                        f"{ex.type}{' dev ' + ex.dev if ex.dev else ''} ({ex.rule})"
                    )
                    if ex.dev in uplinks:
                        problems.append(f"{what}: leaves by uplink {uplinks[ex.dev]}, around the full tunnel")
                    else:
                        checked.append(what)
        return problems, checked
    finally:
        kernel.close()


DST6 = next(dst for family, dst in AUDIT_DESTINATIONS if family == AF_INET6)


def _samples(
    nets: list[ipaddress.IPv6Network], own: set[ipaddress.IPv6Address]
) -> list[ipaddress.IPv6Address]:
    """One host address per prefix that is not the router's own."""
    out: list[ipaddress.IPv6Address] = []
    for net in dict.fromkeys(nets):
        out.append(next(h for h in (net.network_address + 2, net.network_address + 3) if h not in own))
    return out


async def lan_audit(config: Config) -> tuple[list[str], list[str]]:
    """The IPv6 paths of every configured LAN, judged by its mode."""
    if not config.lan:
        return [], ["lan: no LAN configured: no LAN IPv6 to audit"]
    kernel = Kernel(config)
    try:
        observed, actual, uplinks = await _survey(kernel, config)
        tables = [t for t in actual[NFT].values() if isinstance(t, NftState)]
        nft = tables[0].ipv6 if tables else NftIpv6()
        problems: list[str] = []
        checked: list[str] = []
        for lan, cfg in config.lan.items():
            mode = lan_mode(config, cfg)
            link = observed.link_by_name(lan)
            if link is None:
                checked.append(f"{lan} (ipv6 {mode}): not there")
                continue
            addrs = [
                a for a in observed.addrs_of(link.index, AF_INET6) if isinstance(a, ipaddress.IPv6Interface)
            ]
            nets = [a.network for a in addrs if not a.ip.is_link_local and a.network.prefixlen < 128]
            if cfg.ipv6.prefix is not None:
                nets.append(cfg.ipv6.prefix)
            if not nets:
                checked.append(f"{lan} (ipv6 {mode}): no global IPv6 prefix on it")
            for src in _samples(nets, {a.ip for a in addrs}):
                for policy, mark in _marks(config):
                    ex = await kernel.explain(dst=DST6, src=src, iif=lan, mark=mark, uplinks_by_dev=uplinks)
                    route = ex.type + (f" dev {ex.dev}" if ex.dev else "")
                    steered = f" steered to policy {policy}" if policy else ""
                    where = f"{lan} (ipv6 {mode}): {src} → {DST6}{steered}: {route} ({ex.rule})"
                    if ex.dev not in uplinks:
                        checked.append(where)
                        continue
                    uplink = uplinks[ex.dev]
                    fated = fate(nft, lan=lan, src=src, dev=ex.dev)
                    if allowed(config, nft, lan=lan, uplink=uplink, fated=fated):
                        checked.append(
                            f"{where}: {fated.how}" + (f", leaves by {uplink}" if fated.leaves else "")
                        )
                    elif fated.leaves:
                        problems.append(
                            f"{where}: leaves by uplink {uplink} with source {fated.source} ({fated.how}); "
                            f"mode {mode} does not allow that: remove the stray route, rule or prefix"
                        )
                    else:  # an extended /64 routed to another uplink: its IPv6 goes nowhere
                        problems.append(
                            f"{where}: routed to uplink {uplink} ({fated.how}), not to "
                            f"{cfg.ipv6.uplink}; mode {mode} sends this prefix only by {cfg.ipv6.uplink}: "
                            "remove the stray route or rule"
                        )
        return problems, checked
    finally:
        kernel.close()


async def audit(config: Config) -> tuple[list[str], list[str]]:
    """Both checks, problems and checked lines together."""
    problems, checked = await tunnel_audit(config)
    more, seen = await lan_audit(config)
    return problems + more, checked + seen
