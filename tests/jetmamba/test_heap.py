import subprocess
import sys
import textwrap

import pytest

# A child process allocates and frees many blocks a little over the threshold from several threads
# (what a calibration pass does) and reports how much its resident memory grew, as JSON.
CHILD = textwrap.dedent(
    """
    import json, sys, threading
    import torch
    from jetmamba.heap import MMAP_THRESHOLD_BYTES, return_freed_memory_promptly

    def rss():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * 4096

    took = return_freed_memory_promptly() if sys.argv[1] == "on" else False
    torch.set_num_threads(1)
    block = MMAP_THRESHOLD_BYTES + (1 << 20)

    def churn():
        # interleaved lifetimes: a long-lived block between short ones pins arena memory
        keep = []
        for i in range(200):
            t = torch.ones(block, dtype=torch.uint8)
            if i % 8 == 0:
                keep.append(torch.ones(256 << 10, dtype=torch.uint8))
            del t
        return keep

    before = rss()
    kept = []
    threads = [threading.Thread(target=lambda: kept.append(churn())) for _ in range(4)]
    [t.start() for t in threads]; [t.join() for t in threads]
    big = [torch.ones(block, dtype=torch.uint8) for _ in range(60)]
    del big
    print(json.dumps({"took": took, "grown": rss() - before}))
    """
)


def _grown(mode: str) -> dict:
    import json

    out = subprocess.run([sys.executable, "-c", CHILD, mode], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc tuning is Linux-only")
def test_freed_blocks_go_back_to_the_system():
    on = _grown("on")
    assert on["took"], "mallopt did not take effect on this Linux C library"
    # 60 blocks of 5 MB were alive at once and freed: with the threshold fixed they are unmapped on
    # free (without the mallopt call the child keeps several hundred MB: the test fails)
    assert on["grown"] < 100 << 20, on
