//! Routing by parent on real clusters: a chain payment → rental →
//! inventory (routed by its store column) reaches each store with exactly
//! its rows, through inserts, updates, deletes and parents moving between
//! stores; no site ever holds an orphan (each site's foreign keys, created
//! NOT VALID, are validated after each step). Also: `setup ho` and
//! `doctor` name a foreign key that could orphan rows; a config with
//! `[[upstream]]` tables only runs end to end.

mod common;

use common::*;

const SCHEMA: &str = "
CREATE TABLE public.store (store_id text PRIMARY KEY, name text);
CREATE TABLE public.inventory (inventory_id int PRIMARY KEY, store_id text NOT NULL, film text);
CREATE TABLE public.rental (rental_id int PRIMARY KEY, inventory_id int NOT NULL, customer text);
CREATE TABLE public.payment (payment_id int PRIMARY KEY, rental_id int NOT NULL, amount numeric(8,2));
ALTER TABLE public.inventory REPLICA IDENTITY FULL;
ALTER TABLE public.rental REPLICA IDENTITY FULL;
ALTER TABLE public.payment REPLICA IDENTITY FULL;
";

/// The chain's foreign keys: at HO as usual; at the sites NOT VALID, so
/// that validating them checks every row a site holds.
const FKS: &[(&str, &str, &str)] = &[
    (
        "public.inventory",
        "inventory_store_fk",
        "FOREIGN KEY (store_id) REFERENCES public.store",
    ),
    (
        "public.rental",
        "rental_inventory_fk",
        "FOREIGN KEY (inventory_id) REFERENCES public.inventory",
    ),
    (
        "public.payment",
        "payment_rental_fk",
        "FOREIGN KEY (rental_id) REFERENCES public.rental ON DELETE CASCADE",
    ),
];

const TABLES: &[(&str, &str)] = &[
    ("public.store", "column:store_id"),
    ("public.inventory", "column:store_id"),
    ("public.rental", "parent:public.inventory"),
    ("public.payment", "parent:public.rental"),
];

async fn chain_bed(name: &str) -> Bed {
    let bed = Bed::new(name, SCHEMA, TABLES, "[packet]\nmax_rows = 40").await;
    for (table, fk, def) in FKS {
        bed.ho()
            .await
            .batch_execute(&format!("ALTER TABLE {table} ADD CONSTRAINT {fk} {def}"))
            .await
            .unwrap();
    }
    bed
}

/// HO's rows of each chain table for site `site`, and the site's own.
fn subsets(site: usize) -> Vec<(String, String)> {
    let s = SITES[site];
    vec![
        (format!("SELECT * FROM public.store WHERE store_id = '{s}'"), "SELECT * FROM public.store".into()),
        (format!("SELECT * FROM public.inventory WHERE store_id = '{s}'"), "SELECT * FROM public.inventory".into()),
        (
            format!("SELECT r.* FROM public.rental r JOIN public.inventory i USING (inventory_id) WHERE i.store_id = '{s}'"),
            "SELECT * FROM public.rental".into(),
        ),
        (
            format!("SELECT p.* FROM public.payment p JOIN public.rental r USING (rental_id)
                       JOIN public.inventory i USING (inventory_id) WHERE i.store_id = '{s}'"),
            "SELECT * FROM public.payment".into(),
        ),
    ]
}

/// Each site holds exactly HO's rows for it in every chain table, and no
/// orphan: its foreign keys, made NOT VALID again, validate.
async fn assert_each_site_exact_without_orphans(bed: &Bed, step: &str) {
    for (site, code) in SITES.iter().enumerate() {
        for (ho_q, site_q) in subsets(site) {
            assert_same(bed, site, &ho_q, &site_q).await;
        }
        let c = bed.site(site).await;
        for (table, fk, def) in FKS {
            c.batch_execute(&format!(
                "ALTER TABLE {table} DROP CONSTRAINT IF EXISTS {fk};
                 ALTER TABLE {table} ADD CONSTRAINT {fk} {def} NOT VALID;"
            ))
            .await
            .unwrap();
            if let Err(e) = c
                .batch_execute(&format!("ALTER TABLE {table} VALIDATE CONSTRAINT {fk}"))
                .await
            {
                panic!("{step}: site {code} holds an orphan in {table}: {e:?}");
            }
        }
    }
}

async fn exec(bed: &Bed, sql: &str) {
    bed.ho()
        .await
        .batch_execute(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e:?}"));
}

async fn rows_at(bed: &Bed, site: usize, table: &str) -> i64 {
    count(
        &bed.site(site).await,
        &format!("SELECT count(*) FROM {table}"),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chain_routed_by_parent_follows_its_parents_and_leaves_no_orphan() {
    let bed = chain_bed("parent_chain").await;
    // Before the first sync: two stores, four items each, rentals and payments.
    exec(
        &bed,
        "INSERT INTO public.store VALUES ('s1', 'one'), ('s2', 'two');
         INSERT INTO public.inventory SELECT g, CASE WHEN g <= 4 THEN 's1' ELSE 's2' END, 'film ' || g
           FROM generate_series(1, 8) g;
         INSERT INTO public.rental SELECT g, 1 + g % 8, 'customer ' || g FROM generate_series(1, 80) g;
         INSERT INTO public.payment SELECT g, 1 + g % 80, g FROM generate_series(1, 160) g;",
    )
    .await;
    bed.setup().await;
    assert_each_site_exact_without_orphans(&bed, "full sync").await;
    assert_eq!(rows_at(&bed, 0, "public.rental").await, 40);

    // A parent and its children in one transaction; then in separate ones.
    exec(
        &bed,
        "BEGIN;
         INSERT INTO public.inventory VALUES (9, 's2', 'new');
         INSERT INTO public.rental VALUES (100, 9, 'c'), (101, 9, 'd');
         INSERT INTO public.payment VALUES (1000, 100, 1.5), (1001, 101, 2.5);
         COMMIT;
         INSERT INTO public.inventory VALUES (10, 's1', 'newer');
         INSERT INTO public.rental VALUES (102, 10, 'e');
         INSERT INTO public.payment VALUES (1002, 102, 3.5);",
    )
    .await;
    bed.sync_all().await;
    assert_each_site_exact_without_orphans(&bed, "inserts").await;

    // Updates and deletes of children (payments go with their rental at HO).
    exec(
        &bed,
        "UPDATE public.payment SET amount = amount + 100 WHERE payment_id % 3 = 0;
         UPDATE public.rental SET customer = 'renamed' WHERE rental_id % 4 = 0;
         DELETE FROM public.rental WHERE rental_id IN (5, 6, 102);",
    )
    .await;
    bed.sync_all().await;
    assert_each_site_exact_without_orphans(&bed, "updates and deletes").await;

    // A parent moves to the other store: its rentals and their payments follow.
    exec(
        &bed,
        "UPDATE public.inventory SET store_id = 's2' WHERE inventory_id = 1",
    )
    .await;
    bed.sync_all().await;
    assert_each_site_exact_without_orphans(&bed, "a parent moved").await;
    // A rental moves to an item of the other store: its payments follow.
    exec(
        &bed,
        "UPDATE public.rental SET inventory_id = 2 WHERE rental_id = 7",
    )
    .await;
    bed.sync_all().await;
    assert_each_site_exact_without_orphans(&bed, "a child moved").await;

    // In one transaction: children added before and after a move, a move
    // there and back, and a child moved away from a parent that moves.
    exec(
        &bed,
        "BEGIN;
         INSERT INTO public.rental VALUES (103, 3, 'before');
         INSERT INTO public.payment VALUES (1003, 103, 9);
         UPDATE public.inventory SET store_id = 's2' WHERE inventory_id = 3;
         INSERT INTO public.rental VALUES (104, 3, 'after');
         UPDATE public.inventory SET store_id = 's2' WHERE inventory_id = 4;
         UPDATE public.inventory SET store_id = 's1' WHERE inventory_id = 4;
         UPDATE public.rental SET inventory_id = 6 WHERE rental_id = 103;
         UPDATE public.inventory SET store_id = 's1' WHERE inventory_id IN (5, 6);
         COMMIT;",
    )
    .await;
    bed.sync_all().await;
    assert_each_site_exact_without_orphans(&bed, "moves in one transaction").await;

    // A site offline during moves catches up.
    exec(
        &bed,
        "UPDATE public.inventory SET store_id = 's2' WHERE inventory_id IN (2, 10)",
    )
    .await;
    bed.ok(0, &["ho", "sync", "--once"]).await;
    bed.ok(1, &["pos", "sync", "--once"]).await;
    exec(
        &bed,
        "UPDATE public.inventory SET store_id = 's1' WHERE inventory_id = 2;
         INSERT INTO public.rental VALUES (105, 2, 'while away');
         UPDATE public.inventory SET store_id = 's1' WHERE inventory_id = 7;",
    )
    .await;
    bed.ok(0, &["ho", "sync", "--once"]).await;
    bed.ok(1, &["pos", "sync", "--once"]).await;
    bed.sync_all().await;
    assert_each_site_exact_without_orphans(&bed, "a site offline during moves").await;
    assert_all_processed(&bed).await;

    // HO's worker restarted after a move it had not stored: the stream
    // replays it, the parents' routes read from HO as they are now.
    exec(
        &bed,
        "UPDATE public.inventory SET store_id = 's2' WHERE inventory_id = 4;
         INSERT INTO public.rental VALUES (106, 4, 'replayed');
         UPDATE public.inventory SET store_id = 's1' WHERE inventory_id = 9;",
    )
    .await;
    bed.run_killed_at(0, &["ho", "sync", "--once"], "capture_mid_group")
        .await;
    bed.sync_all().await;
    assert_each_site_exact_without_orphans(&bed, "a replayed move").await;

    // verify hashes HO's rows per site through the parents: all equal.
    bed.ok(0, &["verify", "--all"]).await;
    bed.sync_all().await;
    let out = bed.ok(0, &["--json", "verify", "--show"]).await;
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let results = v["results"].as_array().unwrap();
    assert_eq!(results.len(), SITES.len() * TABLES.len(), "{v}");
    assert!(results.iter().all(|r| r["status"] == "equal"), "{v}");
    assert!(results.iter().all(|r| r["orphans"] == 0), "{v}");
}

/// Rentals routed to every site although their items are not: each site's
/// verify counts the rentals whose item it does not hold (through its own
/// foreign keys), per table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_counts_the_orphans_a_routing_leaves() {
    let tables = [
        ("public.store", "column:store_id"),
        ("public.inventory", "column:store_id"),
        ("public.rental", "all"),
    ];
    let bed = Bed::new("parent_verify_orphans", SCHEMA, &tables, "").await;
    for (table, fk, def) in &FKS[..2] {
        exec(
            &bed,
            &format!("ALTER TABLE {table} ADD CONSTRAINT {fk} {def}"),
        )
        .await;
        for site in 0..SITES.len() {
            bed.site(site)
                .await
                .batch_execute(&format!(
                    "ALTER TABLE {table} ADD CONSTRAINT {fk} {def} NOT VALID"
                ))
                .await
                .unwrap();
        }
    }
    exec(
        &bed,
        "INSERT INTO public.store VALUES ('s1', 'one'), ('s2', 'two');
         INSERT INTO public.inventory VALUES (1, 's1', 'a'), (2, 's2', 'b'), (3, 's2', 'c');
         INSERT INTO public.rental SELECT g, 1 + g % 3, 'c' || g FROM generate_series(1, 30) g;",
    )
    .await;
    bed.setup().await;
    bed.ok(0, &["verify", "--all"]).await;
    bed.sync_all().await;
    let out = bed.ok(0, &["--json", "verify", "--show"]).await;
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let orphans = |site: &str, table: &str| {
        v["results"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["site"] == site && r["table_name"] == table)
            .unwrap_or_else(|| panic!("no result for {site} {table}: {v}"))["orphans"]
            .as_i64()
            .unwrap()
    };
    // s1 holds item 1 only: the rentals of items 2 and 3 are orphans there.
    assert_eq!(orphans("s1", "public.rental"), 20, "{v}");
    assert_eq!(orphans("s2", "public.rental"), 10, "{v}");
    assert_eq!(orphans("s1", "public.inventory"), 0, "{v}");
    assert_eq!(orphans("s2", "public.store"), 0, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setup_and_doctor_name_a_foreign_key_that_could_orphan_rows() {
    let bed = chain_bed("parent_orphans").await;
    // Rentals routed to every site although their items are not.
    let tables = [
        ("public.store", "column:store_id"),
        ("public.inventory", "column:store_id"),
        ("public.rental", "all"),
    ];
    bed.write_config(&tables, "");
    bed.ok(0, &["setup", "relay"]).await;
    let said = bed.ok(0, &["setup", "ho"]).await;
    assert!(said.contains("rental_inventory_fk"), "{said}");
    let out = bed.run(0, &["doctor", "--json"]).await;
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let routing: Vec<&serde_json::Value> = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["check"] == "routing")
        .collect();
    assert_eq!(routing.len(), 1, "{report}");
    assert_eq!(routing[0]["severity"], "warning");
    assert!(routing[0]["message"]
        .as_str()
        .unwrap()
        .contains("rental_inventory_fk"));

    // Routed by parent, the same key is not named; a route by parent
    // without a foreign key to follow is refused.
    bed.write_config(&TABLES[..3], "");
    let said = bed.ok(0, &["setup", "ho"]).await;
    assert!(!said.contains("rental_inventory_fk"), "{said}");
    bed.ho()
        .await
        .batch_execute("ALTER TABLE public.rental DROP CONSTRAINT rental_inventory_fk")
        .await
        .unwrap();
    let out = bed.run(0, &["setup", "ho"]).await;
    assert!(!out.status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_with_upstream_tables_only_runs_end_to_end() {
    let schema = "CREATE TABLE public.device_events (site text, device int, seq int, kind text,
                                                  PRIMARY KEY (site, device, seq));";
    let upstream = "[[upstream]]\nname = \"public.device_events\"\nmerge = \"append\"\n";
    let bed = Bed::new("up_only", schema, &[], upstream).await;
    bed.setup().await;
    for (site, code) in SITES.iter().enumerate() {
        bed.site(site)
            .await
            .execute(
                "INSERT INTO public.device_events SELECT $1, 1, g, 'door' FROM generate_series(1, 25) g",
                &[code],
            )
            .await
            .unwrap();
    }
    bed.sync_all().await;
    bed.ok(0, &["pos", "sync", "--once"]).await;
    bed.ok(1, &["pos", "sync", "--once"]).await;
    bed.ok(0, &["ho", "sync", "--once"]).await;
    let ho = bed.ho().await;
    for s in SITES {
        let n = ho
            .query_one(
                "SELECT count(*) FROM public.device_events WHERE site = $1",
                &[&s],
            )
            .await
            .unwrap()
            .get::<_, i64>(0);
        assert_eq!(n, 25, "events of {s} at HO");
    }
}

/// A partition sends its rows' old values as its own replica identity
/// says, not its root's: a partitioned table routed by parent needs every
/// partition FULL; `setup ho` names the ones that are not. Then a parent
/// moving takes the partitioned children along.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_table_routed_by_parent_follows_its_parents() {
    let schema = "
CREATE TABLE public.store (store_id text PRIMARY KEY, name text);
CREATE TABLE public.inventory (inventory_id int PRIMARY KEY, store_id text NOT NULL, film text);
ALTER TABLE public.inventory REPLICA IDENTITY FULL;
CREATE TABLE public.rental (rental_id int, month int, inventory_id int NOT NULL, customer text,
                            PRIMARY KEY (rental_id, month)) PARTITION BY LIST (month);
CREATE TABLE public.rental_1 PARTITION OF public.rental FOR VALUES IN (1);
CREATE TABLE public.rental_2 PARTITION OF public.rental FOR VALUES IN (2);
ALTER TABLE public.rental REPLICA IDENTITY FULL;";
    let bed = Bed::new("parent_partitioned", schema, &TABLES[..3], "").await;
    exec(
        &bed,
        "ALTER TABLE public.rental ADD CONSTRAINT rental_inventory_fk FOREIGN KEY (inventory_id) REFERENCES public.inventory;
         INSERT INTO public.store VALUES ('s1', 'one'), ('s2', 'two');
         INSERT INTO public.inventory VALUES (1, 's1', 'a'), (2, 's2', 'b');
         INSERT INTO public.rental SELECT g, 1 + g % 2, 1 + g % 2, 'c' || g FROM generate_series(1, 20) g;",
    )
    .await;
    bed.ok(0, &["setup", "relay"]).await;
    let out = bed.run(0, &["setup", "ho"]).await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("rental_1") && err.contains("rental_2"),
        "{err}"
    );
    exec(
        &bed,
        "ALTER TABLE public.rental_1 REPLICA IDENTITY FULL; ALTER TABLE public.rental_2 REPLICA IDENTITY FULL;",
    )
    .await;
    bed.setup().await;
    let chain = |site: usize| subsets(site).into_iter().take(3);
    for site in 0..SITES.len() {
        for (ho_q, site_q) in chain(site) {
            assert_same(&bed, site, &ho_q, &site_q).await;
        }
    }
    exec(
        &bed,
        "UPDATE public.inventory SET store_id = 's2' WHERE inventory_id = 1;
         UPDATE public.rental SET inventory_id = 1 WHERE rental_id = 2;",
    )
    .await;
    bed.sync_all().await;
    for site in 0..SITES.len() {
        for (ho_q, site_q) in chain(site) {
            assert_same(&bed, site, &ho_q, &site_q).await;
        }
    }
    assert_eq!(rows_at(&bed, 0, "public.rental").await, 0);
    assert_eq!(rows_at(&bed, 1, "public.rental").await, 20);
}
