"""Threads, thread pools, locks, queues, an asyncio loop and signals."""
import asyncio
import json
import queue
import signal
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np


def work(seed: int) -> float:
    rng = np.random.default_rng(seed)
    return float(np.linalg.svd(rng.normal(size=(80, 80)), compute_uv=False)[0])


with ThreadPoolExecutor(max_workers=8) as pool:
    values = list(pool.map(work, range(32)))

items: "queue.Queue[int]" = queue.Queue()
lock = threading.Lock()
total = [0]


def consume() -> None:
    while (item := items.get()) >= 0:
        with lock:
            total[0] += item


consumers = [threading.Thread(target=consume) for _ in range(4)]
for thread in consumers:
    thread.start()
for i in range(1000):
    items.put(i)
for _ in consumers:
    items.put(-1)
for thread in consumers:
    thread.join()

got = []
signal.signal(signal.SIGUSR1, lambda *_: got.append(True))
signal.raise_signal(signal.SIGUSR1)
timer = threading.Event()
threading.Timer(0.05, timer.set).start()
timer.wait(5)


async def main() -> int:
    async def tick(n: int) -> int:
        await asyncio.sleep(0.01)
        return n
    return sum(await asyncio.gather(*(tick(n) for n in range(50))))

ok = len(values) == 32 and total[0] == 499500 and got == [True] and timer.is_set() \
    and asyncio.run(main()) == 1225
print(json.dumps({"workload": "threads", "ok": ok}))
raise SystemExit(0 if ok else 1)
