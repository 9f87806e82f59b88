"""The lab: network-namespace topologies standing for a router and its world.

It backs the netns tests, the benchmarks and ``uplinkd lab``.  Only the real kernel and
real programs are used (``ip``, ``nft``, ``tc``, ``dnsmasq``), and traffic only ever goes
to addresses inside the lab's own namespaces.  Needs root.
"""

from uplinkd.lab.addresses import ClientAddresses, IspAddresses
from uplinkd.lab.flows import NO_REPLY, Flow, FlowReport, FlowsRun, Run
from uplinkd.lab.isp import AddressMode, DhcpServer, Faults, Isp, IspOptions, Lease
from uplinkd.lab.netns import LabError, cleanup_stale, lab_prefixes, wait_until
from uplinkd.lab.topology import Client, Lab

__all__ = [
    "NO_REPLY",
    "AddressMode",
    "Client",
    "ClientAddresses",
    "DhcpServer",
    "Faults",
    "Flow",
    "FlowReport",
    "FlowsRun",
    "Isp",
    "IspAddresses",
    "IspOptions",
    "Lab",
    "LabError",
    "Lease",
    "Run",
    "cleanup_stale",
    "lab_prefixes",
    "wait_until",
]
