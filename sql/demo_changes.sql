-- Changes the demo makes at HO once the sites are in sync: they travel as
-- deltas, and the new column with them (each site adds it, its rows 'each').
ALTER TABLE public.items ADD COLUMN unit text NOT NULL DEFAULT 'each';
INSERT INTO public.items (id, name, kind, price, tags, unit) VALUES (5, 'Muffin', 'food', 2.50, '{bakery,sweet}', 'box of 4');
UPDATE public.items SET price = 2.30, attrs = '{"size": "double"}' WHERE id = 1;
DELETE FROM public.items WHERE id = 4;
-- Store 002 takes over store 001's croissant price: the row moves.
UPDATE public.prices SET site_code = 'store-002' WHERE site_code = 'store-001' AND item_id = 2;
