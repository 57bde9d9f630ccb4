-- A multi-tenant SaaS schema: composite keys led by the tenant, row-level
-- security policies, an exclusion constraint, deferrable unique constraints,
-- unique constraints on columns other than the key, quoted and unicode
-- names, jsonb. {{scale}} is replaced by the test.
CREATE TABLE tenants (
    id int PRIMARY KEY,
    slug text NOT NULL UNIQUE,
    settings jsonb NOT NULL DEFAULT '{}'
);
CREATE TABLE users (
    tenant_id int NOT NULL REFERENCES tenants ON DELETE CASCADE,
    id int NOT NULL,
    email text NOT NULL,
    "Display Name" text,
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, email)
);
CREATE TABLE projects (
    tenant_id int NOT NULL,
    id int NOT NULL,
    owner_id int NOT NULL,
    position int NOT NULL,
    title text NOT NULL,
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, owner_id) REFERENCES users (tenant_id, id),
    CONSTRAINT projects_position UNIQUE (tenant_id, position) DEFERRABLE INITIALLY DEFERRED
);
CREATE TABLE "Room Bookings" (
    tenant_id int NOT NULL REFERENCES tenants,
    id int NOT NULL,
    room int NOT NULL,
    during tsrange NOT NULL,
    PRIMARY KEY (tenant_id, id),
    EXCLUDE USING gist (during WITH &&) WHERE (room = 1)
);
CREATE TABLE "Ünïcode Notes" (
    tenant_id int NOT NULL REFERENCES tenants,
    id int NOT NULL,
    "Body" text,
    PRIMARY KEY (tenant_id, id)
);
ALTER TABLE users ENABLE ROW LEVEL SECURITY;
ALTER TABLE projects ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_users ON users USING (tenant_id = current_setting('app.tenant', true)::int);
CREATE POLICY tenant_projects ON projects USING (tenant_id = current_setting('app.tenant', true)::int);

INSERT INTO tenants SELECT g, 'tenant-' || g, jsonb_build_object('plan', 'pro', 'seats', g) FROM generate_series(1, 5 * {{scale}}) g;
INSERT INTO users SELECT t, u, 'u' || u || '@t' || t || '.example', 'Ünïcode ' || u
    FROM generate_series(1, 5 * {{scale}}) t, generate_series(1, 20) u;
INSERT INTO projects SELECT t, p, 1 + p % 20, p, 'project ' || p FROM generate_series(1, 5 * {{scale}}) t, generate_series(1, 10) p;
INSERT INTO "Room Bookings" SELECT 1, g, 1 + g % 3, tsrange(timestamp '2026-01-01' + g * interval '1 hour', timestamp '2026-01-01' + g * interval '1 hour' + interval '30 minutes')
    FROM generate_series(1, 50 * {{scale}}) g;
INSERT INTO "Ünïcode Notes" SELECT 1 + g % 5, g, 'note ' || g FROM generate_series(1, 100 * {{scale}}) g;
