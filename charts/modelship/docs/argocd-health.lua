-- Argo CD health check for modelship.io/ModelDeployment (kstatus conditions + observedGeneration).
--
--   Suspended    spec.suspend is true and the operator has observed it (status.phase Suspended)
--   Progressing  no status yet; spec change not yet observed (observedGeneration < generation);
--                Reconciling=True (optimize/build/rollout running); anything not yet Ready
--   Degraded     Stalled=True (accuracy gate blocked, Job failed its attempts, invalid spec, ...)
--   Healthy      Ready=True for the current generation
--
-- Install: argocd-cm key resource.customizations.health.modelship.io_ModelDeployment (see argocd-cm.yaml).
local hs = { status = "Progressing", message = "Waiting for the Modelship operator" }

local function find(conditions, type)
  if conditions == nil then return nil end
  for _, c in ipairs(conditions) do
    if c.type == type then return c end
  end
  return nil
end

local function text(c, fallback)
  if c == nil then return fallback end
  if c.message ~= nil and c.message ~= "" then return c.message end
  if c.reason ~= nil and c.reason ~= "" then return c.reason end
  return fallback
end

if obj.status == nil then
  return hs
end

local generation = (obj.metadata ~= nil and obj.metadata.generation) or 0
local observed = obj.status.observedGeneration
if observed == nil or observed < generation then
  hs.message = "Spec change not yet observed (generation " .. tostring(generation) ..
    ", observed " .. tostring(observed or "none") .. ")"
  return hs
end

local suspend = obj.spec ~= nil and obj.spec.suspend == true
local conditions = obj.status.conditions
local ready = find(conditions, "Ready")
local stalled = find(conditions, "Stalled")
local reconciling = find(conditions, "Reconciling")

if suspend then
  if obj.status.phase == "Suspended" then
    hs.status = "Suspended"
    hs.message = text(ready, "Suspended")
  else
    hs.message = "Suspending"
  end
  return hs
end

if stalled ~= nil and stalled.status == "True" then
  hs.status = "Degraded"
  hs.message = text(stalled, "Stalled")
  return hs
end

if reconciling ~= nil and reconciling.status == "True" then
  hs.message = text(reconciling, "Reconciling")
  return hs
end

if ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = text(ready, "Ready")
  return hs
end

hs.message = text(ready, hs.message)
return hs
