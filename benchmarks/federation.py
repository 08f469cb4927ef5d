"""Cross-server benchmark: two federating homeservers on one machine, real E2E clients.

Not a test: it prints figures for docs/benchmarks.md. Two server processes speak TLS
to each other (certificates from a throwaway trustme CA, the static resolve map of
the documented config file); senders are registered on alpha, receivers on beta.
The same latency run against alpha alone gives the one-server reference in the same
conditions, so the target (cross-server p99 under twice the one-server p99) is
checked on figures from one run.

    python benchmarks/federation.py
    python benchmarks/federation.py --latency-messages 500 --messages 1000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: find benchmarks/

from benchmarks.load import latency, processor, throughput

from emsg.testing.tls import federation


async def main(args: argparse.Namespace) -> None:
    results: dict[str, Any] = {
        "machine": f"{processor()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        # Anything else running on the machine shows in the tail: say so in the figures.
        "load_average_before": [round(x, 2) for x in os.getloadavg()],
    }
    with tempfile.TemporaryDirectory(prefix="emsg-fed-bench-") as tmp:
        root = Path(tmp)
        alpha, beta = federation(root / "fed", ["alpha.bench", "beta.bench"])
        os.environ["SSL_CERT_FILE"] = str(alpha.pki.ca_file)  # the clients trust the test CA
        alpha.start()
        beta.start()
        try:
            rate, count = args.rate, args.latency_messages
            results["one_server_latency"] = await latency(alpha, root, rate, count)
            print(json.dumps({"one_server_latency": results["one_server_latency"]}), flush=True)
            results["cross_server_latency"] = await latency(alpha, root, rate, count, beta)
            print(json.dumps({"cross_server_latency": results["cross_server_latency"]}), flush=True)
            results["cross_server_throughput"] = [
                await throughput(alpha, root, n, args.messages, 1, False, beta)
                for n in args.senders
            ]
            print(json.dumps({"throughput": results["cross_server_throughput"]}), flush=True)
        finally:
            alpha.stop()
            beta.stop()
    one = results["one_server_latency"]["p99_ms"]
    cross = results["cross_server_latency"]["p99_ms"]
    results["p99_ratio_cross_to_one"] = round(cross / one, 2)
    print(json.dumps(results, indent=2))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--latency-messages", type=int, default=1000)
    parser.add_argument("--messages", type=int, default=2000, help="per throughput run")
    parser.add_argument("--senders", type=int, nargs="*", default=[1, 10])
    return parser.parse_args()


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
