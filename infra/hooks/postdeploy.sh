#!/bin/sh
# azd postdeploy hook: subscribe the deployed functions to their Event Grid events (infra/events.bicep).
# azd passes the provisioning outputs (infra/main.bicep) as environment variables.
# Retried: right after a deployment the host may not have started yet, so its webhook key or the endpoint's
# validation handshake can be missing for a minute or two.
set -eu
attempt=1
until az deployment group create \
    --name distill-events \
    --resource-group "$AZURE_RESOURCE_GROUP" \
    --template-file infra/events.bicep \
    --parameters functionAppName="$AZURE_FUNCTION_APP_NAME" \
                 dataStorageName="$DISTILL_STORAGE_ACCOUNT" \
                 storageEventsTopicName="$DISTILL_STORAGE_EVENTS_TOPIC" \
                 identityId="$AZURE_IDENTITY_ID" \
                 workspaceResourceGroup="$AZUREML_RESOURCE_GROUP" \
                 workspaceEventsTopicName="$AZUREML_EVENTS_TOPIC" \
    --output none
do
    if [ "$attempt" -ge 5 ]; then
        echo "postdeploy: the Event Grid subscriptions could not be created; run infra/hooks/postdeploy.sh again" >&2
        exit 1
    fi
    attempt=$((attempt + 1))
    echo "postdeploy: the app is not ready yet; trying again in 30 s (attempt $attempt of 5)" >&2
    sleep 30
done
echo "postdeploy: Event Grid subscriptions ready (ingest-manifests, distill-run-events)"
