-- Changes the demo makes at HO after the sites are set up.
INSERT INTO public.items (id, name, kind, price, tags, attrs) VALUES
    (1, 'Espresso', 'drink', 2.20, '{hot,coffee}', '{"size": "small"}'),
    (2, 'Croissant', 'food', 1.80, '{bakery}', NULL),
    (3, 'Orange juice', 'drink', 3.10, '{cold}', '{"fresh": true}'),
    (4, 'Paper bag', 'other', 0.10, NULL, NULL);

INSERT INTO public.prices (site_code, item_id, price) VALUES
    ('store-001', 1, 2.10), ('store-001', 2, 1.70),
    ('store-002', 1, 2.40), ('store-002', 3, 3.30);

UPDATE public.items SET price = 2.30, attrs = '{"size": "double"}' WHERE id = 1;
DELETE FROM public.items WHERE id = 4;
-- Store 002 takes over store 001's croissant price: the row moves.
UPDATE public.prices SET site_code = 'store-002' WHERE site_code = 'store-001' AND item_id = 2;
