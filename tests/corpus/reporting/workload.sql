-- One transaction of the reporting workload: loads into keyless staging
-- tables (duplicates included), updates and deletes of one duplicate,
-- inherited rows, rollups.
INSERT INTO report.staging_events (source, payload) VALUES ('dup', '{"n": 0}'), ('live', jsonb_build_object('r', random()));
UPDATE report.staging_events SET payload = '{"n": 1}' WHERE ctid = (SELECT ctid FROM report.staging_events WHERE source = 'dup' LIMIT 1);
DELETE FROM report.staging_rows WHERE ctid = (SELECT ctid FROM report.staging_rows ORDER BY random() LIMIT 1);
INSERT INTO report.measurements_2025 VALUES (2000000 + (random() * 1000000)::bigint, 1, random(), now()) ON CONFLICT DO NOTHING;
UPDATE report.measurements SET value = value + 1 WHERE id = 1 + (random() * 199)::int;
INSERT INTO report.daily VALUES (date '2030-01-01' + (random() * 1000)::int, random() * 1000, interval '1 hour', ARRAY[1, NULL])
    ON CONFLICT (day) DO UPDATE SET total = report.daily.total + 1, buckets = report.daily.buckets || 7;
UPDATE report.scratch SET v = 'y' WHERE k = '1';
