-- HO's data before the sites join: their first sync is a full sync.
INSERT INTO public.items (id, name, kind, price, tags, attrs) VALUES
    (1, 'Espresso', 'drink', 2.20, '{hot,coffee}', '{"size": "small"}'),
    (2, 'Croissant', 'food', 1.80, '{bakery}', NULL),
    (3, 'Orange juice', 'drink', 3.10, '{cold}', '{"fresh": true}'),
    (4, 'Paper bag', 'other', 0.10, NULL, NULL);

INSERT INTO public.prices (site_code, item_id, price) VALUES
    ('store-001', 1, 2.10), ('store-001', 2, 1.70),
    ('store-002', 1, 2.40), ('store-002', 3, 3.30);

INSERT INTO public.users (id, name, email, card) VALUES
    (1, 'Ann Lee', NULL, ''),
    (2, 'Bob Diaz', 'bob@example.com', 'CARD-0002');
