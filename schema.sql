-- tripchat's SQLite schema, applied idempotently at every start-up.
--
-- ChatKit threads and thread items mirror the Agents SDK's SQLiteSession layout
-- (agent_sessions / agent_messages): a sessions-like table keyed by a text id with
-- created_at / updated_at, and a messages-like table with an autoincrement id, the
-- owning id, a JSON text column and created_at, indexed on (owner, id). The
-- autoincrement id is the only order: timestamps tie, sequences do not.
--
-- The SDK's own agent_sessions / agent_messages tables live in the same file, so the
-- CLI's session memory and the ChatKit threads share one database.
-- Connection settings (WAL, foreign keys, busy timeout) are set by the store on open.

CREATE TABLE IF NOT EXISTS chatkit_threads (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    thread_id TEXT NOT NULL UNIQUE,
    user_id TEXT NOT NULL,
    thread_data TEXT NOT NULL,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    updated_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP
);

CREATE INDEX IF NOT EXISTS idx_chatkit_threads_user ON chatkit_threads (user_id, id);

CREATE TABLE IF NOT EXISTS chatkit_items (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    thread_id TEXT NOT NULL REFERENCES chatkit_threads (thread_id) ON DELETE CASCADE,
    item_id TEXT NOT NULL,
    item_type TEXT NOT NULL,
    item_data TEXT NOT NULL,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    UNIQUE (thread_id, item_id)
);

CREATE INDEX IF NOT EXISTS idx_chatkit_items_thread ON chatkit_items (thread_id, id);

CREATE TABLE IF NOT EXISTS chatkit_attachments (
    attachment_id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    thread_id TEXT REFERENCES chatkit_threads (thread_id) ON DELETE CASCADE,
    attachment_data TEXT NOT NULL,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP
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
    size INTEGER NOT NULL DEFAULT 0,
    created INTEGER NOT NULL
);

CREATE INDEX IF NOT EXISTS idx_chatkit_attachment_files_created
    ON chatkit_attachment_files (created);

CREATE TABLE IF NOT EXISTS chatkit_attachment_chunks (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    attachment_id TEXT NOT NULL
        REFERENCES chatkit_attachment_files (attachment_id) ON DELETE CASCADE,
    seq INTEGER NOT NULL,
    data BLOB NOT NULL,
    UNIQUE (attachment_id, seq)
);

CREATE TABLE IF NOT EXISTS chatkit_feedback (
    thread_id TEXT NOT NULL,
    item_id TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('positive', 'negative')),
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    PRIMARY KEY (thread_id, item_id),
    FOREIGN KEY (thread_id, item_id) REFERENCES chatkit_items (thread_id, item_id)
        ON DELETE CASCADE
);

-- The Agents SDK's SQLiteSession tables, exactly as the SDK creates them.
CREATE TABLE IF NOT EXISTS agent_sessions (
    session_id TEXT PRIMARY KEY,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    updated_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP
);

CREATE TABLE IF NOT EXISTS agent_messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    session_id TEXT NOT NULL,
    message_data TEXT NOT NULL,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    FOREIGN KEY (session_id) REFERENCES agent_sessions (session_id) ON DELETE CASCADE
);

CREATE INDEX IF NOT EXISTS idx_agent_messages_session_id ON agent_messages (session_id, id);

-- Deployment-wide values (the URL signing key when CHATKIT_SECRET_KEY is unset), so
-- every process sharing the database agrees on them.
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
    expires_at REAL NOT NULL,
    PRIMARY KEY (user_id, slot)
);

-- Deleted thread ids: a save racing the delete (the end-of-turn title) cannot insert them again.
CREATE TABLE IF NOT EXISTS chatkit_deleted_threads (
    thread_id TEXT PRIMARY KEY,
    deleted_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP
);

PRAGMA user_version = 1;
