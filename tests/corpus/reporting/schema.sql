-- A reporting schema: keyless staging tables (init sets REPLICA IDENTITY
-- FULL on them when told to), an unlogged scratch table (left out), table
-- inheritance, wide rows with numeric, interval and array columns.
-- {{scale}} is replaced by the test.
CREATE SCHEMA report;
CREATE TABLE report.staging_events (source text, payload jsonb, loaded_at timestamptz DEFAULT now());
CREATE TABLE report.staging_rows (batch int, line int, raw text);
CREATE UNLOGGED TABLE report.scratch (k text PRIMARY KEY, v text);
CREATE TABLE report.measurements (id bigint PRIMARY KEY, sensor int NOT NULL, value double precision, taken timestamptz NOT NULL);
CREATE TABLE report.measurements_2025 () INHERITS (report.measurements);
ALTER TABLE report.measurements_2025 ADD PRIMARY KEY (id);
CREATE TABLE report.daily (day date PRIMARY KEY, total numeric(20, 4), spread interval, buckets int[]);

INSERT INTO report.staging_events (source, payload) SELECT 'src' || g % 3, jsonb_build_object('n', g) FROM generate_series(1, 200 * {{scale}}) g;
INSERT INTO report.staging_events (source, payload) SELECT 'dup', '{"n": 0}' FROM generate_series(1, 5);
INSERT INTO report.staging_rows SELECT g / 100, g % 100, 'raw line ' || g FROM generate_series(1, 300 * {{scale}}) g;
INSERT INTO report.scratch SELECT g::text, 'x' FROM generate_series(1, 10) g;
INSERT INTO report.measurements SELECT g, g % 10, g * 0.5, timestamptz '2026-01-01' + g * interval '1 minute' FROM generate_series(1, 200 * {{scale}}) g;
INSERT INTO report.measurements_2025 SELECT 1000000 + g, g % 10, g * 0.25, timestamptz '2025-01-01' + g * interval '1 minute' FROM generate_series(1, 200 * {{scale}}) g;
INSERT INTO report.daily SELECT date '2025-01-01' + g, g * 1.2345, g * interval '1 second', ARRAY[g, g * 2, NULL] FROM generate_series(1, 100 * {{scale}}) g;
