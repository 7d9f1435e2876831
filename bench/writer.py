"""An application writing during make-snapshots, to see the freeze as it does: one thread per file system
appends a small block every WAIT seconds and keeps the longest time one write() took. A frozen file system
blocks writers until it is thawed, so that longest write is how long the application was held.

Run as its own process (`python -m bench.writer MOUNT...`), so that the bench's own threads (the lab serving
the call) never delay a writer's clock: it prints "ready", writes until its standard input closes, then prints
one JSON object: mount point -> {"ms": longest write, "at": time.time() when that write started}.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time

BLOCK = b"x" * 512
WAIT = 0.002


def main(mount_points: list[str]) -> int:
    stop = threading.Event()
    worst: dict[str, tuple[float, float]] = {mp: (0.0, 0.0) for mp in mount_points}
    fds = {mp: os.open(os.path.join(mp, "bench-writer.log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
           for mp in mount_points}

    def write(mp: str) -> None:
        fd = fds[mp]
        while not stop.is_set():
            started = time.time()
            t0 = time.perf_counter()
            os.write(fd, BLOCK)
            took = time.perf_counter() - t0
            if took > worst[mp][0]:
                worst[mp] = (took, started)
            time.sleep(WAIT)

    threads = [threading.Thread(target=write, args=(mp,), daemon=True) for mp in mount_points]
    for t in threads:
        t.start()
    print("ready", flush=True)
    sys.stdin.read()
    stop.set()
    for t in threads:
        t.join(5)
    for fd in fds.values():
        os.close(fd)
    print(json.dumps({mp: {"ms": round(w[0] * 1000, 2), "at": w[1]} for mp, w in worst.items()}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
