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

-- Users: HO's master data, also enrolled or edited at the stores' devices.
CREATE TABLE public.users (
    id    integer PRIMARY KEY,
    name  text NOT NULL,
    email text,
    card  text
);

-- Door and till events logged at each store, collected at HO.
CREATE TABLE public.device_events (
    site   text NOT NULL,
    device integer NOT NULL,
    seq    integer NOT NULL,
    at     timestamptz NOT NULL DEFAULT now(),
    kind   text NOT NULL,
    PRIMARY KEY (site, device, seq)
);
