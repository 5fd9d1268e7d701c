-- How the actor of an audited change signed in: token (an API token), oidc (a JWT of the
-- OIDC provider), cli (the command line, on the host), anonymous (auth off). A name alone
-- does not tell: an OIDC subject may be called anything.
ALTER TABLE audit_log ADD COLUMN IF NOT EXISTS via text NOT NULL DEFAULT '';
