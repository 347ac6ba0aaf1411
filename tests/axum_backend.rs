//! The axum example (`examples/axum_backend.rs`) served in-process and
//! driven over real HTTP with reqwest.

mod support;

#[path = "../examples/axum_backend.rs"]
mod backend;

use std::time::Duration;

use backend::Mode;
use procpool::ProcessPoolExecutor;
use support::*;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

procpool::init_before_main!();

/// A heavy request for the tests: tens of milliseconds in a debug build.
const HEAVY_ROUNDS: u64 = 300_000;

/// A request that would run for hours: only ever cancelled.
const HUGE_ROUNDS: u64 = 1 << 36;

/// How long a request that should be served may take before the test
/// fails: far below what the cancelled requests would take.
const PROMPTLY: Duration = Duration::from_secs(30);

struct Server {
    url: String,
    pool: ProcessPoolExecutor,
    stop: oneshot::Sender<()>,
    serving: JoinHandle<std::io::Result<()>>,
}

/// Starts the example's server on 127.0.0.1 (a free port) with a pool of 2
/// workers.
async fn start(mode: Mode) -> Server {
    let pool = ProcessPoolExecutor::builder()
        .workers(2)
        .max_queued(backend::MAX_QUEUED)
        .build()
        .await
        .expect("the pool should start");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0");
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = oneshot::channel::<()>();
    let serving = tokio::spawn(backend::serve(listener, pool.clone(), mode, async {
        let _ = stopped.await;
    }));
    Server {
        url,
        pool,
        stop,
        serving,
    }
}

impl Server {
    /// Triggers the graceful shutdown and checks that it takes the pool
    /// down with the server.
    async fn stop(self) {
        let _ = self.stop.send(());
        bounded("the server to shut down", self.serving)
            .await
            .expect("the server task panicked")
            .expect("the server failed");
        assert!(self.pool.is_shutdown());
        assert_eq!(self.pool.stats().workers_alive, 0);
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("an HTTP client")
}

/// `POST /hash?rounds=...` with `body`: the status and the response text.
async fn post_hash(
    client: &reqwest::Client,
    url: &str,
    rounds: u64,
    body: Vec<u8>,
) -> reqwest::Result<(u16, String)> {
    let response = client
        .post(format!("{url}/hash?rounds={rounds}"))
        .body(body)
        .send()
        .await?;
    let status = response.status().as_u16();
    Ok((status, response.text().await?))
}

/// What `/hash` should answer.
fn expected(body: &[u8], rounds: u64) -> String {
    format!("{:016x}\n", backend::digest(body, rounds))
}

fn body_for(i: usize) -> Vec<u8> {
    format!("request body number {i};")
        .repeat(i + 1)
        .into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_heavy_requests_get_correct_digests_while_health_answers() {
    const REQUESTS: usize = 40;
    const MIN_HEALTH_DURING: usize = 5;

    let server = start(Mode::Pool).await;
    let client = client();

    let heavy: Vec<JoinHandle<reqwest::Result<(u16, String)>>> = (0..REQUESTS)
        .map(|i| {
            let (client, url) = (client.clone(), server.url.clone());
            tokio::spawn(async move { post_hash(&client, &url, HEAVY_ROUNDS, body_for(i)).await })
        })
        .collect();

    // /health, one request after another, as long as heavy requests are
    // outstanding. Counted are only answers that arrived while some were.
    let mut health_during = 0;
    while heavy.iter().any(|h| !h.is_finished()) {
        let response = bounded(
            "a /health request",
            client.get(format!("{}/health", server.url)).send(),
        )
        .await
        .expect("/health should answer");
        assert_eq!(response.status().as_u16(), 200);
        let text = bounded("a /health body", response.text()).await.unwrap();
        assert_eq!(text, "ok");
        if heavy.iter().any(|h| !h.is_finished()) {
            health_during += 1;
        }
    }

    let mut answers = Vec::new();
    for h in heavy {
        let (status, text) = bounded("a /hash request", h)
            .await
            .expect("the client task panicked")
            .expect("/hash should answer");
        assert_eq!(status, 200, "{text}");
        answers.push(text);
    }
    // The expected digests, computed here (off the runtime's threads).
    let wanted = tokio::task::spawn_blocking(|| {
        (0..REQUESTS)
            .map(|i| expected(&body_for(i), HEAVY_ROUNDS))
            .collect::<Vec<_>>()
    });
    let wanted = bounded("the expected digests", wanted).await.unwrap();
    assert_eq!(answers, wanted);

    eprintln!("{health_during} /health answers while the heavy requests ran");
    assert!(
        health_during >= MIN_HEALTH_DURING,
        "only {health_during} /health answers while {REQUESTS} heavy requests ran"
    );
    let stats = server.pool.stats();
    assert_eq!(stats.completed, REQUESTS as u64, "{stats:?}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_disconnect_cancel_their_jobs_and_free_the_workers() {
    const GIVE_UPS: usize = 4;

    let server = start(Mode::Pool).await;
    let client = client();
    let before = server.pool.stats();

    // Requests that would run for hours, from clients that give up after
    // 200 ms: 2 run on the 2 workers, the others wait in the queue.
    let giving_up: Vec<_> = (0..GIVE_UPS)
        .map(|i| {
            let (client, url) = (client.clone(), server.url.clone());
            tokio::spawn(async move {
                client
                    .post(format!("{url}/hash?rounds={HUGE_ROUNDS}"))
                    .body(body_for(i))
                    .timeout(Duration::from_millis(200))
                    .send()
                    .await
            })
        })
        .collect();
    for h in giving_up {
        let r = bounded("a request that gives up", h)
            .await
            .expect("the client task panicked");
        match r {
            Err(e) if e.is_timeout() => {}
            other => panic!("the request should have timed out, got {other:?}"),
        }
    }

    // A request that should now be served at once: the workers were freed
    // by the cancels, not by the huge jobs finishing.
    let body = b"after the cancels".to_vec();
    let answer = tokio::time::timeout(
        PROMPTLY,
        post_hash(&client, &server.url, HEAVY_ROUNDS, body.clone()),
    )
    .await
    .unwrap_or_else(|_| panic!("a normal request was not served within {PROMPTLY:?}"))
    .expect("/hash should answer");
    assert_eq!(answer, (200, expected(&body, HEAVY_ROUNDS)));

    // Every job the server submitted for a client that went away was
    // cancelled (the server submits a job once it has read the request; a
    // very slow machine might not have got that far within 200 ms, so at
    // least one, not exactly four).
    eventually("the abandoned jobs to be cancelled", || {
        let s = server.pool.stats();
        s.cancelled > before.cancelled && s.running == 0 && s.queued == 0
    })
    .await;
    let after = server.pool.stats();
    eprintln!("after the cancels: {after:?}");
    assert!(after.cancelled - before.cancelled <= GIVE_UPS as u64);
    assert_eq!(
        after.completed - before.completed,
        1,
        "only the normal request may complete: {after:?}"
    );
    assert_eq!(after.failed, before.failed, "{after:?}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_mode_answers_with_the_same_digest() {
    let client = client();
    let body = b"the same work, three ways".to_vec();
    let want = expected(&body, HEAVY_ROUNDS);
    for name in ["pool", "inline", "spawn_blocking"] {
        let mode: Mode = name.parse().unwrap();
        assert_eq!(mode.to_string(), name);
        let server = start(mode).await;
        let answer = bounded(
            "a /hash request",
            post_hash(&client, &server.url, HEAVY_ROUNDS, body.clone()),
        )
        .await
        .expect("/hash should answer");
        assert_eq!(answer, (200, want.clone()), "mode {mode}");
        server.stop().await;
    }
    assert!("threads".parse::<Mode>().is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_refused_without_a_job() {
    let server = start(Mode::Pool).await;
    let client = client();
    let too_many = backend::MAX_ROUNDS + 1;
    let (status, _) = bounded(
        "a /hash request",
        post_hash(&client, &server.url, too_many, b"x".to_vec()),
    )
    .await
    .unwrap();
    assert_eq!(status, 400);
    let response = bounded(
        "a /hash request",
        client
            .post(format!("{}/hash?rounds=many", server.url))
            .body("x")
            .send(),
    )
    .await
    .unwrap();
    assert_eq!(response.status().as_u16(), 400);
    // The default number of rounds applies without a query.
    let response = bounded(
        "a /hash request",
        client.post(format!("{}/hash", server.url)).body("x").send(),
    )
    .await
    .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let text = bounded("a /hash body", response.text()).await.unwrap();
    let want = tokio::task::spawn_blocking(|| expected(b"x", backend::DEFAULT_ROUNDS));
    assert_eq!(text, bounded("the expected digest", want).await.unwrap());
    let stats = server.pool.stats();
    assert_eq!(stats.completed, 1, "{stats:?}");
    assert_eq!(stats.failed, 0, "{stats:?}");
    server.stop().await;
}
