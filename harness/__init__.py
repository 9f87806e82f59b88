"""What the tests and the benchmarks share, and the installed package does not ship.

* :mod:`harness.readback`: what a namespace's kernel holds, read with ``ip -json``, ``nft -j``
  and ``conntrack`` (independently of uplinkd's own reading);
* :mod:`harness.stats`: what a benchmark reports (percentiles, summaries, the markdown
  table, the JSON in ``bench/results/``);
* :mod:`harness.tunnel_lab`: two namespaces joined by a veth, bridged hosts behind them,
  WireGuard keys, for the tunnel I/O tests (WireGuard, VXLAN);
* :mod:`harness.host_server`: a TCP server on the host's loopback for a VM guest to reach;
* :mod:`harness.vm`: the VM tier (a QEMU guest, a USB NIC to plug, uplinkd inside it).

The daemon launcher for network namespaces, :class:`uplinkd.lab.launcher.LabDaemon`, ships
with the lab (``uplinkd lab`` needs it).  This package is on ``sys.path`` through pytest.ini's
``pythonpath`` for the tests and through ``bench/bootstrap.py`` for the benchmark scripts.
"""
