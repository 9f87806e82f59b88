"""Tunnel objects as values: WireGuard devices and peers, VXLAN links and their forwarding
entries, and the MTU arithmetic between them. Pure: no kernel, no files, no clock.

The kernel side (reading and writing them) is in `uplinkd.kernel.wireguard` and
`uplinkd.kernel.vxlan`.
"""
