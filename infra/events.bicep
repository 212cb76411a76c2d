// The Event Grid subscriptions that start and finish jobs. Deployed by infra/hooks/postdeploy.sh after `azd deploy`:
// Event Grid validates an endpoint when the subscription is created, and the blob extension's webhook key exists only
// once the app's host has started with the ingest function. Safe to deploy again (same names, same settings).
param functionAppName string
param dataStorageName string
param storageEventsTopicName string
param identityId string
param workspaceResourceGroup string
param workspaceEventsTopicName string

// Fixed by the code: functions/ingest.py, functions/run_events.py, shared/settings.py, shared/pipeline/ingest.py.
var ingestFunction = 'ingest'
var runEventsFunction = 'run_events'
var inputContainer = 'input'
var eventDeadLetterContainer = 'event-dead-letters'

resource site 'Microsoft.Web/sites@2024-04-01' existing = {
  name: functionAppName
}

resource host 'Microsoft.Web/sites/host@2024-04-01' existing = {
  parent: site
  name: 'default'
}

resource dataStorage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: dataStorageName
}

resource storageEvents 'Microsoft.EventGrid/systemTopics@2022-06-15' existing = {
  name: storageEventsTopicName
}

// A manifest landing in input/<job>/ starts its job. Filters: BlobCreated only from the calls that complete a blob
// (one upload can raise several events otherwise), and only manifests, since data files alone start nothing.
resource manifests 'Microsoft.EventGrid/systemTopics/eventSubscriptions@2022-06-15' = {
  parent: storageEvents
  name: 'ingest-manifests'
  properties: {
    destination: {
      endpointType: 'WebHook'
      properties: {
        // The blob trigger's Event Grid endpoint (source EventGrid), authorised by the blobs_extension system key.
        endpointUrl: 'https://${site.properties.defaultHostName}/runtime/webhooks/blobs?functionName=Host.Functions.${ingestFunction}&code=${host.listKeys().systemKeys.blobs_extension}'
        maxEventsPerBatch: 1
      }
    }
    eventDeliverySchema: 'EventGridSchema'
    filter: {
      includedEventTypes: ['Microsoft.Storage.BlobCreated']
      subjectBeginsWith: '/blobServices/default/containers/${inputContainer}/'
      advancedFilters: [
        {
          operatorType: 'StringIn'
          key: 'data.api'
          values: ['PutBlob', 'PutBlockList', 'CopyBlob', 'FlushWithClose']
        }
        {
          operatorType: 'StringEndsWith'
          key: 'subject'
          values: ['/manifest.json', '/manifest.yaml', '/manifest.yml']
        }
      ]
    }
    // Retried for a day (a cold or redeploying app), then kept as a blob in event-dead-letters for re-driving
    // (docs/operations.md): re-uploading the manifest raises the event again, and ingest is idempotent.
    retryPolicy: { maxDeliveryAttempts: 30, eventTimeToLiveInMinutes: 1440 }
    deadLetterWithResourceIdentity: {
      identity: { type: 'UserAssigned', userAssignedIdentity: identityId }
      deadLetterDestination: {
        endpointType: 'StorageBlob'
        properties: { resourceId: dataStorage.id, blobContainerName: eventDeadLetterContainer }
      }
    }
  }
}

// The workspace's run events reach run_events; its topic may live in another resource group.
module runEvents 'modules/workspace-events.bicep' = {
  name: 'distill-run-events'
  scope: resourceGroup(workspaceResourceGroup)
  params: {
    topicName: workspaceEventsTopicName
    functionId: '${site.id}/functions/${runEventsFunction}'
  }
}
