"""The `uplinkd` command: the daemon, or `uplinkd lab` for the namespaced lab demo."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["lab"]:
        from uplinkd.lab.demo import main as demo  # noqa: PLC0415 - the lab is not loaded for the daemon

        return demo(args[1:])
    from uplinkd.daemon import main as daemon  # noqa: PLC0415

    return daemon(args)


if __name__ == "__main__":
    sys.exit(main())
