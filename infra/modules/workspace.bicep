// The AzureML workspace the student is fine-tuned in (created, or an existing one), the app's access to it, and the
// Event Grid system topic carrying its run events (subscribed to by infra/events.bicep).
param create bool
param name string
@description('An Event Grid system topic the workspace already has; empty creates one.')
param eventsTopicName string
param location string
param tags object
param resourceToken string
param principalId string

var roles = loadJsonContent('../roles.json')

// A new workspace gets its own storage account, key vault and Application Insights, as AzureML expects: it writes
// datastore credentials into that vault itself and uploads the fine-tuning data assets to that account.
resource mlStorage 'Microsoft.Storage/storageAccounts@2023-05-01' = if (create) {
  name: 'stml${resourceToken}'
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: { name: 'Standard_LRS' }
  properties: {
    allowBlobPublicAccess: false
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
  }
}

resource mlVault 'Microsoft.KeyVault/vaults@2023-07-01' = if (create) {
  name: 'kvml-${resourceToken}'
  location: location
  tags: tags
  properties: {
    tenantId: tenant().tenantId
    sku: { family: 'A', name: 'standard' }
    accessPolicies: []
  }
}

// ARM refuses a new workspace without Application Insights ("Missing dependent resources in workspace json"); it
// gets its own, on its own Log Analytics workspace. No container registry: serverless fine-tuning builds no image, and
// AzureML creates one on first need if a user later builds environments in this workspace.
resource mlLogs 'Microsoft.OperationalInsights/workspaces@2023-09-01' = if (create) {
  name: 'log-ml-${resourceToken}'
  location: location
  tags: tags
  properties: {
    sku: { name: 'PerGB2018' }
    retentionInDays: 30
  }
}

resource mlInsights 'Microsoft.Insights/components@2020-02-02' = if (create) {
  name: 'appi-ml-${resourceToken}'
  location: location
  tags: tags
  kind: 'web'
  properties: {
    Application_Type: 'web'
    WorkspaceResourceId: mlLogs.id
  }
}

resource newWorkspace 'Microsoft.MachineLearningServices/workspaces@2024-10-01' = if (create) {
  name: name
  location: location
  tags: tags
  identity: { type: 'SystemAssigned' }
  sku: { name: 'Basic', tier: 'Basic' }
  properties: {
    friendlyName: name
    storageAccount: mlStorage.id
    keyVault: mlVault.id
    applicationInsights: mlInsights.id
  }
}

// The workspace either way; what acts on it waits for newWorkspace explicitly (an existing reference cannot).
resource workspace 'Microsoft.MachineLearningServices/workspaces@2024-10-01' existing = {
  name: name
}

// Registers the train/validation data assets and submits and reads fine-tuning jobs (shared/finetune/azureml.py), and
// creates, reads, lists the keys of and deletes the serverless endpoints the evaluation deploys the fine-tuned model
// to (shared/finetune/serverless.py): the role's actions `workspaces/*/read`, `*/write`, `*/delete` and `*/action`
// cover `workspaces/serverlessEndpoints/{read,write,delete,listKeys/action}`, and its NotActions exclude only the
// workspace itself, compute, hubs, feature stores and the workspace's and compute's keys. So no further role (and no
// custom one) is needed; it cannot create compute, change the workspace or list the workspace's keys.
resource dataScientist 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(workspace.id, principalId, roles['AzureML Data Scientist'])
  scope: workspace
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles['AzureML Data Scientist'])
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
  dependsOn: [newWorkspace]
}

// A system topic lives beside its source, in the source's region.
resource runEvents 'Microsoft.EventGrid/systemTopics@2022-06-15' = if (empty(eventsTopicName)) {
  name: 'evgt-ml-${resourceToken}'
  location: create ? location : workspace.location
  tags: tags
  properties: {
    source: workspace.id
    topicType: 'Microsoft.MachineLearningServices.Workspaces'
  }
  dependsOn: [newWorkspace]
}

output id string = workspace.id
output name string = workspace.name
output eventsTopicName string = empty(eventsTopicName) ? runEvents.name : eventsTopicName
