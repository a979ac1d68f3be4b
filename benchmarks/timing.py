"""The latency measure shared by the benchmarks: the median of several calls after a warm-up."""

from __future__ import annotations

import statistics
import time


def median_ms(fn, repeat: int = 7) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3
