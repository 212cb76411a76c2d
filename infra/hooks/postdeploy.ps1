# azd postdeploy hook on Windows: the same steps as postdeploy.sh. Subscribe the deployed functions to their Event Grid
# events (infra/events.bicep); azd passes the provisioning outputs (infra/main.bicep) as environment variables.
# Retried: right after a deployment the host may not have started yet, so its webhook key or the endpoint's
# validation handshake can be missing for a minute or two.
$ErrorActionPreference = 'Stop'
$attempt = 1
while ($true) {
    az deployment group create `
        --name distill-events `
        --resource-group "$env:AZURE_RESOURCE_GROUP" `
        --template-file infra/events.bicep `
        --parameters functionAppName="$env:AZURE_FUNCTION_APP_NAME" `
                     dataStorageName="$env:DISTILL_STORAGE_ACCOUNT" `
                     storageEventsTopicName="$env:DISTILL_STORAGE_EVENTS_TOPIC" `
                     identityId="$env:AZURE_IDENTITY_ID" `
                     workspaceResourceGroup="$env:AZUREML_RESOURCE_GROUP" `
                     workspaceEventsTopicName="$env:AZUREML_EVENTS_TOPIC" `
        --output none
    if ($LASTEXITCODE -eq 0) { break }
    if ($attempt -ge 5) {
        Write-Error "postdeploy: the Event Grid subscriptions could not be created; run infra/hooks/postdeploy.ps1 again"
        exit 1
    }
    $attempt += 1
    Write-Warning "postdeploy: the app is not ready yet; trying again in 30 s (attempt $attempt of 5)"
    Start-Sleep -Seconds 30
}
Write-Output "postdeploy: Event Grid subscriptions ready (ingest-manifests, distill-run-events)"
