-- One transaction of the SaaS workload: swaps that only a deferred unique
-- constraint allows, renames of unique non-key columns, bookings, notes.
UPDATE projects SET position = CASE position WHEN 1 THEN 2 ELSE 1 END
    WHERE tenant_id = 1 + (random() * 4)::int AND position IN (1, 2);
UPDATE users SET email = 'x' || md5(random()::text) || '@example.com' WHERE tenant_id = 1 AND id = 1 + (random() * 19)::int;
INSERT INTO "Ünïcode Notes" VALUES (1 + (random() * 4)::int, 100000 + (random() * 1000000)::int, 'ünïcode ' || random())
    ON CONFLICT DO NOTHING;
UPDATE "Ünïcode Notes" SET "Body" = NULL WHERE id = (SELECT id FROM "Ünïcode Notes" ORDER BY random() LIMIT 1);
UPDATE tenants SET settings = settings || jsonb_build_object('seen', random()) WHERE id = 1 + (random() * 4)::int;
DELETE FROM "Room Bookings" WHERE id = (SELECT id FROM "Room Bookings" ORDER BY random() LIMIT 1);
