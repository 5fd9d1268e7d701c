-- The learned model of normal cycles (services/analysis/mspc.py), per stream and reference
-- version: the rows of the last healthy cycles it learns from (the reference's own cycles are
-- kept in the reference), and how many it learnt from in all (``learnt``: with the reference's
-- cycles, the model's version).
CREATE TABLE IF NOT EXISTS live_models (
    stream_id         text NOT NULL,
    reference_version integer NOT NULL,
    cycle_ids         text[] NOT NULL DEFAULT '{}',
    rows              bytea NOT NULL,
    learnt            integer NOT NULL DEFAULT 0,
    updated_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (stream_id, reference_version)
);
-- the health trend reads a stream's last scores
CREATE INDEX IF NOT EXISTS live_deviations_stream
    ON live_deviations (stream_id, reference_version, created_at);
