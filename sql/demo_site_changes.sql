-- What happens at store-001 while it works: a user enrolled at a device, an
-- existing user's empty fields filled in, and device events.
INSERT INTO public.users (id, name, email, card) VALUES (3, 'Cy Park', 'cy@example.com', 'CARD-0003');
UPDATE public.users SET name = 'Annie Lee', email = 'ann@example.com', card = 'CARD-0001' WHERE id = 1;
INSERT INTO public.device_events (site, device, seq, kind)
SELECT 'store-001', 1, g, CASE WHEN g % 2 = 0 THEN 'door open' ELSE 'door close' END FROM generate_series(1, 20) g;
