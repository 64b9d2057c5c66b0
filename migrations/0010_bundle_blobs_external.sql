-- Annex: bundle bytes are zstd archives (incompressible), read back in slices
-- with substring(): stored out of line and uncompressed, each slice reads only
-- the pages it needs.
ALTER TABLE bundle_blobs ALTER COLUMN bytes SET STORAGE EXTERNAL;
