// The AzureML workspace's run events to the run_events function. Only Distill's runs (tagged distill_job by
// shared/finetune/azureml.py) reaching a terminal status (shared/ports.py TERMINAL_STATUSES) are delivered.
param topicName string
@description('Resource id of the Event Grid-triggered function: <site id>/functions/<name>.')
param functionId string

resource runEventsTopic 'Microsoft.EventGrid/systemTopics@2022-06-15' existing = {
  name: topicName
}

resource runEvents 'Microsoft.EventGrid/systemTopics/eventSubscriptions@2022-06-15' = {
  parent: runEventsTopic
  name: 'distill-run-events'
  properties: {
    destination: {
      endpointType: 'AzureFunction'
      properties: {
        resourceId: functionId
        maxEventsPerBatch: 1
        preferredBatchSizeInKilobytes: 64
      }
    }
    eventDeliverySchema: 'EventGridSchema'
    filter: {
      includedEventTypes: ['Microsoft.MachineLearningServices.RunStatusChanged']
      advancedFilters: [
        { operatorType: 'IsNotNull', key: 'data.runTags.distill_job' }
        {
          operatorType: 'StringIn'
          key: 'data.runStatus'
          values: ['Completed', 'Failed', 'Canceled', 'NotResponding', 'Paused']
        }
      ]
    }
    // No dead-letter store: an event that is never delivered is made up for by the poll_finetunes timer, which asks
    // AzureML about every job still fine-tuning every 5 minutes.
    retryPolicy: { maxDeliveryAttempts: 30, eventTimeToLiveInMinutes: 1440 }
  }
}
