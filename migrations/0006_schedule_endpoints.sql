-- Schedules name their endpoint by method and path (docs/design/alga-compatibility.md,
-- "Host APIs"): that is what the upgrade remap matches on and what a scheduled
-- run calls, so neither needs a join with extension_api_endpoint (whose ids are
-- per version).
ALTER TABLE tenant_extension_schedule
    ADD COLUMN IF NOT EXISTS endpoint_method varchar(16),
    ADD COLUMN IF NOT EXISTS endpoint_path   text;

-- Rows written by Alga point at an extension_api_endpoint row.
UPDATE tenant_extension_schedule s
   SET endpoint_method = upper(e.method), endpoint_path = e.path
  FROM extension_api_endpoint e
 WHERE e.id = s.endpoint_id AND s.endpoint_method IS NULL;
-- Any left over reference an endpoint that no longer exists: they cannot run.
UPDATE tenant_extension_schedule
   SET endpoint_method = '', endpoint_path = '', enabled = false, next_run_at = NULL
 WHERE endpoint_method IS NULL;

ALTER TABLE tenant_extension_schedule
    ALTER COLUMN endpoint_method SET NOT NULL,
    ALTER COLUMN endpoint_path SET NOT NULL;
