"""Live checks against real Azure (a storage account, an AzureML workspace); they run only when real credentials are
set (never in CI here)."""

import os
import uuid

import pytest

from shared.storage.azure_blob import AzureBlobStore

LIVE_STORAGE = os.environ.get("DISTILL_LIVE_STORAGE_CONNECTION")


@pytest.mark.live
@pytest.mark.skipif(not LIVE_STORAGE, reason="live: set DISTILL_LIVE_STORAGE_CONNECTION to reach a real account")
def test_round_trip_and_compare_and_swap_on_a_real_storage_account() -> None:
    from shared.ports import Conflict

    store = AzureBlobStore.from_connection_string(LIVE_STORAGE or "")
    path = f"distill-live/{uuid.uuid4().hex}.json"
    etag = store.write(path, b"1", if_absent=True)
    assert store.read(path).data == b"1"
    store.write(path, b"2", if_match=etag)
    with pytest.raises(Conflict):
        store.write(path, b"3", if_match=etag)


LIVE_WORKSPACE = ("DISTILL_LIVE_AZUREML_SUBSCRIPTION", "DISTILL_LIVE_AZUREML_RESOURCE_GROUP",
                  "DISTILL_LIVE_AZUREML_WORKSPACE", "DISTILL_LIVE_FINETUNED_MODEL")
DEPLOY_TIMEOUT_SECONDS = 1800  # a fine-tuned model's serverless endpoint takes minutes to come up
DEPLOY_POLL_SECONDS = 20


@pytest.mark.live
@pytest.mark.skipif(not all(os.environ.get(name) for name in LIVE_WORKSPACE),
                    reason=f"live: set {', '.join(LIVE_WORKSPACE)} (a model registered by a fine-tune) to deploy it")
def test_a_fine_tuned_model_is_deployed_serverless_answers_and_is_deleted() -> None:
    """Deploys the model (billed by the hour while it exists, and per token), asks it once, deletes it whatever
    happens."""
    import time

    from openai import OpenAI

    from shared.finetune.serverless import ServerlessDeployer

    subscription, group, workspace, model = (os.environ[name] for name in LIVE_WORKSPACE)
    deployer = ServerlessDeployer.from_settings(subscription, group, workspace)
    job = f"live-{uuid.uuid4().hex[:12]}"
    try:
        deadline = time.monotonic() + DEPLOY_TIMEOUT_SECONDS
        deployment = deployer.deploy(job, "distilled", model)
        while deployment.state == "creating" and time.monotonic() < deadline:
            time.sleep(DEPLOY_POLL_SECONDS)
            deployment = deployer.deploy(job, "distilled", model)
        assert deployment.state == "ready", deployment.error or f"not ready after {DEPLOY_TIMEOUT_SECONDS} s"
        client = OpenAI(base_url=deployment.url, api_key=deployment.key, max_retries=2)
        reply = client.chat.completions.create(model=model, max_tokens=16,
                                               messages=[{"role": "user", "content": "Say hello."}])
        assert reply.choices[0].message.content
    finally:
        deployer.delete(job, "distilled")


LIVE_APP = os.environ.get("DISTILL_LIVE_APP_URL")  # https://<app>.azurewebsites.net, deployed with dashboardClientId


@pytest.mark.live
@pytest.mark.skipif(not LIVE_APP, reason="live: set DISTILL_LIVE_APP_URL to a deployed app with dashboard sign-in")
def test_the_deployed_dashboard_sends_anyone_not_signed_in_to_entra_id() -> None:
    """App Service authentication is on, lets the request through to the app, and the dashboard sends it to sign in;
    a principal header sent by the client is dropped by the platform, so it does not get in either."""
    import urllib.error
    import urllib.request

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: object, **kwargs: object) -> None:
            return None

    opener = urllib.request.build_opener(NoRedirect)
    for headers in ({}, {"X-MS-CLIENT-PRINCIPAL-ID": "forged"}):
        request = urllib.request.Request(f"{LIVE_APP}/api/dashboard/", headers=headers)
        with pytest.raises(urllib.error.HTTPError) as answer:
            opener.open(request, timeout=30)
        assert answer.value.code == 302
        assert answer.value.headers["Location"].startswith("/.auth/login/aad?post_login_redirect_uri=")
