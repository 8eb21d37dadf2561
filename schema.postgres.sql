-- tripchat's PostgreSQL schema: the twin of schema.sql, applied idempotently at start-up
-- under an advisory lock, so processes starting together do not race.
--
-- Same layout as the SQLite schema (which mirrors the Agents SDK's SQLiteSession tables):
-- identity ids give the order, jsonb holds the documents, foreign keys cascade.
-- The schema version lives in tripchat_meta (PostgreSQL has no PRAGMA user_version).

CREATE TABLE IF NOT EXISTS chatkit_threads (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    thread_id TEXT NOT NULL UNIQUE,
    user_id TEXT NOT NULL,
    thread_data JSONB NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT CURRENT_TIMESTAMP,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT CURRENT_TIMESTAMP
);

CREATE INDEX IF NOT EXISTS idx_chatkit_threads_user ON chatkit_threads (user_id, id);

CREATE TABLE IF NOT EXISTS chatkit_items (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    thread_id TEXT NOT NULL REFERENCES chatkit_threads (thread_id) ON DELETE CASCADE,
    item_id TEXT NOT NULL,
    item_type TEXT NOT NULL,
    item_data JSONB NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT CURRENT_TIMESTAMP,
    UNIQUE (thread_id, item_id)
);

CREATE INDEX IF NOT EXISTS idx_chatkit_items_thread ON chatkit_items (thread_id, id);

CREATE TABLE IF NOT EXISTS chatkit_attachments (
    attachment_id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    thread_id TEXT REFERENCES chatkit_threads (thread_id) ON DELETE CASCADE,
    attachment_data JSONB NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT CURRENT_TIMESTAMP
);

CREATE INDEX IF NOT EXISTS idx_chatkit_attachments_thread ON chatkit_attachments (thread_id);

-- Attachment bytes (issue 14): a file row per attachment (its upload state, size and
-- creation time, for the retention sweep) and its bytes in chunks written as the upload
-- streams in, so no process holds a whole file (`id` orders them for `tripchat migrate`). Both go with their attachment, which
-- goes with its thread (ON DELETE CASCADE).
CREATE TABLE IF NOT EXISTS chatkit_attachment_files (
    attachment_id TEXT PRIMARY KEY
        REFERENCES chatkit_attachments (attachment_id) ON DELETE CASCADE,
    state TEXT NOT NULL CHECK (state IN ('pending', 'uploading', 'complete')),
    size BIGINT NOT NULL DEFAULT 0,
    created BIGINT NOT NULL
);

CREATE INDEX IF NOT EXISTS idx_chatkit_attachment_files_created
    ON chatkit_attachment_files (created);

CREATE TABLE IF NOT EXISTS chatkit_attachment_chunks (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    attachment_id TEXT NOT NULL
        REFERENCES chatkit_attachment_files (attachment_id) ON DELETE CASCADE,
    seq INTEGER NOT NULL,
    data BYTEA NOT NULL,
    UNIQUE (attachment_id, seq)
);

CREATE TABLE IF NOT EXISTS chatkit_feedback (
    thread_id TEXT NOT NULL,
    item_id TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('positive', 'negative')),
    created_at TIMESTAMPTZ NOT NULL DEFAULT CURRENT_TIMESTAMP,
    PRIMARY KEY (thread_id, item_id),
    FOREIGN KEY (thread_id, item_id) REFERENCES chatkit_items (thread_id, item_id)
        ON DELETE CASCADE
);

-- The Agents SDK's session tables, in the same layout as its SQLiteSession.
CREATE TABLE IF NOT EXISTS agent_sessions (
    session_id TEXT PRIMARY KEY,
    created_at TIMESTAMPTZ NOT NULL DEFAULT CURRENT_TIMESTAMP,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT CURRENT_TIMESTAMP
);

CREATE TABLE IF NOT EXISTS agent_messages (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    session_id TEXT NOT NULL REFERENCES agent_sessions (session_id) ON DELETE CASCADE,
    message_data JSONB NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT CURRENT_TIMESTAMP
);

CREATE INDEX IF NOT EXISTS idx_agent_messages_session_id ON agent_messages (session_id, id);

CREATE TABLE IF NOT EXISTS tripchat_meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

-- Replies in flight, for every process sharing the database (tripchat/store/leases.py):
-- one per thread (thread_id UNIQUE), slots 0..limit-1 per user; expired rows are taken over.
CREATE TABLE IF NOT EXISTS chatkit_leases (
    user_id TEXT NOT NULL,
    slot INTEGER NOT NULL,
    thread_id TEXT UNIQUE,
    holder TEXT NOT NULL,
    expires_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (user_id, slot)
);

-- Deleted thread ids: a save racing the delete (the end-of-turn title) cannot insert them again.
CREATE TABLE IF NOT EXISTS chatkit_deleted_threads (
    thread_id TEXT PRIMARY KEY,
    deleted_at TIMESTAMPTZ NOT NULL DEFAULT CURRENT_TIMESTAMP
);

INSERT INTO tripchat_meta (key, value) VALUES ('schema_version', '1')
ON CONFLICT (key) DO NOTHING;
