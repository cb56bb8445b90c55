-- Terms new or rising sharply among recent complaints, grouped into topics
-- nobody configured ("qwikster" the day after the DVD split). Rebuilt by each
-- monitor run as of its time; the labeller's topics stay the counted ones.
CREATE TABLE marts.emergent_topics (
    topic            VARCHAR NOT NULL,      -- the cluster's strongest term
    terms            VARCHAR[] NOT NULL,    -- strongest first
    tickets          BIGINT NOT NULL,       -- recent complaints using any of the terms
    baseline_tickets BIGINT NOT NULL,       -- baseline complaints using the lead term
    log_odds         DOUBLE NOT NULL,
    z                DOUBLE NOT NULL,
    first_seen       TIMESTAMPTZ,
    ticket_keys      VARCHAR[] NOT NULL,
    as_of            TIMESTAMPTZ NOT NULL,  -- the monitor run that found it
    PRIMARY KEY (topic)
);
