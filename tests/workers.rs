//! Long-running workers under the supervisor: a database that is down is
//! retried with a growing pause, each try logged once; a setup problem
//! stops the worker with the fix.

mod common;

use std::io::Read;
use std::net::TcpListener;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;

const SCHEMA: &str = "CREATE TABLE public.items (id int PRIMARY KEY, name text);";

/// A "database" that accepts each connection and closes it at once, as a
/// server that is going down does; records when each try came.
fn closing_server() -> (String, Arc<Mutex<Vec<Instant>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let tries = Arc::new(Mutex::new(Vec::new()));
    let counted = tries.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            counted.lock().unwrap().push(Instant::now());
            drop(stream);
        }
    });
    (
        format!("postgres://postgres@127.0.0.1:{port}/site?connect_timeout=2"),
        tries,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pos_run_backs_off_while_the_site_database_is_down() {
    let bed = Bed::new(
        "sitedown",
        SCHEMA,
        &[("public.items", "all")],
        "[sync]\ninterval = \"0s\"\n",
    )
    .await;
    bed.setup().await;
    let (down, tries) = closing_server();
    let mut cmd = bed.command(0, &["pos", "run"]);
    cmd.env("RELAYSYNC__POS__URL", &down)
        .env("RELAYSYNC_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let started = Instant::now();
    let mut worker = Worker::start(cmd);
    // Watch the worker for a fixed window: the rate of its tries is what is
    // measured. Tries at 0, 1, 3 and 7 s fall in it; a worker without
    // backoff would try every few seconds or faster.
    let window = Duration::from_secs(12);
    wait_for(
        window + Duration::from_secs(5),
        "the observation window",
        || async { started.elapsed() >= window },
    )
    .await;
    assert!(worker.is_running(), "a down database must not stop pos run");
    let out = worker.stop();
    let tries = tries.lock().unwrap().clone();
    let n = tries.len();
    let log = String::from_utf8_lossy(&out.stderr);
    let logged = log.lines().filter(|l| l.contains("WARN")).count();
    assert!((3..=5).contains(&n), "{n} tries in {window:?}:\n{log}");
    assert_eq!(logged, n, "each try logged once:\n{log}");
    // The pause grows: each gap between tries is well over the one before.
    let gaps: Vec<Duration> = tries.windows(2).map(|w| w[1] - w[0]).collect();
    for g in gaps.windows(2) {
        assert!(g[1] >= g[0] * 3 / 2, "pauses do not grow: {gaps:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pos_run_stops_on_a_setup_error_naming_the_fix() {
    let bed = Bed::new(
        "posnotsetup",
        SCHEMA,
        &[("public.items", "all")],
        "[sync]\ninterval = \"0s\"\n",
    )
    .await;
    bed.ok(0, &["setup", "relay"]).await;
    bed.add_site("s1").await;
    bed.ok(0, &["setup", "ho"]).await;
    // `setup pos` never ran at s1.
    let mut cmd = bed.command(0, &["pos", "run"]);
    cmd.stdout(Stdio::null()).stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "pos run kept running");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert_eq!(status.code(), Some(1), "{stderr}");
    let last = stderr.lines().last().unwrap_or_default();
    assert!(last.starts_with("error: "), "{stderr}");
    assert!(last.contains("`relaysync setup pos`"), "{stderr}");
}

/// The workers' library entry points: `ho::run` and `pos::run` start in the
/// test's own process, stream HO's changes to a site, and return when the
/// shutdown channel is raised.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ho_and_pos_run_in_process_until_shutdown() {
    use relaysync::config::Config;
    use relaysync::Running;
    let bed = Bed::new(
        "inprocess",
        SCHEMA,
        &[("public.items", "all")],
        "[sync]\ninterval = \"0s\"\n",
    )
    .await;
    bed.setup().await;
    // s1 reaches the relay as its own role, as its `pos` commands do.
    let site_relay = bed.site_relay_urls.lock().unwrap()["s1"].clone();
    let site_config = bed.dir.join("s1.toml");
    let text = std::fs::read_to_string(&bed.config).unwrap().replacen(
        &format!("url = \"{}\"", bed.relay_url),
        &format!("url = \"{site_relay}\""),
        1,
    );
    std::fs::write(&site_config, text).unwrap();
    let ho_cfg = Config::load(&bed.config).unwrap();
    let pos_cfg = Config::load(&site_config).unwrap();

    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let ho = relaysync::ho::run(&ho_cfg, Running::until(shutdown.clone()), |_| {});
    let pos = relaysync::pos::run(&pos_cfg, Running::until(shutdown), |_| {});
    let site = bed.site(0).await;
    let drive = async {
        bed.ho()
            .await
            .batch_execute(
                "INSERT INTO public.items SELECT g, 'n' || g FROM generate_series(1, 100) g",
            )
            .await
            .unwrap();
        wait_for(Duration::from_secs(60), "the rows at s1", || async {
            count(&site, "SELECT count(*) FROM public.items").await == 100
        })
        .await;
        stop.send(true).unwrap();
    };
    let stopped = tokio::time::timeout(Duration::from_secs(60), async {
        tokio::join!(ho, pos, drive)
    })
    .await
    .expect("both workers return once shutdown is raised");
    stopped.0.unwrap();
    stopped.1.unwrap();
    assert_same(
        &bed,
        0,
        "SELECT * FROM public.items",
        "SELECT * FROM public.items",
    )
    .await;
}
