"""Cold start: `import function_app` against importing the SDKs it cannot do without; then the teacher function's
first invocation with the Azure adapters configured.

Each import runs in 5 fresh Python processes (`python -X importtime` is not used: it slows imports down); the figure
compares the medians. Baseline: azure.functions, openai, azure.storage.blob, azure.servicebus and azure.identity.

The first invocation: a fresh process imports the app, builds its Azure adapters from app settings (storage on
Azurite, the project's npm package; Service Bus and AzureML named but not reached) and calls the registered `label`
function once with a shard message of a job that has ended (two blob reads, then nothing to do). It reports the time
and whether azure.ai.ml was imported, which only a step that starts or polls a fine-tune may do.

Figure: median(import function_app) / median(SDKs alone). Target: <= 1.2. First invocation: azure.ai.ml not imported.
"""

from __future__ import annotations

import json
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


FIRST_CALL = """
import json, sys, time
started = time.perf_counter()
import function_app
from azure.functions.servicebus import ServiceBusMessage
from shared import services
services.install(services.from_app_settings(json.loads(sys.argv[1])))
[label] = [f.get_user_function() for f in function_app.app.get_functions() if f.get_function_name() == "label"]
label(msg=ServiceBusMessage(body=b'{"job": "coldstart", "shard": 0}', message_id="coldstart/shard/0",
                            content_type="application/json", application_properties={}, user_properties={}))
print(json.dumps([time.perf_counter() - started, "azure.ai.ml" in sys.modules]))
"""


def first_invocation() -> tuple[float, bool]:
    """The median time of the teacher function's first call in a fresh process, and whether azure.ai.ml came in."""
    from shared.jobs.blobs import dumps
    from shared.jobs.paths import JobPaths
    from shared.jobs.record import JobRecord, JobState
    from shared.storage.azure_blob import AzureBlobStore
    from tests.azurite import running_azurite

    with running_azurite() as storage:
        record = JobRecord(job="coldstart", state=JobState.SUCCEEDED, created=0.0)
        AzureBlobStore.from_connection_string(storage).write(JobPaths("jobs", "coldstart").status,
                                                             dumps(record.to_json()))
        settings = {"DistillStorage": storage, "AZUREML_SUBSCRIPTION_ID": "0" * 8, "AZUREML_RESOURCE_GROUP": "rg",
                    "AZUREML_WORKSPACE": "ws", "DistillServiceBus": "Endpoint=sb://coldstart.servicebus.windows.net/;"
                    "SharedAccessKeyName=bench;SharedAccessKey=bm90LWEta2V5"}
        runs = [json.loads(subprocess.run([sys.executable, "-c", FIRST_CALL, json.dumps(settings)], cwd=ROOT,
                                          text=True, capture_output=True, check=True).stdout.splitlines()[-1])
                for _ in range(RUNS)]
    return statistics.median(took for took, _ in runs), any(ml for _, ml in runs)


def main() -> None:
    sdks = seconds(SDKS)
    app = seconds(APP)
    print(f"median of {RUNS} fresh processes: import function_app {app * 1000:.0f} ms, SDKs alone {sdks * 1000:.0f} ms")
    took, ml = first_invocation()
    print(f"the teacher function's first call, Azure adapters configured: {took * 1000:.0f} ms (median of {RUNS}); "
          f"azure.ai.ml imported: {'yes' if ml else 'no'}")
    print(f"coldstart: {app / sdks:.2f}x the SDKs alone")


if __name__ == "__main__":
    main()
