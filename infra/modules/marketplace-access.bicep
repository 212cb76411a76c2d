// The app's right to create and read the SaaS resource a partner model's Marketplace subscription makes, in the
// workspace's resource group only (main.bicep declares the role).

@description('Id of the custom role holding Microsoft.SaaS/resources/read and write.')
param roleDefinitionId string

@description('Principal id of the app\'s identity.')
param principalId string

resource saasResources 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(resourceGroup().id, principalId, roleDefinitionId)
  properties: {
    roleDefinitionId: roleDefinitionId
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}
