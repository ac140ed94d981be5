-- Switchboard's PostgreSQL schema: the same concepts as schema.sql, in PostgreSQL's dialect.
-- Each "-- version N" block migrates from N-1 to N; schema_migrations records the versions.

-- version 1
CREATE TABLE sessions (
    id BIGSERIAL PRIMARY KEY,
    platform TEXT NOT NULL,
    channel TEXT NOT NULL,
    thread TEXT NOT NULL,
    workflow TEXT NOT NULL,
    active_agent TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'closed')),
    item_count INTEGER NOT NULL DEFAULT 0,
    created_at DOUBLE PRECISION NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL,
    model_calls INTEGER NOT NULL DEFAULT 0,
    prompt_tokens BIGINT NOT NULL DEFAULT 0,
    completion_tokens BIGINT NOT NULL DEFAULT 0,
    taken_over_by TEXT
);
CREATE INDEX sessions_by_thread ON sessions (platform, channel, thread, id);
CREATE UNIQUE INDEX sessions_one_open_per_thread
    ON sessions (platform, channel, thread) WHERE status = 'open';
CREATE INDEX sessions_by_update ON sessions (updated_at);
CREATE INDEX sessions_by_thread_name ON sessions (thread, id);

CREATE TABLE items (
    session_id BIGINT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    seq INTEGER NOT NULL,
    kind TEXT NOT NULL
        CHECK (kind IN ('user', 'agent', 'tool', 'handoff', 'prompt', 'notice', 'moderator')),
    agent TEXT,
    body JSONB NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (session_id, seq)
);

CREATE TABLE inbound_events (
    platform TEXT NOT NULL,
    event_id TEXT NOT NULL,
    session_id BIGINT REFERENCES sessions (id) ON DELETE CASCADE,
    received_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (platform, event_id)
);
CREATE INDEX inbound_events_by_time ON inbound_events (received_at);

CREATE TABLE model_calls (
    session_id BIGINT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    seq INTEGER NOT NULL,
    agent TEXT NOT NULL,
    model TEXT,
    prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (session_id, seq)
);

CREATE TABLE cases (
    id BIGSERIAL PRIMARY KEY,
    session_id BIGINT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    agent TEXT NOT NULL,
    reason TEXT,
    status TEXT NOT NULL DEFAULT 'open'
        CHECK (status IN ('open', 'approved', 'rejected', 'closed')),
    moderator TEXT,
    card TEXT,
    opened_at DOUBLE PRECISION NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL
);
CREATE INDEX cases_by_session ON cases (session_id, id);
CREATE INDEX cases_by_status ON cases (status, id);

CREATE TABLE case_actions (
    case_id BIGINT NOT NULL REFERENCES cases (id) ON DELETE CASCADE,
    seq INTEGER NOT NULL,
    action TEXT NOT NULL,
    actor TEXT NOT NULL,
    at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (case_id, seq)
);

CREATE TABLE outbox (
    id BIGSERIAL PRIMARY KEY,
    session_id BIGINT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    body JSONB NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at DOUBLE PRECISION NOT NULL,
    error TEXT,
    created_at DOUBLE PRECISION NOT NULL,
    sent_at DOUBLE PRECISION
);
CREATE INDEX outbox_unsent ON outbox (session_id, id) WHERE sent_at IS NULL;
CREATE INDEX outbox_due ON outbox (next_attempt_at) WHERE sent_at IS NULL;

-- A thread's turn runs in one process at a time: the process holding the lease.
CREATE TABLE thread_leases (
    thread_key TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    expires_at DOUBLE PRECISION NOT NULL
);

-- version 2
-- The inbox (see schema.sql, version 5), the outbox keyed by thread, item and post bodies as
-- plain JSON text (jsonb refuses the escaped NUL that a model can write), and lease tokens that
-- fence a process which lost its lease out of every write.
CREATE TABLE inbox (
    id BIGSERIAL PRIMARY KEY,
    platform TEXT NOT NULL,
    channel TEXT NOT NULL,
    thread TEXT NOT NULL,
    event_id TEXT,
    author TEXT NOT NULL,
    text TEXT NOT NULL,
    mentioned INTEGER NOT NULL,
    stamp TEXT NOT NULL,
    cut INTEGER NOT NULL DEFAULT 0,
    received_at DOUBLE PRECISION NOT NULL,
    session_id BIGINT REFERENCES sessions (id) ON DELETE SET NULL,
    seq INTEGER,
    done_at DOUBLE PRECISION
);
CREATE INDEX inbox_owed ON inbox (platform, channel, thread, stamp, id) WHERE done_at IS NULL;
CREATE INDEX inbox_by_time ON inbox (received_at);

ALTER TABLE items ALTER COLUMN body TYPE TEXT;
ALTER TABLE outbox ALTER COLUMN body TYPE TEXT;
ALTER TABLE outbox ALTER COLUMN session_id DROP NOT NULL;
ALTER TABLE outbox ADD COLUMN platform TEXT;
ALTER TABLE outbox ADD COLUMN channel TEXT;
ALTER TABLE outbox ADD COLUMN thread TEXT;
ALTER TABLE outbox ADD COLUMN turn BIGINT;
ALTER TABLE outbox ADD COLUMN kind TEXT NOT NULL DEFAULT 'reply';
ALTER TABLE outbox ADD COLUMN origin TEXT;
ALTER TABLE outbox ADD COLUMN ref TEXT;
UPDATE outbox o SET platform = s.platform, channel = s.channel, thread = s.thread,
    kind = coalesce(o.body::jsonb ->> 'kind', 'reply')
    FROM sessions s WHERE s.id = o.session_id;
ALTER TABLE outbox ALTER COLUMN platform SET NOT NULL;
ALTER TABLE outbox ALTER COLUMN channel SET NOT NULL;
ALTER TABLE outbox ALTER COLUMN thread SET NOT NULL;
DROP INDEX outbox_unsent;
DROP INDEX outbox_due;
CREATE INDEX outbox_unsent ON outbox (platform, channel, thread, id) WHERE sent_at IS NULL;
CREATE INDEX outbox_due ON outbox (platform, next_attempt_at) WHERE sent_at IS NULL;
CREATE INDEX outbox_turn ON outbox (turn, kind) WHERE turn IS NOT NULL;

ALTER TABLE thread_leases ADD COLUMN token BIGINT NOT NULL DEFAULT 0;

-- version 3
-- Plain-text retries and dead letters (see schema.sql, version 6).
ALTER TABLE outbox ADD COLUMN degraded INTEGER NOT NULL DEFAULT 0;
ALTER TABLE outbox ADD COLUMN dead_at DOUBLE PRECISION;
DROP INDEX outbox_unsent;
DROP INDEX outbox_due;
CREATE INDEX outbox_unsent ON outbox (platform, channel, thread, id)
    WHERE sent_at IS NULL AND dead_at IS NULL;
CREATE INDEX outbox_due ON outbox (platform, next_attempt_at)
    WHERE sent_at IS NULL AND dead_at IS NULL;
CREATE INDEX outbox_sent ON outbox (sent_at) WHERE sent_at IS NOT NULL;
CREATE INDEX outbox_dead ON outbox (dead_at) WHERE dead_at IS NOT NULL;

-- version 4
-- Approval cases and the jobs that finish decided calls (see schema.sql, version 7).
ALTER TABLE cases ADD COLUMN kind TEXT NOT NULL DEFAULT 'review'
    CHECK (kind IN ('review', 'approval', 'pause'));
ALTER TABLE cases ADD COLUMN call TEXT;
ALTER TABLE cases ADD COLUMN result TEXT;
ALTER TABLE inbox ADD COLUMN case_id BIGINT REFERENCES cases (id) ON DELETE SET NULL;
