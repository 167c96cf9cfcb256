-- Shared by CLAIM: the model of deployment `index` (0: the primary) of a job's route
-- (its JSON), or nil when the route has no such deployment.
local function deployment_model(route, index)
  if not route then return nil end
  local ok, decoded = pcall(cjson.decode, route)
  if not ok or type(decoded) ~= 'table' then return nil end
  local deployment = decoded
  if index > 0 then
    local fallbacks = decoded['fallbacks']
    deployment = type(fallbacks) == 'table' and fallbacks[index] or nil
  end
  local model = type(deployment) == 'table' and deployment['model'] or nil
  if type(model) == 'string' then return model end
  return nil
end
