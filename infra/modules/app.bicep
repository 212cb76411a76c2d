// The Functions app and what it talks to: storage, Service Bus, monitoring, Key Vault, the storage events topic, and
// the least-privilege roles of the app's identity. Names the code fixes are checked by tests/test_infra_drift.py.
param location string
param tags object
param resourceToken string
param identityName string
@description('Object id of whoever runs azd; empty grants nothing.')
param deployerPrincipalId string
param workspaceId string
param workspaceName string
param workspaceResourceGroup string
param teacherKeyInKeyVault bool
param shardRows int
param maximumInstanceCount int
param instanceMemoryMB int
param dashboardClientId string

var roles = loadJsonContent('../roles.json')

// Fixed by the code: shared/settings.py (containers, queues), functions/*.py (bindings).
var inputContainer = 'input'
var jobsContainer = 'jobs'
var cacheContainer = 'teacher-cache' // the response cache: teacher replies by content hash
var shardQueue = 'shards'
var completionQueue = 'completions'
var requestQueue = 'jobs' // job requests users send
var evaluationQueue = 'evaluations' // a fine-tuned job's evaluation
// Fixed here: the app package, and the BlobCreated events Event Grid could not deliver.
var packageContainer = 'app-package'
var eventDeadLetterContainer = 'event-dead-letters'
var eventsQueueName = 'distill-events' // Distill's own events, for users to read with no code
var teacherKeySecretName = 'teacher-api-key'

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' existing = {
  name: identityName
}

// ---- Storage: the host's account (AzureWebJobsStorage, the app package) and the data account (jobs' inputs and
// outputs). Apart, so that the data account's roles and lifecycle are its own. Shared keys are off: identities only.

resource hostStorage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  name: 'sthost${resourceToken}'
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: { name: 'Standard_LRS' }
  properties: {
    allowBlobPublicAccess: false
    allowSharedKeyAccess: false
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
  }
}

resource hostBlobs 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: hostStorage
  name: 'default'
}

resource packages 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: hostBlobs
  name: packageContainer
}

resource dataStorage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  name: 'stdata${resourceToken}'
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: { name: 'Standard_LRS' }
  properties: {
    allowBlobPublicAccess: false
    allowSharedKeyAccess: false
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
  }
}

resource dataBlobs 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: dataStorage
  name: 'default'
}

resource input 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: dataBlobs
  name: inputContainer
}

resource jobs 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: dataBlobs
  name: jobsContainer
}

resource teacherCache 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: dataBlobs
  name: cacheContainer
}

resource eventDeadLetters 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: dataBlobs
  name: eventDeadLetterContainer
}

// ---- Service Bus. Standard tier: duplicate detection needs Standard or Premium. Local (SAS) auth is off.

resource serviceBus 'Microsoft.ServiceBus/namespaces@2022-10-01-preview' = {
  name: 'sb-distill-${resourceToken}'
  location: location
  tags: tags
  sku: { name: 'Standard', tier: 'Standard' }
  properties: {
    disableLocalAuth: true
    minimumTlsVersion: '1.2'
  }
}

// One message per shard; the teacher labels its rows (~50 s at 50 rows, 10 calls in flight, ~10 s a call; longer when
// the teacher throttles). Message ids are `<job>/shard/<n>`: ingest may send a shard twice, duplicate detection drops it.
resource shards 'Microsoft.ServiceBus/namespaces/queues@2022-10-01-preview' = {
  parent: serviceBus
  name: shardQueue
  properties: {
    requiresDuplicateDetection: true
    duplicateDetectionHistoryTimeWindow: 'PT24H' // longer than any job's ingest-to-last-shard span
    deadLetteringOnMessageExpiration: true // an expired shard fails its job with a reason instead of vanishing
    defaultMessageTimeToLive: 'P7D'
    // The longest lock Service Bus allows: the host renews it (host.json maxAutoLockRenewalDuration, 30 min), and a
    // renewal that fails still leaves 5 min before another instance takes the shard and pays the teacher again.
    lockDuration: 'PT5M'
    // Rows the teacher fails are rejected rows, not exceptions: a shard fails a delivery only on a crash, a lost lock or
    // a storage error. 5 deliveries ride those out; a shard failing more is a bug, and each delivery can spend tokens
    // on rows not yet written, so it goes to the dead-letter queue (which fails its job) rather than 10 times round.
    maxDeliveryCount: 5
    requiresSession: false
    enablePartitioning: false
    maxSizeInMegabytes: 1024
  }
}

// One message per finished shard (`<job>/done/<n>`); the last one assembles the dataset and starts the fine-tune.
resource completions 'Microsoft.ServiceBus/namespaces/queues@2022-10-01-preview' = {
  parent: serviceBus
  name: completionQueue
  properties: {
    requiresDuplicateDetection: true
    duplicateDetectionHistoryTimeWindow: 'PT24H'
    deadLetteringOnMessageExpiration: true
    defaultMessageTimeToLive: 'P7D'
    // Most completions take a second; the last one streams every result into train/validation and uploads them to
    // AzureML, which can take minutes: the longest lock, renewed by the host.
    lockDuration: 'PT5M'
    // Aggregation spends no tokens and is idempotent (compare-and-swap on the job record), and a dead-lettered
    // completion fails a job whose labelling is already paid for: retry longer than shards do.
    maxDeliveryCount: 10
    requiresSession: false
    enablePartitioning: false
    maxSizeInMegabytes: 1024
  }
}

// Job requests (`start`, `cancel`, `resume`; shared/pipeline/job_requests.py). Ids are `<job>/<action>` (a resume's
// with its budget): a repeated request is dropped. A request that cannot be honoured is recorded and completed by the
// handler, so only a crash sends one round again; ingest from a start can take minutes on a large file.
resource jobRequests 'Microsoft.ServiceBus/namespaces/queues@2022-10-01-preview' = {
  parent: serviceBus
  name: requestQueue
  properties: {
    requiresDuplicateDetection: true
    duplicateDetectionHistoryTimeWindow: 'PT24H'
    deadLetteringOnMessageExpiration: true
    defaultMessageTimeToLive: 'P7D'
    lockDuration: 'PT5M'
    maxDeliveryCount: 5
    requiresSession: false
    enablePartitioning: false
    maxSizeInMegabytes: 1024
  }
}

// The evaluation of a fine-tuned job (shared/pipeline/evaluate.py). Ids are `<job>/evaluate/<attempt>/<look>`: the
// first look is sent by whoever records the fine-tune's end (again by the poll timer: dropped as a duplicate), and each
// later look, while a deployment is still being made, is a new message scheduled for later, so no function waits on
// a deployment and no look counts as a redelivery of another.
resource evaluations 'Microsoft.ServiceBus/namespaces/queues@2022-10-01-preview' = {
  parent: serviceBus
  name: evaluationQueue
  properties: {
    requiresDuplicateDetection: true
    duplicateDetectionHistoryTimeWindow: 'PT24H'
    deadLetteringOnMessageExpiration: true
    defaultMessageTimeToLive: 'P7D'
    // The look that scores asks up to 200 validation rows (evaluation.max_rows) of each student, which takes minutes:
    // the longest lock, renewed by the host (host.json maxAutoLockRenewalDuration).
    lockDuration: 'PT5M'
    // A refused or failed deployment is recorded, not raised: a delivery fails on a crash, a lost lock, a storage error
    // or a passing AzureML error (5xx, 429), which 5 deliveries ride out. Each redelivery of the scoring look asks the
    // students again (tokens, and a fine-tuned endpoint's hourly fee while it exists), and a dead-lettered evaluation
    // only ends the evaluation with the reason (the job keeps its model) and deletes its endpoints: not 10 times round.
    maxDeliveryCount: 5
    requiresSession: false
    enablePartitioning: false
    maxSizeInMegabytes: 1024
  }
}

// ---- Monitoring: Application Insights on Log Analytics; telemetry is sent with the identity (local auth is off).

resource logs 'Microsoft.OperationalInsights/workspaces@2023-09-01' = {
  name: 'log-${resourceToken}'
  location: location
  tags: tags
  properties: {
    sku: { name: 'PerGB2018' }
    retentionInDays: 30
  }
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' = {
  name: 'appi-${resourceToken}'
  location: location
  tags: tags
  kind: 'web'
  properties: {
    Application_Type: 'web'
    WorkspaceResourceId: logs.id
    DisableLocalAuth: true
  }
}

// ---- Key Vault: holds the teacher key when the teacher needs one (set with `az keyvault secret set`, never by azd,
// so the key is in no deployment's history). Access by Azure RBAC.

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  name: 'kv-${resourceToken}'
  location: location
  tags: tags
  properties: {
    tenantId: tenant().tenantId
    sku: { family: 'A', name: 'standard' }
    enableRbacAuthorization: true
    enableSoftDelete: true
  }
}

// ---- The function app: Flex Consumption, Python 3.11, running as the user-assigned identity.

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  name: 'plan-${resourceToken}'
  location: location
  tags: tags
  kind: 'functionapp'
  sku: { tier: 'FlexConsumption', name: 'FC1' }
  properties: { reserved: true }
}

resource site 'Microsoft.Web/sites@2024-04-01' = {
  name: 'func-distill-${resourceToken}'
  location: location
  tags: union(tags, { 'azd-service-name': 'app' })
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: { '${identity.id}': {} }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    keyVaultReferenceIdentity: identity.id
    siteConfig: { minTlsVersion: '1.2' }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${hostStorage.properties.primaryEndpoints.blob}${packageContainer}'
          authentication: { type: 'UserAssignedIdentity', userAssignedIdentityResourceId: identity.id }
        }
      }
      scaleAndConcurrency: { maximumInstanceCount: maximumInstanceCount, instanceMemoryMB: instanceMemoryMB }
      runtime: { name: 'python', version: '3.11' }
    }
  }
}

// Entra ID sign-in for the job dashboard (functions/dashboard.py). Requests without a signed-in person still reach the
// app, so the function-key status route and the platform's webhooks keep working; the dashboard itself sends them to
// sign in (shared/pipeline/dashboard.py). No client secret: sign-in takes the ID token the registration issues.
resource signIn 'Microsoft.Web/sites/config@2024-04-01' = if (!empty(dashboardClientId)) {
  parent: site
  name: 'authsettingsV2'
  properties: {
    platform: { enabled: true }
    globalValidation: {
      requireAuthentication: false
      unauthenticatedClientAction: 'AllowAnonymous'
    }
    httpSettings: { requireHttps: true }
    identityProviders: {
      azureActiveDirectory: {
        enabled: true
        registration: {
          clientId: dashboardClientId
          openIdIssuer: '${environment().authentication.loginEndpoint}${tenant().tenantId}/v2.0'
        }
        validation: { allowedAudiences: [dashboardClientId, 'api://${dashboardClientId}'] }
      }
    }
    login: { tokenStore: { enabled: false } }
  }
}

// Every setting the code reads (shared/settings.py, shared/services.py) and every binding connection (functions/*.py),
// in the identity-based form: `<connection>__serviceUri` / `__fullyQualifiedNamespace`, with `__credential` and
// `__clientId` naming the user-assigned identity; AZURE_CLIENT_ID does the same for DefaultAzureCredential in the code.
resource appSettings 'Microsoft.Web/sites/config@2024-04-01' = {
  parent: site
  name: 'appsettings'
  properties: union({
    AzureWebJobsStorage__accountName: hostStorage.name
    AzureWebJobsStorage__credential: 'managedidentity'
    AzureWebJobsStorage__clientId: identity.properties.clientId
    APPLICATIONINSIGHTS_CONNECTION_STRING: appInsights.properties.ConnectionString
    APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'ClientId=${identity.properties.clientId};Authorization=AAD'
    AZURE_CLIENT_ID: identity.properties.clientId
    DistillStorage__serviceUri: dataStorage.properties.primaryEndpoints.blob
    DistillStorage__credential: 'managedidentity'
    DistillStorage__clientId: identity.properties.clientId
    // The namespace's host as the resource gives it (sovereign clouds have other suffixes).
    DistillServiceBus__fullyQualifiedNamespace: split(split(serviceBus.properties.serviceBusEndpoint, '//')[1], ':')[0]
    DistillServiceBus__credential: 'managedidentity'
    DistillServiceBus__clientId: identity.properties.clientId
    AZUREML_SUBSCRIPTION_ID: subscription().subscriptionId
    AZUREML_RESOURCE_GROUP: workspaceResourceGroup
    AZUREML_WORKSPACE: workspaceName
    DISTILL_WORKSPACE_TOPIC: workspaceId // run events from any other workspace are ignored
    DISTILL_SHARD_ROWS: string(shardRows)
    DISTILL_FINETUNE_CLAIM_SECONDS: '600'
    DISTILL_CANCEL_CHECK_SECONDS: '2' // how soon teacher workers notice `distill cancel`
    // A rate-limit wait longer than this sends the shard back to Service Bus as a scheduled message instead of
    // holding its lock while sleeping.
    DISTILL_DEFER_AFTER_SECONDS: '20'
    // Teacher prices per 1,000 tokens, for the cost metric; empty leaves cost out of status.json.
    DISTILL_PRICE_PROMPT_PER_1K: ''
    DISTILL_PRICE_COMPLETION_PER_1K: ''
    // Distill's own events: where they are published (as this identity), and the source they name.
    DISTILL_EVENTS_TOPIC_ENDPOINT: distillEvents.properties.endpoint
    DISTILL_EVENT_SOURCE: '/distill/${site.name}'
  }, teacherKeyInKeyVault ? {
    // Versionless: a new secret version is picked up without a deployment (docs/operations.md, rotating keys).
    TEACHER_API_KEY: '@Microsoft.KeyVault(SecretUri=${vault.properties.vaultUri}secrets/${teacherKeySecretName}/)'
  } : {})
  dependsOn: [hostBlobOwner, hostQueueContributor, dataBlobContributor, busSender, busReceiver, telemetryPublisher, vaultSecretsUser, eventsSender]
}

// ---- Role assignments of the app's identity, each at the narrowest scope that works.

// Host storage: the host's keys and timer leases, the app package (Flex deployment reads it as this identity).
resource hostBlobOwner 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(hostStorage.id, identity.id, roles['Storage Blob Data Owner'])
  scope: hostStorage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles['Storage Blob Data Owner'])
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

// Host storage queues: with `DistillStorage__serviceUri` the blob trigger keeps its poison-blob queue in the host
// account (AzureWebJobsStorage), not in the data account.
resource hostQueueContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(hostStorage.id, identity.id, roles['Storage Queue Data Contributor'])
  scope: hostStorage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles['Storage Queue Data Contributor'])
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

// Host storage tables: the diagnostic events the host records for the portal's "Diagnose and solve problems".
resource hostTableContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(hostStorage.id, identity.id, roles['Storage Table Data Contributor'])
  scope: hostStorage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles['Storage Table Data Contributor'])
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

// Data storage: read inputs, write job files with ETag conditions, list jobs, create a missing container; also where
// Event Grid dead-letters undeliverable BlobCreated events as this identity. No ACLs are used, so not Owner.
resource dataBlobContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(dataStorage.id, identity.id, roles['Storage Blob Data Contributor'])
  scope: dataStorage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles['Storage Blob Data Contributor'])
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

// Service Bus, on the namespace, which holds only Distill's four queues: ingest sends shards, the teacher sends
// completions, users send job requests, the fine-tune's end and the evaluation itself send evaluations; the seven
// triggers (four queues, three dead-letter queues) receive. Not Data Owner: no queue management.
resource busSender 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(serviceBus.id, identity.id, roles['Azure Service Bus Data Sender'])
  scope: serviceBus
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles['Azure Service Bus Data Sender'])
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

resource busReceiver 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(serviceBus.id, identity.id, roles['Azure Service Bus Data Receiver'])
  scope: serviceBus
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles['Azure Service Bus Data Receiver'])
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

// Application Insights with local auth off: telemetry is accepted from identities holding this role.
resource telemetryPublisher 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(appInsights.id, identity.id, roles['Monitoring Metrics Publisher'])
  scope: appInsights
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles['Monitoring Metrics Publisher'])
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

// Key Vault: the app resolves the TEACHER_API_KEY reference (read secrets, nothing else); the deployer may set it.
resource vaultSecretsUser 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (teacherKeyInKeyVault) {
  name: guid(vault.id, identity.id, roles['Key Vault Secrets User'])
  scope: vault
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles['Key Vault Secrets User'])
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

resource deployerSecretsOfficer 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (teacherKeyInKeyVault && !empty(deployerPrincipalId)) {
  name: guid(vault.id, deployerPrincipalId, roles['Key Vault Secrets Officer'])
  scope: vault
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles['Key Vault Secrets Officer'])
    principalId: deployerPrincipalId
  }
}

// The deployer submits jobs and downloads results (`distill submit`, `distill download`) with their own sign-in.
resource deployerDataContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(deployerPrincipalId)) {
  name: guid(dataStorage.id, deployerPrincipalId, roles['Storage Blob Data Contributor'])
  scope: dataStorage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles['Storage Blob Data Contributor'])
    principalId: deployerPrincipalId
  }
}

// The deployer may send job requests (`distill submit --queue`) and read the events queue, as themselves.
resource deployerBusSender 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(deployerPrincipalId)) {
  name: guid(serviceBus.id, deployerPrincipalId, roles['Azure Service Bus Data Sender'])
  scope: serviceBus
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles['Azure Service Bus Data Sender'])
    principalId: deployerPrincipalId
  }
}

resource deployerQueueReader 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(deployerPrincipalId)) {
  name: guid(dataStorage.id, deployerPrincipalId, roles['Storage Queue Data Contributor'])
  scope: dataStorage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles['Storage Queue Data Contributor'])
    principalId: deployerPrincipalId
  }
}

// ---- Event Grid system topic on the data account; its subscription to the ingest function is in infra/events.bicep.
// It carries the app's identity so that undeliverable events can be dead-lettered without account keys.
resource storageEvents 'Microsoft.EventGrid/systemTopics@2022-06-15' = {
  name: 'evgt-data-${resourceToken}'
  location: location
  tags: tags
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: { '${identity.id}': {} }
  }
  properties: {
    source: dataStorage.id
    topicType: 'Microsoft.Storage.StorageAccounts'
  }
}

// ---- Distill's own events (Distill.Job.*, CloudEvents 1.0): a custom topic the app publishes to as its identity, and
// a ready-made subscription that delivers every one of them to the storage queue `distill-events` in the data account,
// so a user can see them with no code (`az storage message peek`); users add their own subscriptions to the topic.
resource distillEvents 'Microsoft.EventGrid/topics@2022-06-15' = {
  name: 'evgt-distill-${resourceToken}'
  location: location
  tags: tags
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: { '${identity.id}': {} }
  }
  properties: {
    inputSchema: 'CloudEventSchemaV1_0'
    disableLocalAuth: true // publishers sign in with Entra ID
  }
}

resource dataQueues 'Microsoft.Storage/storageAccounts/queueServices@2023-05-01' = {
  parent: dataStorage
  name: 'default'
}

resource eventsQueue 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' = {
  parent: dataQueues
  name: eventsQueueName
}

resource eventsToQueue 'Microsoft.EventGrid/topics/eventSubscriptions@2022-06-15' = {
  parent: distillEvents
  name: 'distill-events-to-queue'
  properties: {
    eventDeliverySchema: 'CloudEventSchemaV1_0'
    deliveryWithResourceIdentity: {
      identity: {
        type: 'UserAssigned'
        userAssignedIdentity: identity.id
      }
      destination: {
        endpointType: 'StorageQueue'
        properties: {
          resourceId: dataStorage.id
          queueName: eventsQueueName
          queueMessageTimeToLiveInSeconds: -1
        }
      }
    }
    filter: {
      includedEventTypes: [
        'Distill.Job.Accepted'
        'Distill.Job.Progress'
        'Distill.Job.DatasetReady'
        'Distill.Job.FineTuneStarted'
        'Distill.Job.Succeeded'
        'Distill.Job.Failed'
        'Distill.Job.Cancelled'
        'Distill.Job.BudgetSpent'
      ]
    }
  }
  dependsOn: [eventsQueue, eventsQueueSender]
}

// The app publishes to the topic; the topic (as the same identity) writes to the events queue.
resource eventsSender 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(distillEvents.id, identity.id, roles['EventGrid Data Sender'])
  scope: distillEvents
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles['EventGrid Data Sender'])
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

resource eventsQueueSender 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(dataStorage.id, identity.id, roles['Storage Queue Data Message Sender'])
  scope: dataStorage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles['Storage Queue Data Message Sender'])
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

output functionAppName string = site.name
output dataStorageName string = dataStorage.name
output storageEventsTopicName string = storageEvents.name
output serviceBusName string = serviceBus.name
output serviceBusHost string = split(split(serviceBus.properties.serviceBusEndpoint, '//')[1], ':')[0]
output keyVaultName string = vault.name
output eventsTopicName string = distillEvents.name
