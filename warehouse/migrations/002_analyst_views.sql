-- Views for analysts: the questions asked most, without remembering the joins.
-- They live in the warehouse, so they reach the read-only snapshot too.

-- Every counted ticket with its labels (deleted, auto-replies and duplicates left out).
CREATE OR REPLACE VIEW marts.tickets_labelled AS
SELECT t.ticket_key, t.source, t.created_at, t.channel, t.status, t.subject, t.body,
       t.requester_key, t.tags,
       l.is_complaint, l.complaint_score, l.topics, l.cancel_intent, l.evidence,
       l.labeller_version
FROM core.tickets t
LEFT JOIN core.ticket_labels l USING (ticket_key)
WHERE NOT t.is_deleted AND NOT t.is_auto AND t.duplicate_of IS NULL;

-- Daily complaints per topic over all channels, with the share of all tickets that day.
CREATE OR REPLACE VIEW marts.daily_complaints_by_topic AS
SELECT d.bucket::DATE AS day, d.topic, d.complaints, d.cancel_intents, d.tickets,
       round(d.complaints / nullif(total.tickets, 0), 4) AS share_of_all_tickets
FROM marts.complaints_daily d
JOIN marts.complaints_daily total
  ON total.bucket = d.bucket AND total.topic = '*' AND total.channel = '*'
WHERE d.channel = '*' AND d.topic <> '*';

-- Anomalies not yet back to normal, with the change each follows.
CREATE OR REPLACE VIEW marts.open_anomalies AS
SELECT a.alert_id, a.topic, a.channel, a.started_at, a.detected_at, a.observed, a.expected,
       a.ratio, a.severity, a.status, a.change_id, c.title AS change_title, c.kind AS change_kind,
       c.announced_at AS change_announced_at, c.effective_at AS change_effective_at,
       a.example_ticket_keys
FROM marts.anomalies a
LEFT JOIN core.product_changes c USING (change_id)
WHERE a.status <> 'resolved';
