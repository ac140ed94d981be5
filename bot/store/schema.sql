-- Switchboard's SQLite schema. Each "-- version N" block migrates from N-1 to N;
-- PRAGMA user_version records the version reached. Never edit a released block: add one.

-- version 1
CREATE TABLE sessions (
    id INTEGER PRIMARY KEY,
    platform TEXT NOT NULL,
    channel TEXT NOT NULL,
    thread TEXT NOT NULL,
    workflow TEXT NOT NULL,
    active_agent TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'closed')),
    item_count INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE INDEX sessions_by_thread ON sessions (platform, channel, thread, id);
CREATE UNIQUE INDEX sessions_one_open_per_thread
    ON sessions (platform, channel, thread) WHERE status = 'open';
CREATE INDEX sessions_by_update ON sessions (updated_at);
CREATE INDEX sessions_by_thread_name ON sessions (thread, id);

CREATE TABLE items (
    session_id INTEGER NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    seq INTEGER NOT NULL,
    kind TEXT NOT NULL
        CHECK (kind IN ('user', 'agent', 'tool', 'handoff', 'prompt', 'notice', 'moderator')),
    agent TEXT,
    body TEXT NOT NULL CHECK (json_valid(body)),
    created_at REAL NOT NULL,
    PRIMARY KEY (session_id, seq)
) WITHOUT ROWID;

CREATE TABLE inbound_events (
    platform TEXT NOT NULL,
    event_id TEXT NOT NULL,
    session_id INTEGER REFERENCES sessions (id) ON DELETE CASCADE,
    received_at REAL NOT NULL,
    PRIMARY KEY (platform, event_id)
) WITHOUT ROWID;
CREATE INDEX inbound_events_by_time ON inbound_events (received_at);

-- version 2
-- Model usage: one row per model call (keyed by the seq of the reply it produced), and totals
-- per session so listings need no aggregate query.
ALTER TABLE sessions ADD COLUMN model_calls INTEGER NOT NULL DEFAULT 0;
ALTER TABLE sessions ADD COLUMN prompt_tokens INTEGER NOT NULL DEFAULT 0;
ALTER TABLE sessions ADD COLUMN completion_tokens INTEGER NOT NULL DEFAULT 0;

CREATE TABLE model_calls (
    session_id INTEGER NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    seq INTEGER NOT NULL,
    agent TEXT NOT NULL,
    model TEXT,
    prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (session_id, seq)
) WITHOUT ROWID;

-- version 3
-- Moderation: a case opens when a conversation is handed to a review agent; every moderator
-- action on it is kept. A session a moderator has taken over names them until handed back.
ALTER TABLE sessions ADD COLUMN taken_over_by TEXT;

CREATE TABLE cases (
    id INTEGER PRIMARY KEY,
    session_id INTEGER NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    agent TEXT NOT NULL,
    reason TEXT,
    status TEXT NOT NULL DEFAULT 'open'
        CHECK (status IN ('open', 'approved', 'rejected', 'closed')),
    moderator TEXT,
    card TEXT,
    opened_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE INDEX cases_by_session ON cases (session_id, id);
CREATE INDEX cases_by_status ON cases (status, id);

CREATE TABLE case_actions (
    case_id INTEGER NOT NULL REFERENCES cases (id) ON DELETE CASCADE,
    seq INTEGER NOT NULL,
    action TEXT NOT NULL,
    actor TEXT NOT NULL,
    at REAL NOT NULL,
    PRIMARY KEY (case_id, seq)
) WITHOUT ROWID;

-- version 4
-- The outbox: every post the bot owes a thread, stored with the step that produced it and
-- marked sent once delivered; unsent posts are retried in order, with backoff.
CREATE TABLE outbox (
    id INTEGER PRIMARY KEY,
    session_id INTEGER NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    body TEXT NOT NULL CHECK (json_valid(body)),
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL,
    error TEXT,
    created_at REAL NOT NULL,
    sent_at REAL
);
CREATE INDEX outbox_unsent ON outbox (session_id, id) WHERE sent_at IS NULL;
CREATE INDEX outbox_due ON outbox (next_attempt_at) WHERE sent_at IS NULL;

-- version 5
-- The inbox: every inbound message is stored, owed a turn, before the platform is told it
-- arrived. A thread's turns take its owed messages in the platform's order (`stamp`); `seq` is
-- the transcript position of the message once its turn started, `done_at` when it finished.
CREATE TABLE inbox (
    id INTEGER PRIMARY KEY,
    platform TEXT NOT NULL,
    channel TEXT NOT NULL,
    thread TEXT NOT NULL,
    event_id TEXT,
    author TEXT NOT NULL,
    text TEXT NOT NULL,
    mentioned INTEGER NOT NULL,
    stamp TEXT NOT NULL,
    cut INTEGER NOT NULL DEFAULT 0,
    received_at REAL NOT NULL,
    session_id INTEGER REFERENCES sessions (id) ON DELETE SET NULL,
    seq INTEGER,
    done_at REAL
);
CREATE INDEX inbox_owed ON inbox (platform, channel, thread, stamp, id) WHERE done_at IS NULL;
CREATE INDEX inbox_by_time ON inbox (received_at);

-- The outbox keyed by thread (a post may precede any session, or go to moderators), with the
-- turn it belongs to, its kind, the process that queued it, and the platform's reference once
-- sent (a crash between "accepted" and "marked sent" is looked up, not posted twice).
CREATE TABLE outbox_v5 (
    id INTEGER PRIMARY KEY,
    platform TEXT NOT NULL,
    channel TEXT NOT NULL,
    thread TEXT NOT NULL,
    session_id INTEGER REFERENCES sessions (id) ON DELETE CASCADE,
    turn INTEGER,
    kind TEXT NOT NULL DEFAULT 'reply',
    body TEXT NOT NULL CHECK (json_valid(body)),
    origin TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL,
    error TEXT,
    ref TEXT,
    created_at REAL NOT NULL,
    sent_at REAL
);
INSERT INTO outbox_v5 (id, platform, channel, thread, session_id, kind, body, attempts,
    next_attempt_at, error, created_at, sent_at)
    SELECT o.id, s.platform, s.channel, s.thread, o.session_id,
        coalesce(json_extract(o.body, '$.kind'), 'reply'), o.body, o.attempts, o.next_attempt_at,
        o.error, o.created_at, o.sent_at
    FROM outbox o JOIN sessions s ON s.id = o.session_id;
DROP TABLE outbox;
ALTER TABLE outbox_v5 RENAME TO outbox;
CREATE INDEX outbox_unsent ON outbox (platform, channel, thread, id) WHERE sent_at IS NULL;
CREATE INDEX outbox_due ON outbox (platform, next_attempt_at) WHERE sent_at IS NULL;
CREATE INDEX outbox_turn ON outbox (turn, kind) WHERE turn IS NOT NULL;

-- version 6
-- A post the platform refuses for good is sent once more as plain text, then set aside as a
-- dead letter: it no longer holds up the thread's later posts. Sent posts are pruned by age.
ALTER TABLE outbox ADD COLUMN degraded INTEGER NOT NULL DEFAULT 0;
ALTER TABLE outbox ADD COLUMN dead_at REAL;
DROP INDEX outbox_unsent;
DROP INDEX outbox_due;
CREATE INDEX outbox_unsent ON outbox (platform, channel, thread, id)
    WHERE sent_at IS NULL AND dead_at IS NULL;
CREATE INDEX outbox_due ON outbox (platform, next_attempt_at)
    WHERE sent_at IS NULL AND dead_at IS NULL;
CREATE INDEX outbox_sent ON outbox (sent_at) WHERE sent_at IS NOT NULL;
CREATE INDEX outbox_dead ON outbox (dead_at) WHERE dead_at IS NOT NULL;

-- version 7
-- Approval cases: a tool call that waits for a moderator (`call`, JSON), and what it returned
-- once approved and run (`result`, JSON). An inbox row with a `case_id` is the thread's job of
-- finishing a decided call: run it (if approved) and let its agent go on.
ALTER TABLE cases ADD COLUMN kind TEXT NOT NULL DEFAULT 'review'
    CHECK (kind IN ('review', 'approval', 'pause'));
ALTER TABLE cases ADD COLUMN call TEXT CHECK (call IS NULL OR json_valid(call));
ALTER TABLE cases ADD COLUMN result TEXT CHECK (result IS NULL OR json_valid(result));
ALTER TABLE inbox ADD COLUMN case_id INTEGER REFERENCES cases (id) ON DELETE SET NULL;
