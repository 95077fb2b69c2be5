"""The floor of an unchanged refresh: the same 8 requests with bare http.client, nothing else.

Why it exists: a refresh's CPU means little without what the bare calls cost
on the same machine, against the same server. This process sends the
requests the benchmark prepared (signed once: moto does not check signatures)
every ``interval`` seconds, with no signing, no JSON and no comparison; with
``keep`` one connection serves every call, as a keep-alive endpoint allows.

    python -m bench.http_floor <requests.json> <interval> <keep: 0|1>
"""

from __future__ import annotations

import http.client
import json
import sys
import time
from urllib.parse import urlsplit


def main(argv: list[str]) -> int:
    asked = argv[:1] in (["-h"], ["--help"])
    if asked or len(argv) != 3:  # bench/lean_fetcher.py starts it; by hand, it only says how
        print(__doc__, file=sys.stdout if asked else sys.stderr)
        return 0 if asked else 2
    with open(argv[0]) as handle:
        plan = json.load(handle)
    interval, keep = float(argv[1]), argv[2] == "1"
    parts = urlsplit(plan["url"])
    requests = [(item["headers"], item["body"].encode()) for item in plan["requests"]]
    connection: http.client.HTTPConnection | None = None
    while True:
        for headers, body in requests:
            if connection is None:
                connection = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=5)
            connection.request("POST", "/", body, headers)
            connection.getresponse().read()
            if not keep:
                connection.close()
                connection = None
        time.sleep(interval)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
