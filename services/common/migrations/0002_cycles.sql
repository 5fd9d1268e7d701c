-- Cycle bookkeeping and versioned references.

ALTER TABLE live_cycles
    ADD COLUMN IF NOT EXISTS cycle_no       integer NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS frames         integer NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS gaps           integer NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS late_frames    integer NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS replayed_frames integer NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS completeness   double precision NOT NULL DEFAULT 1,
    ADD COLUMN IF NOT EXISTS recording      text,
    ADD COLUMN IF NOT EXISTS start_reason   text NOT NULL DEFAULT '',
    ADD COLUMN IF NOT EXISTS updated_at     timestamptz NOT NULL DEFAULT now();

CREATE TABLE IF NOT EXISTS live_references (
    stream_id     text NOT NULL,
    version       integer NOT NULL,
    active        boolean NOT NULL DEFAULT false,
    source_cycles text[] NOT NULL DEFAULT '{}',
    n_points      integer NOT NULL,
    duration_s    double precision NOT NULL,
    description   text NOT NULL DEFAULT '',
    data          bytea NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (stream_id, version)
);
CREATE UNIQUE INDEX IF NOT EXISTS live_references_one_active
    ON live_references (stream_id) WHERE active;
