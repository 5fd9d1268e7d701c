-- VerTac initial schema. Table names follow the seed API where it gives them.

CREATE TABLE IF NOT EXISTS live_streams (
    stream_id     text PRIMARY KEY,
    device_name   text NOT NULL,
    description   text NOT NULL DEFAULT '',
    sensors       jsonb NOT NULL DEFAULT '[]'::jsonb,
    registered_at timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);

-- One row per frame: the frame in its storage form (byte-shuffled, zstd), keyed by stream + seq
-- so a redelivered frame is never stored twice.
CREATE TABLE IF NOT EXISTS live_frames (
    stream_id   text   NOT NULL,
    seq         bigint NOT NULL,
    t_first_ns  bigint NOT NULL,
    t_last_ns   bigint NOT NULL,
    n_samples   integer NOT NULL,
    n_sensors   integer NOT NULL,
    payload     bytea  NOT NULL,
    received_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (stream_id, seq)
);
-- The payload is compressed already: keep PostgreSQL from trying again.
ALTER TABLE live_frames ALTER COLUMN payload SET STORAGE EXTERNAL;
CREATE INDEX IF NOT EXISTS live_frames_time ON live_frames (stream_id, t_first_ns);

CREATE TABLE IF NOT EXISTS live_stream_stats (
    stream_id      text PRIMARY KEY,
    frames         bigint NOT NULL DEFAULT 0,
    samples        bigint NOT NULL DEFAULT 0,
    last_seq       bigint,
    last_sample_ns bigint,
    updated_at     timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS live_cycles (
    cycle_id     text PRIMARY KEY,
    stream_id    text NOT NULL,
    state        text NOT NULL,
    started_at   timestamptz,
    ended_at     timestamptz,
    duration_s   double precision,
    end_reason   text NOT NULL DEFAULT '',
    samples      jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS live_cycles_stream ON live_cycles (stream_id, started_at);

CREATE TABLE IF NOT EXISTS live_deviations (
    cycle_id          text NOT NULL,
    reference_version integer NOT NULL DEFAULT 0,
    stream_id         text NOT NULL,
    health_score      double precision,
    risk_class        text,
    result            jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (cycle_id, reference_version)
);

CREATE TABLE IF NOT EXISTS live_alerts (
    alert_id        text PRIMARY KEY,
    stream_id       text NOT NULL,
    severity        text NOT NULL,
    rule            text NOT NULL,
    sensor_id       text,
    message         text NOT NULL DEFAULT '',
    state           text NOT NULL DEFAULT 'raised',
    occurrences     integer NOT NULL DEFAULT 1,
    raised_at       timestamptz NOT NULL DEFAULT now(),
    acknowledged_at timestamptz,
    cleared_at      timestamptz,
    details         jsonb NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX IF NOT EXISTS live_alerts_stream ON live_alerts (stream_id, raised_at);
