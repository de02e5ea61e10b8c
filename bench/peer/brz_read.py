#!/usr/bin/env python3
"""Reads N files through Breezy's smart server (bzr://), one get each, as a
Breezy client does; prints JSON: `cold_s`, the first pass timed from
opening the transport (so it includes connecting and Breezy's protocol
negotiation), and `median_s`, the median of RUNS further passes on the open
connection (warm).

usage: brz_read.py URL COUNT RUNS
"""
import json
import statistics
import sys
import time

from breezy.transport import get_transport

url, count, runs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
names = ["f%04d" % i for i in range(count)]


def read_all(t):
    total = 0
    for name in names:
        total += len(t.get_bytes(name))
    assert total == count * 1024, total


start = time.perf_counter()
t = get_transport(url)
read_all(t)
cold = time.perf_counter() - start
times = []
for _ in range(runs):
    start = time.perf_counter()
    read_all(t)
    times.append(time.perf_counter() - start)
print(json.dumps({"cold_s": cold, "median_s": statistics.median(times)}))
