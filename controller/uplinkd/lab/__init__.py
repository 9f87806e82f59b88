"""The lab: network-namespace topologies standing for a router and its world, and the real
daemon run in them (:mod:`uplinkd.lab.launcher`).

It backs ``uplinkd lab`` (the demo), the netns tests and the benchmarks; what only the tests
and benchmarks use (the VM tier, benchmark statistics, kernel read-back) is in the
repository's ``harness/``, which is not installed.  Only the real kernel and
real programs are used (``ip``, ``nft``, ``tc``, ``dnsmasq``), and traffic only ever goes
to addresses inside the lab's own namespaces.  Needs root.
"""

from uplinkd.lab.addresses import ClientAddresses, IspAddresses
from uplinkd.lab.flows import NO_REPLY, Flow, FlowReport, FlowsRun, Run
from uplinkd.lab.isp import AddressMode, DhcpServer, DnsmasqLease, Faults, Isp, IspOptions
from uplinkd.lab.launcher import DaemonError, LabDaemon
from uplinkd.lab.netns import LabError, cleanup_stale, lab_prefixes, wait_until
from uplinkd.lab.topology import Client, Lab

__all__ = [
    "NO_REPLY",
    "AddressMode",
    "Client",
    "ClientAddresses",
    "DaemonError",
    "DhcpServer",
    "DnsmasqLease",
    "Faults",
    "Flow",
    "FlowReport",
    "FlowsRun",
    "Isp",
    "IspAddresses",
    "IspOptions",
    "Lab",
    "LabDaemon",
    "LabError",
    "Run",
    "cleanup_stale",
    "lab_prefixes",
    "wait_until",
]
