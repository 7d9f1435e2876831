"""Benchmarks of snaptastic-boot: the real CLI against the lab, with a fixed latency per EC2 API call.

`python -m bench --help` (or `bench/run`) lists the options; bench/PERFORMANCE.md shows the latest table.
Needs root (loop devices and mounts); the run happens inside a private mount namespace.
"""
