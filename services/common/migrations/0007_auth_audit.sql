-- Who may use the API, and what they changed.
--
-- auth_tokens: API tokens. The token itself is shown once when it is made; only the SHA-256 of
-- its secret part is kept. role is viewer, operator, admin or edge; an edge token may post
-- samples for its own streams only. A revoked token keeps its row (the audit trail names it).
--
-- audit_log: every change made through the API or the command line: who (the token's name or
-- the OIDC subject), with which role, when, what (action and target) and the value before and
-- after, where there is one.

CREATE TABLE IF NOT EXISTS auth_tokens (
    token_id    text PRIMARY KEY,
    name        text NOT NULL,
    role        text NOT NULL CHECK (role IN ('viewer', 'operator', 'admin', 'edge')),
    streams     text[] NOT NULL DEFAULT '{}',
    secret_hash bytea NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    created_by  text NOT NULL DEFAULT '',
    revoked_at  timestamptz,
    last_used_at timestamptz
);

CREATE TABLE IF NOT EXISTS audit_log (
    id      bigserial PRIMARY KEY,
    at      timestamptz NOT NULL DEFAULT now(),
    actor   text NOT NULL,
    role    text NOT NULL,
    action  text NOT NULL,
    target  text NOT NULL DEFAULT '',
    before  jsonb,
    after   jsonb
);
CREATE INDEX IF NOT EXISTS audit_log_at ON audit_log (at);
