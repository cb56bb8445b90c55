-- Helpdesk custom fields as data, not columns: a field an admin adds on a
-- Tuesday is new rows that day, never a schema change or a failed load.

-- The current value of each custom field set on a ticket (unset fields have no
-- row). The whole set of a ticket is replaced by a newer version of the
-- ticket, so a field removed from a ticket is removed here too.
CREATE TABLE core.ticket_custom_fields (
    source          VARCHAR NOT NULL,
    ticket_id       VARCHAR NOT NULL,       -- the helpdesk's id (core.tickets.source_id)
    field_id        VARCHAR NOT NULL,       -- Zendesk: numeric id; Freshdesk: field name (cf_...)
    value           VARCHAR NOT NULL,       -- as text; lists and objects as JSON text
    updated_at      TIMESTAMPTZ NOT NULL,   -- updated_at of the ticket version it comes from
    PRIMARY KEY (source, ticket_id, field_id)
);

-- The field dictionary as the helpdesk lists it (system fields included),
-- replaced whole on each fetch.
CREATE TABLE core.custom_field_defs (
    source          VARCHAR NOT NULL,
    field_id        VARCHAR NOT NULL,
    title           VARCHAR,
    type            VARCHAR,
    active          BOOLEAN,
    updated_at      TIMESTAMPTZ,
    PRIMARY KEY (source, field_id)
);

-- The latest satisfaction (CSAT) state of a ticket: score offered, unoffered,
-- good or bad, with the customer's comment and reason when given.
CREATE TABLE core.ticket_satisfaction (
    source          VARCHAR NOT NULL,
    ticket_id       VARCHAR NOT NULL,
    score           VARCHAR NOT NULL,
    comment         VARCHAR,
    reason          VARCHAR,
    rating_id       VARCHAR,
    updated_at      TIMESTAMPTZ NOT NULL,   -- updated_at of the ticket version it comes from
    PRIMARY KEY (source, ticket_id)
);

-- For analysts: each value with its field's title, keyed like core.tickets.
CREATE OR REPLACE VIEW marts.ticket_custom_fields AS
SELECT f.source || ':' || f.ticket_id AS ticket_key, f.source, f.ticket_id, f.field_id,
       d.title, d.type, f.value, f.updated_at
FROM core.ticket_custom_fields f
LEFT JOIN core.custom_field_defs d USING (source, field_id);
