-- The four layers: raw payloads, core entities, marts for reading, meta state.
CREATE SCHEMA IF NOT EXISTS raw;
CREATE SCHEMA IF NOT EXISTS core;
CREATE SCHEMA IF NOT EXISTS marts;
CREATE SCHEMA IF NOT EXISTS meta;

-- meta.schema_version is created by the migrator itself before this file runs.

CREATE TABLE meta.sync_state (
    source          VARCHAR NOT NULL,
    stream          VARCHAR NOT NULL,
    cursor          JSON NOT NULL,
    updated_at      TIMESTAMPTZ NOT NULL,
    records_total   BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (source, stream)
);

CREATE TABLE meta.quarantine (
    source          VARCHAR NOT NULL,
    record_id       VARCHAR NOT NULL,
    stream          VARCHAR,
    reason          VARCHAR NOT NULL,
    payload         VARCHAR,
    quarantined_at  TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (source, record_id)
);

-- Intent is recorded before sending (status 'pending', stable message_id),
-- then marked 'sent' or 'failed': a retried run never sends twice.
CREATE TABLE meta.alert_deliveries (
    alert_id        VARCHAR NOT NULL,
    notice          VARCHAR NOT NULL,   -- 'new', 'escalated:<severity>', 'resolved'
    channel         VARCHAR NOT NULL,   -- 'outbox', 'smtp', 'webhook'
    recipient       VARCHAR NOT NULL,
    status          VARCHAR NOT NULL,   -- 'pending', 'sent', 'failed'
    message_id      VARCHAR NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL,
    sent_at         TIMESTAMPTZ,
    detail          VARCHAR,
    PRIMARY KEY (alert_id, notice, channel, recipient)
);

CREATE TABLE meta.runs (
    run_id          VARCHAR PRIMARY KEY,
    flow            VARCHAR NOT NULL,
    started_at      TIMESTAMPTZ NOT NULL,
    finished_at     TIMESTAMPTZ,
    status          VARCHAR NOT NULL,   -- 'running', 'completed', 'failed'
    stats           JSON
);

CREATE TABLE core.tickets (
    ticket_key      VARCHAR PRIMARY KEY,
    source          VARCHAR NOT NULL,
    source_id       VARCHAR NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL,
    updated_at      TIMESTAMPTZ NOT NULL,
    subject         VARCHAR,
    body            VARCHAR,
    channel         VARCHAR NOT NULL,
    status          VARCHAR,
    priority        VARCHAR,
    requester_key   VARCHAR,
    organization    VARCHAR,
    tags            VARCHAR[],
    is_deleted      BOOLEAN NOT NULL DEFAULT false,
    ingested_at     TIMESTAMPTZ NOT NULL,
    is_auto         BOOLEAN NOT NULL DEFAULT false,  -- only auto-replies/bounces: never a complaint
    duplicate_of    VARCHAR                          -- same complaint already counted under this key
);

CREATE TABLE core.messages (
    message_key     VARCHAR PRIMARY KEY,
    ticket_key      VARCHAR NOT NULL,
    source          VARCHAR NOT NULL,
    message_id      VARCHAR,
    in_reply_to     VARCHAR,
    author_key      VARCHAR,
    created_at      TIMESTAMPTZ NOT NULL,
    subject         VARCHAR,
    body            VARCHAR,
    is_customer     BOOLEAN,
    is_auto         BOOLEAN NOT NULL DEFAULT false,
    ingested_at     TIMESTAMPTZ NOT NULL
);

CREATE TABLE core.ticket_labels (
    ticket_key       VARCHAR PRIMARY KEY,
    is_complaint     BOOLEAN NOT NULL,
    complaint_score  DOUBLE NOT NULL,
    topics           VARCHAR[] NOT NULL,
    topic_scores     DOUBLE[] NOT NULL,
    cancel_intent    BOOLEAN NOT NULL,
    language         VARCHAR,
    evidence         VARCHAR[],
    labeller_version VARCHAR NOT NULL,
    labelled_at      TIMESTAMPTZ NOT NULL
);

CREATE TABLE core.product_changes (
    change_id       VARCHAR PRIMARY KEY,
    title           VARCHAR NOT NULL,
    kind            VARCHAR,
    description     VARCHAR,
    announced_at    TIMESTAMPTZ,
    effective_at    TIMESTAMPTZ,
    areas           VARCHAR[],
    keywords        VARCHAR[],
    reverts         VARCHAR
);

-- Counts per bucket; topic '*' and channel '*' are the totals over that
-- dimension, counted per ticket (a ticket with two topics counts once in '*').
CREATE TABLE marts.complaints_hourly (
    bucket          TIMESTAMPTZ NOT NULL,
    topic           VARCHAR NOT NULL,
    channel         VARCHAR NOT NULL,
    tickets         BIGINT NOT NULL,
    complaints      BIGINT NOT NULL,
    cancel_intents  BIGINT NOT NULL,
    PRIMARY KEY (bucket, topic, channel)
);

CREATE TABLE marts.complaints_daily (
    bucket          TIMESTAMPTZ NOT NULL,
    topic           VARCHAR NOT NULL,
    channel         VARCHAR NOT NULL,
    tickets         BIGINT NOT NULL,
    complaints      BIGINT NOT NULL,
    cancel_intents  BIGINT NOT NULL,
    PRIMARY KEY (bucket, topic, channel)
);

CREATE TABLE marts.anomalies (
    alert_id            VARCHAR PRIMARY KEY,
    series              VARCHAR NOT NULL,
    grain               VARCHAR NOT NULL,   -- 'day' or 'hour'
    topic               VARCHAR NOT NULL,
    channel             VARCHAR NOT NULL,
    started_at          TIMESTAMPTZ NOT NULL,
    detected_at         TIMESTAMPTZ NOT NULL,
    peak_at             TIMESTAMPTZ NOT NULL,
    last_anomalous_at   TIMESTAMPTZ NOT NULL,
    resolved_at         TIMESTAMPTZ,
    observed            DOUBLE NOT NULL,    -- complaints over the episode
    expected            DOUBLE NOT NULL,    -- counterfactual baseline over the episode
    excess              DOUBLE NOT NULL,    -- observed - expected
    lower               DOUBLE,             -- 90% interval of the excess
    upper               DOUBLE,
    ratio               DOUBLE NOT NULL,
    p_value             DOUBLE NOT NULL,
    score               DOUBLE NOT NULL,
    severity            INTEGER NOT NULL,   -- 1 notice .. 4 critical (the episode's peak so far)
    initial_severity    INTEGER NOT NULL,   -- severity when first detected
    status              VARCHAR NOT NULL,   -- new, ongoing, escalated, resolved
    change_id           VARCHAR,
    change_title        VARCHAR,
    attribution_score   DOUBLE,
    runner_up_change_id VARCHAR,
    runner_up_score     DOUBLE,
    reverted_by         VARCHAR,            -- change that reverts the attributed one
    recovery_hours      DOUBLE,             -- from the revert taking effect to resolved_at
    rising_terms        VARCHAR[],
    example_ticket_keys VARCHAR[],
    updated_at          TIMESTAMPTZ NOT NULL
);
