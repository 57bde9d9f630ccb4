-- One transaction of the e-commerce workload; run repeatedly by several
-- clients. Rows are picked at random; a conflict just fails this run.
WITH c AS (INSERT INTO shop.customers (email, name) VALUES ('w' || md5(random()::text) || '@example.com', 'Walk-in') RETURNING id),
     o AS (INSERT INTO shop.orders (placed_on, customer_id) SELECT date '2026-01-01' + (random() * 300)::int, id FROM c RETURNING id, placed_on)
INSERT INTO shop.order_items SELECT o.id, o.placed_on, 1 + (random() * 99)::int, 1 FROM o;
UPDATE shop.orders SET status = 'paid', total = total + 10 WHERE id = (SELECT id FROM shop.orders ORDER BY random() LIMIT 1);
UPDATE shop.products SET price = price + 1, tags = tags || 'sale'::text WHERE id = 1 + (random() * 99)::int;
UPDATE shop.products SET description = repeat(md5(random()::text), 200) WHERE id = 1 + (random() * 99)::int AND random() < 0.2;
DELETE FROM shop.orders WHERE id = (SELECT id FROM shop.orders WHERE status = 'shipped' ORDER BY random() LIMIT 1);
INSERT INTO shop.categories (parent_id, name) VALUES (1, 'flash ' || random());
DELETE FROM shop.categories WHERE id = (SELECT max(id) FROM shop.categories) AND random() < 0.5 AND NOT EXISTS (SELECT 1 FROM shop.products WHERE category_id = (SELECT max(id) FROM shop.categories));
