// Entra ID access to an Azure OpenAI teacher (manifest `teacher.kind: azure_openai` without a key): inference only.
param accountName string
param principalId string

var roles = loadJsonContent('../roles.json')

resource account 'Microsoft.CognitiveServices/accounts@2024-10-01' existing = {
  name: accountName
}

// Calls chat completions on the account's deployments; cannot read keys or change deployments.
resource openAiUser 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(account.id, principalId, roles['Cognitive Services OpenAI User'])
  scope: account
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles['Cognitive Services OpenAI User'])
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}
