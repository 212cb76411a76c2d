"""Cold start: `import function_app` against importing the SDKs it cannot do without.

Each import runs in 5 fresh Python processes (`python -X importtime` is not used: it slows imports down); the figure
compares the medians. Baseline: azure.functions, openai, azure.storage.blob, azure.servicebus and azure.identity.

Figure: median(import function_app) / median(SDKs alone). Target: <= 1.2.
"""

from __future__ import annotations

import statistics
import subprocess
import sys

from bench.common import ROOT

RUNS = 5
TIMED = "import time; t = time.perf_counter(); {statement}; print(time.perf_counter() - t)"
APP = "import function_app"
SDKS = "import azure.functions, openai, azure.storage.blob, azure.servicebus, azure.identity"


def seconds(statement: str) -> float:
    """The median import time of `statement` over RUNS fresh processes."""
    times = []
    for _ in range(RUNS):
        out = subprocess.run([sys.executable, "-c", TIMED.format(statement=statement)], cwd=ROOT, text=True,
                             capture_output=True, check=True).stdout
        times.append(float(out))
    return statistics.median(times)


def main() -> None:
    sdks = seconds(SDKS)
    app = seconds(APP)
    print(f"median of {RUNS} fresh processes: import function_app {app * 1000:.0f} ms, SDKs alone {sdks * 1000:.0f} ms")
    print(f"coldstart: {app / sdks:.2f}x the SDKs alone")


if __name__ == "__main__":
    main()
