//! Table shapes real schemas have: partitioned tables, identity columns,
//! column names like relaysync's own, keyless tables with types that have
//! no equality. Each site must end equal to HO.

mod common;

use common::*;

/// Every row of `table` with how many times it occurs (a keyless table is a
/// bag), for `assert_same`.
fn bag(table: &str) -> String {
    format!("SELECT t::text AS r, count(*) FROM {table} t GROUP BY 1")
}

async fn assert_both_same(bed: &Bed, table: &str) {
    for site in 0..2 {
        assert_same(bed, site, &bag(table), &bag(table)).await;
    }
}

const PARTITIONED: &str = "
CREATE TABLE public.sales (id int, region text, amount int, PRIMARY KEY (id, region))
  PARTITION BY LIST (region);
CREATE TABLE public.sales_n PARTITION OF public.sales FOR VALUES IN ('n');
CREATE TABLE public.sales_s PARTITION OF public.sales FOR VALUES IN ('s');
";

/// A bed of the partitioned `public.sales` (plain at s2), three rows in
/// both partitions, set up and synced.
async fn parted_bed(name: &str) -> (Bed, tokio_postgres::Client) {
    let bed = Bed::new(name, PARTITIONED, &[("public.sales", "all")], "").await;
    // Site s2 holds the table plain.
    bed.site(1)
        .await
        .batch_execute(
            "DROP TABLE public.sales;
             CREATE TABLE public.sales (id int, region text, amount int, PRIMARY KEY (id, region));",
        )
        .await
        .unwrap();
    let ho = bed.ho().await;
    ho.batch_execute("INSERT INTO public.sales VALUES (1, 'n', 10), (2, 's', 20), (3, 'n', 30)")
        .await
        .unwrap();
    bed.setup().await;
    assert_both_same(&bed, "public.sales").await;
    (bed, ho)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitioned_tables_sync_deltas_and_rows_moving_between_partitions() {
    let (bed, ho) = parted_bed("parted").await;
    ho.batch_execute(
        "INSERT INTO public.sales VALUES (4, 's', 40), (5, 'n', 50);
         UPDATE public.sales SET amount = 11 WHERE id = 1;
         UPDATE public.sales SET region = 's' WHERE id = 3;
         DELETE FROM public.sales WHERE id = 2;",
    )
    .await
    .unwrap();
    bed.sync_all().await;
    assert_both_same(&bed, "public.sales").await;
    assert_eq!(
        count(&bed.site(1).await, "SELECT count(*) FROM public.sales").await,
        4
    );
}

/// PostgreSQL publishes no change when a partition of a table published
/// via its root is truncated, detached or dropped: HO sees it and has
/// every site reload the table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_truncated_or_dropped_at_ho_is_reloaded_at_the_sites() {
    let (bed, ho) = parted_bed("parted_trunc").await;
    ho.batch_execute("TRUNCATE public.sales_n; INSERT INTO public.sales VALUES (4, 's', 40)")
        .await
        .unwrap();
    bed.sync_all().await;
    bed.sync_all().await;
    assert_both_same(&bed, "public.sales").await;
    ho.batch_execute("DROP TABLE public.sales_s").await.unwrap();
    bed.sync_all().await;
    bed.sync_all().await;
    assert_both_same(&bed, "public.sales").await;
    assert_eq!(
        count(&bed.site(1).await, "SELECT count(*) FROM public.sales").await,
        0
    );
    let relay = bed.relay().await;
    assert_eq!(
        count(&relay, "SELECT count(*) FROM relay.sync_requests WHERE reason = 'truncated' AND served_at IS NOT NULL").await,
        4,
        "two reloads, each for both sites"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_columns_take_ho_values_and_site_keys_do_not_collide() {
    let bed = Bed::new(
        "identity",
        "CREATE TABLE public.cards (id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY, holder text);",
        &[("public.cards", "all")],
        "",
    )
    .await;
    let ho = bed.ho().await;
    ho.batch_execute(
        "INSERT INTO public.cards (holder) SELECT 'h' || g FROM generate_series(1, 5) g",
    )
    .await
    .unwrap();
    bed.setup().await;
    assert_both_same(&bed, "public.cards").await;
    // New rows and updates in one packet: the staged upsert.
    ho.batch_execute(
        "INSERT INTO public.cards (holder) VALUES ('h6'), ('h7');
         UPDATE public.cards SET holder = 'renamed' WHERE id = 2;",
    )
    .await
    .unwrap();
    bed.sync_all().await;
    assert_both_same(&bed, "public.cards").await;
    // A row of the site's own takes a key HO has not used.
    for site in 0..2 {
        let id: i32 = bed
            .site(site)
            .await
            .query_one(
                "INSERT INTO public.cards (holder) VALUES ('local') RETURNING id",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert!(id > 7, "site {site} handed out key {id}");
    }
}

const ODD_NAMES: &str = r#"
CREATE TABLE public.odd (
    id int PRIMARY KEY, "_op" text, "_lsn" int8, "_unchanged" text, "_origin" text,
    relaysync_op text, relaysync_unchanged text, relaysync_origin text, relaysync_seq int,
    "Mixed Case" text, "a""quote" text, "relaysync.pg_type" text
);
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_columns_named_like_bookkeeping_round_trip() {
    let bed = Bed::new("oddnames", ODD_NAMES, &[("public.odd", "all")], "").await;
    let ho = bed.ho().await;
    ho.batch_execute("INSERT INTO public.odd VALUES (1, 'D', 7, 'x', 'o', 'D', '{a}', 'relaysync_up', 3, 'm', 'q', 'p')")
        .await
        .unwrap();
    bed.setup().await;
    assert_both_same(&bed, "public.odd").await;
    ho.batch_execute(
        "INSERT INTO public.odd VALUES (2, 'I', 8, NULL, 'ho', 'U', NULL, NULL, 4, 'n', 'r', 's'),
                                      (3, 'T', 9, 'y', NULL, 'I', 'b', 'c', 5, 'o', 's', 't');
         UPDATE public.odd SET \"_op\" = 'U', relaysync_seq = 30 WHERE id = 1;
         DELETE FROM public.odd WHERE id = 3;",
    )
    .await
    .unwrap();
    bed.sync_all().await;
    assert_both_same(&bed, "public.odd").await;
}

const KEYLESS: &str = "
CREATE TABLE public.readings (sensor int, doc json, at point);
ALTER TABLE public.readings REPLICA IDENTITY FULL;
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyless_tables_keep_row_counts_and_match_types_without_equality() {
    let bed = Bed::new("keyless", KEYLESS, &[("public.readings", "all")], "").await;
    let ho = bed.ho().await;
    ho.batch_execute(
        "INSERT INTO public.readings SELECT 5, '{\"v\": 5}', '(5,5)' FROM generate_series(1, 3)",
    )
    .await
    .unwrap();
    bed.setup().await;
    assert_both_same(&bed, "public.readings").await;
    let delete_one = |sensor: i32| {
        format!(
            "DELETE FROM public.readings WHERE ctid = (SELECT ctid FROM public.readings WHERE sensor = {sensor} LIMIT 1);"
        )
    };
    // Two equal rows inserted and one deleted in one capture; one of three
    // equal rows the sites had deleted.
    ho.batch_execute(&format!(
        "INSERT INTO public.readings VALUES (1, '{{\"v\": 1}}', '(1,1)'), (1, '{{\"v\": 1}}', '(1,1)');
         {}{}",
        delete_one(1),
        delete_one(5)
    ))
    .await
    .unwrap();
    bed.sync_all().await;
    assert_both_same(&bed, "public.readings").await;
    assert_eq!(
        count(&bed.site(0).await, "SELECT count(*) FROM public.readings").await,
        3
    );
    // Updates and deletes of rows with json and point columns.
    ho.batch_execute(
        "UPDATE public.readings SET doc = '{\"v\": 6}' WHERE sensor = 5;
         DELETE FROM public.readings WHERE sensor = 1;",
    )
    .await
    .unwrap();
    bed.sync_all().await;
    assert_both_same(&bed, "public.readings").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_named_with_sql_quoting_in_the_config_syncs() {
    let bed = Bed::new(
        "quoted",
        r#"CREATE TABLE public."Store Items" ("Item No" int PRIMARY KEY, "Name" text);"#,
        // TOML's escaped quotes: the config says public."Store Items".
        &[(r#"public.\"Store Items\""#, "all")],
        "",
    )
    .await;
    let ho = bed.ho().await;
    ho.batch_execute(r#"INSERT INTO public."Store Items" VALUES (1, 'a'), (2, 'b')"#)
        .await
        .unwrap();
    bed.setup().await;
    ho.batch_execute(r#"UPDATE public."Store Items" SET "Name" = 'c' WHERE "Item No" = 2"#)
        .await
        .unwrap();
    bed.sync_all().await;
    assert_both_same(&bed, r#"public."Store Items""#).await;
}

/// An upstream table with an identity key: rows a site numbers itself
/// reach HO, and HO's own next row takes a key after them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_keys_made_at_a_site_do_not_collide_at_ho() {
    let bed = Bed::new(
        "identity_up",
        "CREATE TABLE public.cards (id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY, holder text);",
        &[("public.cards", "all")],
        "[[upstream]]\nname = \"public.cards\"\nmerge = \"upsert\"\n",
    )
    .await;
    let ho = bed.ho().await;
    ho.batch_execute("INSERT INTO public.cards (holder) VALUES ('h1'), ('h2')")
        .await
        .unwrap();
    bed.setup().await;
    bed.site(0)
        .await
        .batch_execute("INSERT INTO public.cards (holder) VALUES ('s1 local')")
        .await
        .unwrap();
    bed.sync_all().await;
    ho.batch_execute("INSERT INTO public.cards (holder) VALUES ('h3')")
        .await
        .unwrap();
    bed.sync_all().await;
    assert_eq!(count(&ho, "SELECT count(*) FROM public.cards").await, 4);
    assert_both_same(&bed, "public.cards").await;
}

/// Keys from a sequence the column's default names without owning it (as
/// every table of the pagila schema has them): a site's own rows and HO's
/// next rows after a merge take keys nobody used.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_from_a_sequence_the_column_does_not_own_do_not_collide() {
    let bed = Bed::new(
        "unowned_seq",
        &pagila_customer(),
        &[("public.customer", "all")],
        "[[upstream]]\nname = \"public.customer\"\nmerge = \"upsert\"\n",
    )
    .await;
    let ho = bed.ho().await;
    ho.batch_execute(
        "INSERT INTO public.customer (store_id, first_name, last_name, address_id)
         SELECT 1, 'c' || g, 'l', 1 FROM generate_series(1, 5) g",
    )
    .await
    .unwrap();
    bed.setup().await;
    bed.sync_all().await;
    // A customer enrolled at the site takes a key HO has not used.
    let id = new_customer(&bed.site(0).await, "at s1").await;
    assert!(id > 5, "the site handed out key {id}");
    bed.sync_all().await;
    // HO's next customer takes a key after the one merged from the site.
    let id = new_customer(&ho, "at HO").await;
    assert!(id > 6, "HO handed out key {id}");
    bed.sync_all().await;
    assert_eq!(count(&ho, "SELECT count(*) FROM public.customer").await, 7);
    assert_both_same(&bed, "public.customer").await;
}

/// A new customer named `name`, its key from the default: the key.
async fn new_customer(c: &tokio_postgres::Client, name: &str) -> i32 {
    c.query_one(
        "INSERT INTO public.customer (store_id, first_name, last_name, address_id)
         VALUES (1, $1, 'l', 1) RETURNING customer_id",
        &[&name],
    )
    .await
    .unwrap()
    .get(0)
}
