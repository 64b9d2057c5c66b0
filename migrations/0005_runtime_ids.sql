-- Worker ids are operator-chosen names (pod names), not UUIDs.
ALTER TABLE workers ALTER COLUMN id TYPE text;
