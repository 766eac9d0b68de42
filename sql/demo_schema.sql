-- The demo schema: created at HO and at every site.
CREATE TYPE item_kind AS ENUM ('food', 'drink', 'other');

CREATE TABLE public.items (
    id         integer PRIMARY KEY,
    name       text NOT NULL,
    kind       item_kind NOT NULL DEFAULT 'other',
    price      numeric(10,2),
    tags       text[],
    attrs      jsonb,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Prices per store: each row goes to the store named in site_code.
CREATE TABLE public.prices (
    site_code  text NOT NULL,
    item_id    integer NOT NULL,
    price      numeric(10,2) NOT NULL,
    valid_from date NOT NULL DEFAULT current_date,
    PRIMARY KEY (site_code, item_id)
);
