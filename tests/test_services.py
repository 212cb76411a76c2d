"""The app's adapters from its settings: one credential for all, and azure.ai.ml imported only when a fine-tune is
started or polled (every other function's cold start is spared it)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from shared.services import app_credential

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = {
    "DistillStorage": "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=a2V5;"
                      "BlobEndpoint=http://127.0.0.1:1/devstoreaccount1;",
    "DistillServiceBus": "Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKeyName=s;SharedAccessKey=a2V5",
    "AZUREML_SUBSCRIPTION_ID": "00000000-0000-0000-0000-000000000000", "AZUREML_RESOURCE_GROUP": "rg",
    "AZUREML_WORKSPACE": "ws", "AZURE_CLIENT_ID": "11111111-1111-1111-1111-111111111111",
}
PROBE = """
import json, sys
from shared.services import from_app_settings
services = from_app_settings(json.loads(sys.argv[1]))
before = "azure.ai.ml" in sys.modules
built = type(getattr(services, sys.argv[2])._get()).__name__
print(json.dumps([before, built, "azure.ai.ml" in sys.modules]))
"""


@pytest.mark.parametrize("adapter,built", [("finetuner", "AzureMLFineTuner"), ("deployer", "ServerlessDeployer")])
def test_the_azureml_sdk_is_imported_only_when_a_fine_tune_or_a_deployment_is_asked_for(adapter: str,
                                                                                       built: str) -> None:
    done = subprocess.run([sys.executable, "-c", PROBE, json.dumps(SETTINGS), adapter], cwd=ROOT,
                          capture_output=True, text=True, timeout=120, check=True)
    assert json.loads(done.stdout.splitlines()[-1]) == [False, built, True]


def test_the_app_signs_in_as_its_managed_identity_when_it_names_one() -> None:
    from azure.identity import DefaultAzureCredential, ManagedIdentityCredential

    assert isinstance(app_credential({"AZURE_CLIENT_ID": SETTINGS["AZURE_CLIENT_ID"]}), ManagedIdentityCredential)
    assert isinstance(app_credential({}), DefaultAzureCredential)
