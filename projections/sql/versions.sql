-- Versions of each projection (zero-downtime rebuilds). Version 1 uses the plain table
-- names; version n > 1 the same tables suffixed `_v<n>`. Exactly one version of a
-- projection is `live` (reads use it); at most one is `rebuilding` (filled from offset 0
-- beside the live one, switched to when caught up); `retired` ones are dropped after a
-- grace period.
CREATE TABLE IF NOT EXISTS projection_versions (
    projection   TEXT        NOT NULL,
    version      INTEGER     NOT NULL,
    status       TEXT        NOT NULL,
    requested_at TIMESTAMPTZ NOT NULL DEFAULT CURRENT_TIMESTAMP,
    live_at      TIMESTAMPTZ,
    retired_at   TIMESTAMPTZ,
    dropped_at   TIMESTAMPTZ,
    -- The projection's revision (`ProjectionInfo::revision`) the version was built for;
    -- added to older tables by `versions::register`.
    revision     INTEGER     NOT NULL DEFAULT 1,
    PRIMARY KEY (projection, version)
);
CREATE UNIQUE INDEX IF NOT EXISTS projection_versions_one_live
    ON projection_versions (projection) WHERE status = 'live';
CREATE UNIQUE INDEX IF NOT EXISTS projection_versions_one_rebuild
    ON projection_versions (projection) WHERE status = 'rebuilding';
