// Distill on Azure: everything `azd up` provisions (docs/deploy.md). The Event Grid subscriptions come after the code
// is deployed (infra/events.bicep, run by the postdeploy hook in azure.yaml): Event Grid validates each endpoint when a
// subscription is created, and the functions' endpoints exist only once the app runs.
targetScope = 'subscription'

@minLength(1)
@maxLength(64)
@description('The azd environment name: part of every resource name, and a tag on each.')
param environmentName string

@minLength(1)
@description('Region for every resource: one that offers Flex Consumption (and, for serverless fine-tuning, the student).')
@metadata({ azd: { type: 'location' } })
param location string

@description('Object id of whoever runs azd (azd passes AZURE_PRINCIPAL_ID): may upload jobs and set the teacher key.')
param principalId string = ''

@description('An existing AzureML workspace to fine-tune in (same subscription); empty creates one beside the app.')
param azureMlWorkspaceName string = ''

@description('The resource group of that workspace; empty means the app\'s resource group.')
param azureMlResourceGroup string = ''

@description('Name of an Event Grid system topic the existing workspace already has (a resource has at most one).')
param azureMlEventsTopicName string = ''

@description('Resource id of an Azure OpenAI account used as the teacher with Entra ID: the app gets OpenAI User on it.')
param teacherOpenAiAccountId string = ''

@description('Set TEACHER_API_KEY as a Key Vault reference to the secret teacher-api-key (its value is set outside azd).')
param teacherKeyInKeyVault bool = false

@description('Rows per shard message (DISTILL_SHARD_ROWS).')
param shardRows int = 50

@description('Most instances the Flex Consumption app scales out to: bounds concurrent teacher calls and cost.')
param maximumInstanceCount int = 40

@description('Client id of the Entra ID app registration people sign in to the job dashboard with (ID tokens enabled, redirect URI https://<app>/.auth/login/aad/callback); empty leaves sign-in off, and the dashboard is not served.')
param dashboardClientId string = ''

@description('Let the app subscribe the workspace to a partner model\'s Marketplace offer (Llama, Mistral...) before that model is first fine-tuned: two custom roles holding only the Marketplace actions it takes. Creating a role definition needs Owner or User Access Administrator; false leaves the subscription to an administrator (docs/deploy.md).')
param partnerStudents bool = true

@allowed([2048, 4096])
@description('Memory of each instance, in MB.')
param instanceMemoryMB int = 2048

var resourceToken = toLower(uniqueString(subscription().id, environmentName, location))
var tags = { 'azd-env-name': environmentName }
var createWorkspace = empty(azureMlWorkspaceName)
var workspaceGroupName = createWorkspace || empty(azureMlResourceGroup) ? group.name : azureMlResourceGroup

resource group 'Microsoft.Resources/resourceGroups@2024-03-01' = {
  name: 'rg-${environmentName}'
  location: location
  tags: tags
}

module identity 'modules/identity.bicep' = {
  name: 'identity'
  scope: group
  params: {
    name: 'id-distill-${resourceToken}'
    location: location
    tags: tags
  }
}

module workspace 'modules/workspace.bicep' = {
  name: 'workspace'
  scope: resourceGroup(workspaceGroupName)
  dependsOn: [group] // the app's own group when the workspace is created there
  params: {
    create: createWorkspace
    name: createWorkspace ? 'mlw-${resourceToken}' : azureMlWorkspaceName
    eventsTopicName: azureMlEventsTopicName
    location: location
    tags: tags
    resourceToken: resourceToken
    principalId: identity.outputs.principalId
  }
}

module app 'modules/app.bicep' = {
  name: 'app'
  scope: group
  params: {
    location: location
    tags: tags
    resourceToken: resourceToken
    identityName: identity.outputs.name
    deployerPrincipalId: principalId
    workspaceId: workspace.outputs.id
    workspaceName: workspace.outputs.name
    workspaceResourceGroup: workspaceGroupName
    teacherKeyInKeyVault: teacherKeyInKeyVault
    shardRows: shardRows
    maximumInstanceCount: maximumInstanceCount
    instanceMemoryMB: instanceMemoryMB
    dashboardClientId: dashboardClientId
  }
}

// Fine-tuning a partner's model (Meta, Mistral, Cohere...) needs a Marketplace subscription in the workspace, which
// the app creates before the model's first fine-tune (shared/finetune/azureml.py). AzureML Data Scientist covers the
// workspace's side of it (workspaces/marketplaceSubscriptions); creating it also accepts the offer's terms for the
// Azure subscription and creates a SaaS resource in the workspace's group. These two roles hold exactly the actions
// Azure's guide to partner models lists for those two steps, each assigned at the only scope it is needed at.
resource marketplaceTerms 'Microsoft.Authorization/roleDefinitions@2022-04-01' = if (partnerStudents) {
  name: guid(subscription().id, environmentName, 'distill-marketplace-terms')
  properties: {
    roleName: 'Distill Marketplace terms (${environmentName}, ${resourceToken})'
    description: 'Accept a partner model offer\'s Marketplace terms for the subscription, for Distill\'s fine-tunes.'
    type: 'CustomRole'
    permissions: [
      {
        actions: [
          'Microsoft.MarketplaceOrdering/agreements/offers/plans/read'
          'Microsoft.MarketplaceOrdering/agreements/offers/plans/sign/action'
          'Microsoft.MarketplaceOrdering/offerTypes/publishers/offers/plans/agreements/read'
          'Microsoft.Marketplace/offerTypes/publishers/offers/plans/agreements/read'
          'Microsoft.SaaS/register/action'
        ]
        notActions: []
      }
    ]
    assignableScopes: [
      subscription().id
    ]
  }
}

resource marketplaceTermsForApp 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (partnerStudents) {
  name: guid(subscription().id, resourceToken, 'distill-marketplace-terms')
  properties: {
    roleDefinitionId: marketplaceTerms.id
    principalId: identity.outputs.principalId
    principalType: 'ServicePrincipal'
  }
}

resource marketplaceResources 'Microsoft.Authorization/roleDefinitions@2022-04-01' = if (partnerStudents) {
  name: guid(subscription().id, environmentName, 'distill-marketplace-resources')
  properties: {
    roleName: 'Distill Marketplace resources (${environmentName}, ${resourceToken})'
    description: 'Create and read the SaaS resource of a partner model\'s Marketplace subscription, for Distill\'s fine-tunes.'
    type: 'CustomRole'
    permissions: [
      {
        actions: [
          'Microsoft.SaaS/resources/read'
          'Microsoft.SaaS/resources/write'
        ]
        notActions: []
      }
    ]
    assignableScopes: [
      subscription().id
    ]
  }
}

module marketplaceAccess 'modules/marketplace-access.bicep' = if (partnerStudents) {
  name: 'marketplace-access'
  scope: resourceGroup(workspaceGroupName)
  dependsOn: [workspace]
  params: {
    roleDefinitionId: marketplaceResources.id
    principalId: identity.outputs.principalId
  }
}

// The account id is /subscriptions/<sub>/resourceGroups/<group>/providers/Microsoft.CognitiveServices/accounts/<name>;
// a placeholder keeps the scope expression valid when there is none (the module is then skipped).
var teacherAccount = split(empty(teacherOpenAiAccountId) ? '${group.id}/providers/none/accounts/none' : teacherOpenAiAccountId, '/')

module teacherAccess 'modules/openai-access.bicep' = if (!empty(teacherOpenAiAccountId)) {
  name: 'teacher-access'
  scope: resourceGroup(teacherAccount[2], teacherAccount[4])
  params: {
    accountName: last(teacherAccount)
    principalId: identity.outputs.principalId
  }
}

// azd keeps these in the environment (`azd env get-values`); the postdeploy hook and docs/operations.md use them.
output AZURE_LOCATION string = location
output AZURE_RESOURCE_GROUP string = group.name
output AZURE_FUNCTION_APP_NAME string = app.outputs.functionAppName
output AZURE_IDENTITY_ID string = identity.outputs.id
output AZURE_KEY_VAULT_NAME string = app.outputs.keyVaultName
output DISTILL_STORAGE_ACCOUNT string = app.outputs.dataStorageName
output DISTILL_STORAGE_EVENTS_TOPIC string = app.outputs.storageEventsTopicName
output DISTILL_SERVICE_BUS string = app.outputs.serviceBusName
output DISTILL_SERVICE_BUS_HOST string = app.outputs.serviceBusHost
output DISTILL_EVENTS_TOPIC string = app.outputs.eventsTopicName
output AZUREML_RESOURCE_GROUP string = workspaceGroupName
output AZUREML_WORKSPACE string = workspace.outputs.name
output AZUREML_EVENTS_TOPIC string = workspace.outputs.eventsTopicName
