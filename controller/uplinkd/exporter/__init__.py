"""uplinkd-exporter: Prometheus metrics and the LAN status page, beside the daemon.

A separate process on purpose: the daemon routes, and what can go wrong in it stays small.
The exporter reads what it shows from two places only, both read-only:

- the daemon's control socket (`status`, with the daemon's own `counters`), and
- the kernel's interface counters (`/sys/class/net/<dev>/statistics`), for bytes and packets.

A crash, a slow scraper or a flood of HTTP requests here cannot stall a routing pass; the
daemon never parses HTTP. Drain/undrain from the page are off unless a token file is given,
and then go through the same control socket request as `uplinkctl drain`.
"""
