"""The controller's nftables table: rendering, loading, reading back, and watching.

The table's shape is fixed; only the uplinks (interface → mark) change. It is loaded as
one atomic `nft -f` transaction (add, delete, add: never a moment without the table) and
carries a comment with the digest of what it was rendered from, so reading it back is cheap.

What the table does, for uplink `u` with mark `M_u` under the mask:

- remember: a new connection leaving through `u` (chain `pin`, a nat chain on postrouting:
  the kernel runs nat chains for a connection's first packet only) or arriving from `u`
  (prerouting) gets `ct mark M_u` (map `remember`: interface → chain `remember_<M_u>`).
- restore: every later packet of a marked connection gets `meta mark M_u` before routing
  (prerouting for forwarded traffic, the `route` output hook for the router's own), so the
  `fwmark M_u lookup T_u` rule keeps the connection on its uplink for life (a tunnel's own
  encrypted packets excepted: the tunnel's `fwmark T/T` rule routes them). A packet whose
  meta mark is 0 (every packet from the wire) gets the ct mark's bits in one statement; one
  that already carries other bits goes through map `restore` (ct mark → chain
  `restore_<M_u>`, one lookup whatever the number of uplinks), which keeps them.
- spoofing: a packet from outside with one of the router's own IPv4 addresses as its source
  is dropped, unless conntrack has validated it (`SPOOF_RULE`).
- masquerade IPv4 out of every uplink (IPv6 is translated only where a LAN asks for it, see
  `nft6`), and clamp the MSS of TCP SYNs to the route's MTU.

An established forwarded packet meets two of the table's filter chains: prerouting (its mark
written, and out) and postrouting (after source NAT: the SYN test and the IPv6
guard's entry, which an IPv4 packet fails at once); a forward chain exists only for `off`,
`tunnel` and `delegate` LANs. Each base chain costs every packet a hook call whatever its
rules, so the SYN clamp and the guard share one, and remembering outbound connections costs
established packets none.
Only the mask's bits of `meta mark` and `ct mark` are written; other bits are kept.

Steering (policies), rendered by the `_steer_*` helpers apart from the table's body:

- a new connection not yet pinned to an uplink (`ct mark & MASK == 0`) goes through the
  `steer_forward` chain (prerouting: forwarded traffic) or `steer_local` (the `route` output
  hook: the router's own traffic, unless its socket already carries an uplink mark, as the
  probes' do). The first matching rule sets the policy's mark under the *policy mask*, in
  `meta mark` (for this packet's routing: `fwmark M_p/PMASK lookup T_p`) and in `ct mark`
  (so conntrack entries can be found by policy, e.g. to flush on recovery), and returns; a
  rule naming the default policy returns without a mark.
- The policy mask has bits of its own, apart from the uplink mask: the policy mark says
  which uplinks may be chosen, the uplink mark (set in postrouting once the kernel chose one,
  as without policies) pins the connection to it. Both live in one ct mark; the P+10 uplink
  rules match only uplink bits, so a pinned connection keeps its uplink whatever its policy
  bits say, and a flush by uplink mark still finds every connection on that uplink.
- Inbound connections from an uplink are pinned in prerouting before steering, so steering
  skips them.
"""

from __future__ import annotations

import hashlib
import logging
import re
import subprocess

from uplinkd.kernel import nft6
from uplinkd.model import NftState, NftSteer, NftUplink

log = logging.getLogger(__name__)

NFT = "nft"


class NftError(Exception):
    """nft refused or failed; carries its stderr."""


def render(state: NftState) -> str:
    """The whole table as an nft script (one atomic transaction).

    Per packet it costs a constant, whatever the number of uplinks: an established packet
    passes two filter chains (prerouting: the ct mark copied to the meta mark; postrouting: a
    failed SYN test and a failed IPv6 test, or the guard's map for IPv6); the per-uplink work
    is one rule in a chain of its own, reached through a map."""
    mask = state.mask
    keep = 0xFFFFFFFF & ~mask
    t = state.table
    marks = {u.mark: u for u in state.uplinks}  # one pair of chains per mark

    def items(pairs: list[str]) -> str:
        return f"\t\telements = {{ {', '.join(pairs)} }}\n" if pairs else ""

    names = [f'"{u.ifname}"' for u in state.uplinks]
    chains = "".join(
        f"\tchain restore_{mark:x} {{\n\t\tmeta mark set meta mark & {keep:#x} | {mark:#x}\n\t}}\n"
        f"\tchain remember_{mark:x} {{\n\t\tct mark set ct mark & {keep:#x} | {mark:#x}\n\t}}\n"
        for mark in sorted(marks)
    )
    restore = [f"{mark:#x} : goto restore_{mark:x}" for mark in sorted(marks)]
    remember = [f'"{u.ifname}" : goto remember_{u.mark:x}' for u in state.uplinks]
    return (
        f"table inet {t}\n"
        f"delete table inet {t}\n"
        f"table inet {t} {{\n"
        f'\tcomment "uplinkd {state.digest}{_steer_comment(state)}"\n'
        f"\tset uplinks {{\n\t\ttype ifname\n{items(names)}\t}}\n"
        f"{chains}"
        + _steer_chains(state)
        + f"\tmap restore {{\n\t\ttype mark : verdict\n{items(restore)}\t}}\n"
        f"\tmap remember {{\n\t\ttype ifname : verdict\n{items(remember)}\t}}\n"
        # A marked connection's packet: its mark restored, and out (straight from the ct
        # mark when no other bit of the meta mark is set, as on every packet from the wire;
        # through the map otherwise, which keeps those bits). A new one's first packet from
        # an uplink: the connection remembers it.
        f"\tchain prerouting {{\n"
        f"\t\ttype filter hook prerouting priority mangle; policy accept;\n"
        f"\t\tmeta mark 0 ct mark & {mask:#x} != 0 meta mark set ct mark & {mask:#x} return\n"
        f"\t\tct mark & {mask:#x} vmap @restore\n"
        + SPOOF_RULE
        + f"\t\tct state new ct mark & {mask:#x} == 0 iifname vmap @remember\n"
        + _steer_jump(state, local=False)
        + "\t}\n"
        # The router's own: the same restore, except for a tunnel's encrypted packets, which
        # the tunnel's fwmark rule routes (a changed mark would route each one again). Their
        # connection gets the tunnel's bits in its ct mark, beside the uplink's that `pin`
        # gives it: when the tunnel leaves a healthy uplink, only its own flow is flushed.
        "\tchain output {\n"
        "\t\ttype route hook output priority mangle; policy accept;\n"
        + "".join(
            f"\t\tmeta mark & {m:#x} == {m:#x} ct mark set ct mark | {m:#x} return\n"
            for m in state.tunnel_marks
        )
        + f"\t\tct mark & {mask:#x} vmap @restore\n"
        + _steer_jump(state, local=True)
        + f"\t}}\n"
        # A nat chain sees only a connection's first packet: remembering costs established
        # packets nothing. It runs before srcnat, so another table's NAT cannot skip it (the
        # kernel stops walking nat chains once one has set up the connection's NAT).
        f"\tchain pin {{\n"
        f"\t\ttype nat hook postrouting priority srcnat - 10; policy accept;\n"
        f"\t\tct state new ct mark & {mask:#x} == 0 oifname vmap @remember\n"
        f"\t}}\n"
        # The one filter chain after routing (forwarded and own packets, after source NAT):
        # IPv6 leaves after the guard's test, IPv4 after two tests; only SYNs go further.
        f"\tchain postrouting {{\n"
        f"\t\ttype filter hook postrouting priority srcnat + 10; policy accept;\n"
        "\t\ttcp flags syn jump clamp\n"
        + nft6.guard_rule(state)
        + "\t}\n"
        "\tchain clamp {\n"
        "\t\toifname @uplinks tcp option maxseg size set rt mtu\n"
        "\t\tiifname @uplinks tcp option maxseg size set rt mtu\n"
        + tunnel_clamp(state)
        + "\t}\n"
        + tunnel_chains(state)
        + "\tchain nat {\n"
        "\t\ttype nat hook postrouting priority srcnat; policy accept;\n"
        + nft6.nat_rules(state)
        + "\t\tmeta nfproto ipv4 oifname @uplinks masquerade\n"
        "\t}\n"
        + _lan6_forward(state)
        + nft6.guard_chains(state)
        + "}\n"
    )


# Drop what arrives from outside claiming one of the router's own IPv4 addresses. The
# kernel's reverse-path check did this per packet, but once policy rules exist it walks every
# rule band for it (docs/design.md, "The source check is the nft table's"), so the router runs
# with rp_filter 0 and accept_local 1 and the check is here, for packets conntrack has not
# validated (new, invalid, untracked).
SPOOF_RULE = '\t\tct state new,invalid,untracked meta nfproto ipv4 iif != "lo" fib saddr type local drop\n'


_TUNNEL_MSS = re.compile(r'oifname "([^"]+)" tcp option maxseg size set rt mtu comment "tunnel"')
# nft lists `meta mark & T == T` as written, unless T's bits are a prefix of the 32 (bit 31,
# the first tunnel's default): then as `meta mark T/<prefix length>`
_SET_CT = r" ct mark set ct mark \| (0x[0-9a-f]+) return$"
_TUNNEL_MARK = re.compile(r"^\s*meta mark & (0x[0-9a-f]+) == (0x[0-9a-f]+)" + _SET_CT, re.MULTILINE)
_TUNNEL_MARK_PREFIX = re.compile(r"^\s*meta mark (0x[0-9a-f]+)/(\d+)" + _SET_CT, re.MULTILINE)


def _tunnel_marks(text: str) -> tuple[int, ...]:
    marks = {
        int(m, 16)
        for m, again, ct in _TUNNEL_MARK.findall(text)
        if int(m, 16) == int(again, 16) == int(ct, 16)
    }
    for value, length, ct in _TUNNEL_MARK_PREFIX.findall(text):
        n = int(length)
        if int(value, 16) == (0xFFFFFFFF << (32 - n)) & 0xFFFFFFFF == int(ct, 16):
            marks.add(int(value, 16))
    return tuple(sorted(marks))


_TUNNEL_PEER = re.compile(r"ip6? saddr (\S+) udp sport (\d+) notrack")
_TUNNEL_DROP = re.compile(r'ip6? saddr (\S+) udp sport (\d+) iifname != (\{[^}]*\}|"[^"]+") drop')


def _lan6_forward(state: NftState) -> str:
    """The forward chain, only for LANs whose IPv6 must not reach an uplink (`off`, `tunnel`,
    `delegate`): its accept rules must not end the postrouting chain before the guard."""
    rules = nft6.forward_rules(state)
    if not rules:
        return ""
    head = "\tchain forward {\n\t\ttype filter hook forward priority mangle; policy accept;\n"
    return head + rules + "\t}\n"


def tunnel_clamp(state: NftState) -> str:
    """The tunnels' lines of the `clamp` chain (SYNs only): MSS clamped both ways."""
    return "".join(
        f'\t\toifname "{i}" tcp option maxseg size set rt mtu comment "tunnel"\n'
        f'\t\tiifname "{i}" tcp option maxseg size set rt mtu\n'
        for i in state.tunnel_ifnames
    )


def tunnel_chains(state: NftState) -> str:
    """The tunnels' chain: their peers' UDP not tracked inbound, and dropped when it arrives
    by an uplink their underlay does not use now (see NftState). Empty without peers."""
    if not state.tunnel_peers:
        return ""
    peers = ""
    for a, p, ifnames in state.tunnel_peers:
        ip = "ip6" if ":" in a else "ip"
        if ifnames:
            names = ", ".join(f'"{i}"' for i in ifnames)
            peers += f"\t\t{ip} saddr {a} udp sport {p} iifname != {{ {names} }} drop\n"
        peers += f"\t\t{ip} saddr {a} udp sport {p} notrack\n"
    return (
        "\tchain tunnel_notrack {\n\t\ttype filter hook prerouting priority raw; policy accept;\n"
        + peers
        + "\t}\n"
    )


# --- steering (policies) ---------------------------------------------------------------------


def _steer_comment(state: NftState) -> str:
    return f" {state.steer_digest}" if state.steer_digest else ""


def _steer_jump(state: NftState, *, local: bool) -> str:
    """The hook's jump into its steering chain, for new connections not pinned yet."""
    if not any(r.local == local for r in state.steer):
        return ""
    chain = "steer_local" if local else "steer_forward"
    unmarked = f"meta mark & {state.mask:#x} == 0 " if local else ""
    return f"\t\tct state new ct mark & {state.mask:#x} == 0 {unmarked}jump {chain}\n"


def _steer_chains(state: NftState) -> str:
    text = ""
    for local in (False, True):
        rules = [r for r in state.steer if r.local == local]
        if rules:
            chain = "steer_local" if local else "steer_forward"
            body = "".join(f"\t\t{_steer_rule(state, r)}\n" for r in rules)
            text += f"\tchain {chain} {{\n{body}\t}}\n"
    return text


def _set(values: list[str]) -> str:
    return values[0] if len(values) == 1 else "{ " + ", ".join(values) + " }"


def _ports(ranges: tuple[tuple[int, int], ...]) -> str:
    return _set([f"{a}" if a == b else f"{a}-{b}" for a, b in ranges])


_L4 = {"icmpv6": "ipv6-icmp"}


def _steer_rule(state: NftState, r: NftSteer) -> str:
    """One steering rule: its matches, then the policy mark (or just `return` for default)."""
    ip = {4: "ip", 6: "ip6", None: ""}[r.family]
    parts: list[str] = []
    if r.family is not None and not (r.src or r.dst or r.dscp is not None):
        parts.append(f"meta nfproto {'ipv4' if r.family == 4 else 'ipv6'}")
    if r.iif is not None:
        parts.append(f'iifname "{r.iif}"')
    if r.uid is not None:
        parts.append(f"meta skuid {r.uid}")
    if r.src:
        parts.append(f"{ip} saddr {_set(list(r.src))}")
    if r.dst:
        parts.append(f"{ip} daddr {_set(list(r.dst))}")
    if r.dscp is not None:
        parts.append(f"{ip} dscp {r.dscp}")
    if r.protocol is not None:
        parts.append(f"meta l4proto {_L4.get(r.protocol, r.protocol)}")
    elif r.sport or r.dport:
        parts.append("meta l4proto { tcp, udp, sctp }")
    if r.sport:
        parts.append(f"th sport {_ports(r.sport)}")
    if r.dport:
        parts.append(f"th dport {_ports(r.dport)}")
    if r.mark:
        keep = 0xFFFFFFFF & ~state.policy_mask
        parts.append(f"meta mark set meta mark & {keep:#x} | {r.mark:#x}")
        parts.append(f"ct mark set ct mark & {keep:#x} | {r.mark:#x}")
    parts.append(f'return comment "rules.steer.{r.rule} → {r.policy}"')
    return " ".join(parts)


def _run(argv: list[str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(argv, input=stdin, capture_output=True, text=True, check=False, timeout=10)
    except (OSError, subprocess.SubprocessError) as e:  # no nft binary, or it hung
        raise NftError(f"{argv[0]}: {e}") from None


def load(state: NftState) -> None:
    result = _run([NFT, "-f", "-"], render(state))
    if result.returncode != 0:
        raise NftError(result.stderr.strip() or f"nft exited {result.returncode}")


def delete(table: str) -> None:
    result = _run([NFT, "-f", "-"], f"table inet {table}\ndelete table inet {table}\n")
    if result.returncode != 0:
        raise NftError(result.stderr.strip() or f"nft exited {result.returncode}")


_COMMENT = re.compile(r'^\s*comment "uplinkd ([0-9a-f]+)(?: ([0-9a-f]+))?"', re.MULTILINE)


def listing(table: str) -> str | None:
    """The table as the kernel has it (nft's text), or None when it does not exist."""
    result = _run([NFT, "list", "table", "inet", table])
    if result.returncode != 0:
        if "No such file or directory" in result.stderr:
            return None
        raise NftError(result.stderr.strip() or f"nft exited {result.returncode}")
    return result.stdout


def read(table: str, mask: int, *, trusted: dict[str, str], policy_mask: int = 0) -> NftState | None:
    """Our table as it stands, reduced to the state it was rendered from.

    The digest in the comment says what it was rendered from. `trusted` maps a digest to
    the hash of the listing we saw right after loading it; if the listing has changed
    since (someone edited a chain), the table is reported as drifted (None)."""
    text = listing(table)
    if text is None:
        return None
    found = _COMMENT.search(text)
    if found is None:
        return None
    digest = found.group(1)
    seen = trusted.get(digest)
    if seen is not None and seen != listing_hash(text):
        return None
    uplinks = tuple(
        NftUplink(m.group(1), int(m.group(2), 16))
        for m in re.finditer(r'"([^"]+)" : goto remember_([0-9a-f]+)', text)
    )
    tunnel_ifnames = tuple(sorted(set(_TUNNEL_MSS.findall(text))))
    allowed = {
        (a, int(p)): tuple(sorted(re.findall(r'"([^"]+)"', i))) for a, p, i in _TUNNEL_DROP.findall(text)
    }
    peers = tuple(sorted((a, int(p), allowed.get((a, int(p)), ())) for a, p in _TUNNEL_PEER.findall(text)))
    state = NftState(
        table=table,
        mask=mask,
        uplinks=tuple(sorted(uplinks, key=lambda u: u.ifname)),
        ipv6=nft6.read(text),
        tunnel_ifnames=tunnel_ifnames,
        tunnel_peers=peers,
        tunnel_marks=_tunnel_marks(text),
        policy_mask=policy_mask if found.group(2) else 0,
        steer_digest=found.group(2) or "",
    )
    return state if state.digest == digest else None


def listing_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()
