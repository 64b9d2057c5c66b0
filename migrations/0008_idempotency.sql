-- Idempotency records in use (docs/design/idempotency.md): the claim that
-- holds a record while its call runs. `claim_token` is chosen by the
-- claimant (a worker) and presented to renew, complete or release the
-- record; `lease_expires_at` is when the claim lapses unless renewed, after
-- which the next claim of the same request takes it over. Both are NULL
-- once the record is completed.
ALTER TABLE idempotency_records ADD COLUMN IF NOT EXISTS claim_token uuid;
ALTER TABLE idempotency_records ADD COLUMN IF NOT EXISTS lease_expires_at timestamptz;
ALTER TABLE idempotency_records ADD COLUMN IF NOT EXISTS completed_at timestamptz;
