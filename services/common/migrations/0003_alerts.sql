-- Alert lifecycle details and history.

ALTER TABLE live_alerts
    ADD COLUMN IF NOT EXISTS rule_kind       text NOT NULL DEFAULT '',
    ADD COLUMN IF NOT EXISTS value           double precision,
    ADD COLUMN IF NOT EXISTS acknowledged_by text,
    ADD COLUMN IF NOT EXISTS comment         text NOT NULL DEFAULT '',
    ADD COLUMN IF NOT EXISTS updated_at      timestamptz NOT NULL DEFAULT now();

CREATE TABLE IF NOT EXISTS live_alert_history (
    alert_id    text NOT NULL,
    state       text NOT NULL,
    at          timestamptz NOT NULL,
    occurrences integer NOT NULL,
    severity    text NOT NULL,
    message     text NOT NULL DEFAULT '',
    value       double precision,
    by_user     text,
    comment     text NOT NULL DEFAULT '',
    PRIMARY KEY (alert_id, state, at, occurrences)
);
CREATE INDEX IF NOT EXISTS live_alert_history_alert ON live_alert_history (alert_id, at);
