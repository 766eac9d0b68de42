//! `relaysync bench --signing`: what signing packets costs. relaysync runs
//! unsigned and signed on the same rig, in alternating rounds (the order
//! swapped each round, so neither always runs on a warmer machine): the
//! bulk insert, the relay bytes per change, and the small transactions
//! (one packet each: where a cost per packet shows most). Medians with
//! min–max, and signed / unsigned.

use relaysync::error::Result;

use super::measure::spread;
use super::native::set_native;
use super::rig::{self, cli};
use super::workloads::packet_loads;
use super::Args;

/// The figures of one system's rounds.
#[derive(Default)]
struct Rounds {
    bulk_insert: Vec<f64>,
    relay_bytes: Vec<f64>,
    small_txns: Vec<f64>,
}

/// Runs `rounds` rounds of relaysync unsigned and signed and prints the
/// comparison (or JSON).
pub async fn run(args: Args, rounds: usize) -> Result<()> {
    if args.sites == 0 || args.rows == 0 || rounds == 0 {
        return Err(relaysync::error::Error::Config(
            "bench --signing needs --rows, --sites and --rounds of at least 1".into(),
        ));
    }
    let say = super::progress(args.json);
    say(&format!(
        "starting clusters: HO, relay, and {} site databases",
        args.sites
    ));
    let mut rig = rig::build(args).await?;
    set_native(&rig, false).await?;
    let key = rig.dir.join("ho.pem");
    cli(
        &rig.dir.join("ho.toml"),
        &["keys", "generate", "--out", &key.display().to_string()],
    )?;
    let (mut unsigned, mut signed) = (Rounds::default(), Rounds::default());
    for round in 0..rounds {
        let order = if round % 2 == 0 {
            [false, true]
        } else {
            [true, false]
        };
        for signing in order {
            say(&format!(
                "round {} of {rounds}, {}",
                round + 1,
                if signing { "signed" } else { "unsigned" }
            ));
            rig.write_configs(signing.then_some(key.as_path()))?;
            let into = if signing { &mut signed } else { &mut unsigned };
            one_round(&mut rig, args.rows as i64, into, &say).await?;
        }
    }
    print(&unsigned, &signed, args, rounds);
    Ok(())
}

/// Starts the workers with the configs as written and runs the loads.
async fn one_round(
    rig: &mut rig::Rig,
    n: i64,
    into: &mut Rounds,
    say: &dyn Fn(&str),
) -> Result<()> {
    rig.start_workers()?;
    let mut out = |m: &str| say(m);
    let result = packet_loads(rig, n, &mut out).await;
    rig.stop_workers();
    let (bulk_insert, relay_bytes, small_txns) = result?;
    into.bulk_insert.push(bulk_insert);
    into.relay_bytes.push(relay_bytes);
    into.small_txns.push(small_txns);
    Ok(())
}

fn print(unsigned: &Rounds, signed: &Rounds, args: Args, rounds: usize) {
    let lines = [
        (
            "bulk_insert",
            &unsigned.bulk_insert,
            &signed.bulk_insert,
            "s",
        ),
        (
            "relay_bytes",
            &unsigned.relay_bytes,
            &signed.relay_bytes,
            "bytes/change",
        ),
        ("small_txns", &unsigned.small_txns, &signed.small_txns, "s"),
    ];
    if args.json {
        let results: Vec<_> = lines
            .iter()
            .map(|(name, u, s, unit)| {
                let (u, s) = (spread(u), spread(s));
                serde_json::json!({
                    "name": name, "unit": unit,
                    "unsigned": u.0, "unsigned_min": u.1, "unsigned_max": u.2,
                    "signed": s.0, "signed_min": s.1, "signed_max": s.2,
                    "ratio": s.0 / u.0,
                })
            })
            .collect();
        let out = serde_json::json!({
            "results": results,
            "rows": args.rows, "sites": args.sites, "rounds": rounds,
        });
        println!("{out}");
        return;
    }
    println!(
        "relaysync bench --signing: {} rows, {} sites, {rounds} rounds each; medians (min–max)",
        args.rows, args.sites
    );
    println!(
        "{:<12} {:>24} {:>24}  {:<13} {:>6}",
        "workload", "unsigned", "signed", "unit", "ratio"
    );
    for (name, u, s, unit) in lines {
        let (u, s) = (spread(u), spread(s));
        let cell = |(m, lo, hi): (f64, f64, f64)| format!("{m:.3} ({lo:.3}–{hi:.3})");
        println!(
            "{name:<12} {:>24} {:>24}  {unit:<13} {:>6.3}",
            cell(u),
            cell(s),
            s.0 / u.0
        );
    }
    println!("(ratio = signed / unsigned: 1.0 is free)");
}
