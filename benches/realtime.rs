//! Real-time fan-out benchmark: BENCH_CLIENTS (default 5,000) concurrent clients on loopback,
//! over SSE (`GET /api/v1/stream`) and over Socket.IO (Engine.IO v4 websockets), all connected
//! to one in-process server; BENCH_EVENTS events (default 40) published on the bus every
//! BENCH_INTERVAL_MS (default 250). For each event: the time from publish to the LAST client
//! receiving it. Prints p50/p99/max over events and the ratio of p99 to the goal (< 500 ms).
//!
//! `cargo bench --bench realtime` — knobs: BENCH_CLIENTS, BENCH_EVENTS, BENCH_INTERVAL_MS,
//! BENCH_TRANSPORT (`sse`, `socketio` or `both`, the default), BENCH_SECONDS (bound on each
//! phase, default 180). Clients and server share this process and its 2 cores, so the figures
//! include the clients' own reading. Each client holds one socket, the server another:
//! 5,000 clients need ~10,000 descriptors (`ulimit -n` 20,000 here).

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::*;
use futures_util::{SinkExt, StreamExt};
use opsdeck::app::App;
use opsdeck::config::Config;
use opsdeck::events::Channel;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

const GOAL: Duration = Duration::from_millis(500);

fn main() {
    opsdeck::cli::tune_allocator();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(run());
}

/// What every client reports into: per event, how many clients got it and the latest
/// arrival (µs since `base`).
struct Tally {
    base: Instant,
    count: Vec<AtomicUsize>,
    last_us: Vec<AtomicU64>,
}

impl Tally {
    fn new(events: usize) -> Self {
        Tally {
            base: Instant::now(),
            count: (0..events).map(|_| AtomicUsize::new(0)).collect(),
            last_us: (0..events).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    fn saw(&self, n: usize) {
        if n < self.count.len() {
            let us = self.base.elapsed().as_micros() as u64;
            self.last_us[n].fetch_max(us, Ordering::Relaxed);
            self.count[n].fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Finds complete `"bench_n":<digits>` markers in `buf`, reports them and drops what was read.
fn scan(buf: &mut Vec<u8>, tally: &Tally) {
    const MARK: &[u8] = b"\"bench_n\":";
    let mut consumed = 0;
    let mut i = 0;
    while i + MARK.len() < buf.len() {
        if &buf[i..i + MARK.len()] == MARK {
            let start = i + MARK.len();
            let end = start
                + buf[start..]
                    .iter()
                    .take_while(|b| b.is_ascii_digit())
                    .count();
            if end == buf.len() {
                break; // the number may continue in the next read
            }
            if let Some(n) = std::str::from_utf8(&buf[start..end])
                .ok()
                .and_then(|s| s.parse::<usize>().ok())
            {
                tally.saw(n);
            }
            i = end;
            consumed = end;
        } else {
            i += 1;
        }
    }
    // Keep only a tail that may hold the start of a marker.
    let keep_from = consumed.max(buf.len().saturating_sub(MARK.len() + 20));
    buf.drain(..keep_from);
}

async fn sse_client(
    addr: std::net::SocketAddr,
    key: String,
    tally: Arc<Tally>,
    ready: Arc<AtomicUsize>,
    stop: CancellationToken,
) {
    let Ok(mut sock) = tokio::net::TcpStream::connect(addr).await else {
        return;
    };
    let req = format!(
        "GET /api/v1/stream HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {key}\r\nAccept: text/event-stream\r\n\r\n"
    );
    if sock.write_all(req.as_bytes()).await.is_err() {
        return;
    }
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = vec![0u8; 16 * 1024];
    let mut counted = false;
    loop {
        let read = tokio::select! {
            _ = stop.cancelled() => return,
            r = sock.read(&mut chunk) => r,
        };
        let Ok(n) = read else { return };
        if n == 0 {
            return;
        }
        buf.extend_from_slice(&chunk[..n]);
        if !counted {
            if buf.windows(7).any(|w| w == b": ready") {
                counted = true;
                ready.fetch_add(1, Ordering::Relaxed);
                buf.clear();
            }
            continue;
        }
        scan(&mut buf, &tally);
    }
}

async fn socketio_client(
    addr: std::net::SocketAddr,
    key: String,
    tally: Arc<Tally>,
    ready: Arc<AtomicUsize>,
    stop: CancellationToken,
) {
    let url = format!("ws://{addr}/socket.io/?EIO=4&transport=websocket");
    let Ok((mut ws, _)) = tokio_tungstenite::connect_async(url).await else {
        return;
    };
    // The open packet, then the namespace connect with the key.
    let Some(Ok(Message::Text(open))) = ws.next().await else {
        return;
    };
    if !open.as_str().starts_with('0') {
        return;
    }
    let connect = format!("40{}", serde_json::json!({"token": key}));
    if ws.send(Message::Text(connect.into())).await.is_err() {
        return;
    }
    let mut buf = Vec::new();
    loop {
        let msg = tokio::select! {
            _ = stop.cancelled() => return,
            m = ws.next() => m,
        };
        let Some(Ok(msg)) = msg else { return };
        let Message::Text(text) = msg else { continue };
        let text = text.as_str();
        if text == "2" {
            let _ = ws.send(Message::Text("3".into())).await;
        } else if text.starts_with("40") {
            ready.fetch_add(1, Ordering::Relaxed);
        } else if text.starts_with("42") {
            buf.extend_from_slice(text.as_bytes());
            buf.push(b' ');
            scan(&mut buf, &tally);
        }
    }
}

async fn run() {
    let clients = env_usize("BENCH_CLIENTS", 5_000).max(1);
    let events = env_usize("BENCH_EVENTS", 40).max(1);
    let interval = Duration::from_millis(env_usize("BENCH_INTERVAL_MS", 250) as u64);
    let seconds = env_usize("BENCH_SECONDS", 180).clamp(10, 1200) as u64;
    let transport = std::env::var("BENCH_TRANSPORT").unwrap_or_else(|_| "both".into());

    let temp = tempfile::tempdir().expect("temp dir");
    let mut config = Config::defaults();
    config.server.data_dir = temp.path().to_path_buf();
    // Every client connects with the same key: the per-key API limit would refuse most.
    config.access.api_requests_per_minute = 10_000_000;
    let app = App::build(config, None).await.expect("app builds");
    let state = app.state.clone();
    let key = opsdeck::access::keys::create(
        &state.store,
        "bench",
        &opsdeck::access::Scopes::parse_list(&["read"]).expect("scopes"),
        &opsdeck::access::audit::Actor::new("bench", None),
    )
    .await
    .expect("key")
    .secret;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let cancel = CancellationToken::new();
    let server = tokio::spawn(app.serve(listener, cancel.clone()));

    println!(
        "realtime fan-out: {clients} clients, {events} events every {} ms, on loopback (one process, {} cores)",
        interval.as_millis(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let phases: Vec<&str> = match transport.as_str() {
        "sse" => vec!["sse"],
        "socketio" => vec!["socketio"],
        _ => vec!["sse", "socketio"],
    };
    for phase in phases {
        let tally = Arc::new(Tally::new(events));
        let ready = Arc::new(AtomicUsize::new(0));
        let stop = CancellationToken::new();
        let deadline = Instant::now() + Duration::from_secs(seconds);
        let started = Instant::now();
        // Connect in waves, so the accept queue is not flooded.
        let mut tasks = Vec::with_capacity(clients);
        for i in 0..clients {
            let (k, t, r, s) = (key.clone(), tally.clone(), ready.clone(), stop.clone());
            tasks.push(tokio::spawn(async move {
                if phase == "sse" {
                    sse_client(addr, k, t, r, s).await
                } else {
                    socketio_client(addr, k, t, r, s).await
                }
            }));
            if i % 250 == 249 {
                while ready.load(Ordering::Relaxed) + 250 < i && Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        }
        while ready.load(Ordering::Relaxed) < clients && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let connected = ready.load(Ordering::Relaxed);
        println!(
            "{phase}: {connected}/{clients} clients connected in {:.1} s, RSS {:.0} MiB",
            started.elapsed().as_secs_f64(),
            rss_mb()
        );
        let mut published = Vec::with_capacity(events);
        for n in 0..events {
            published.push(tally.base.elapsed().as_micros() as u64);
            state.events.publish(
                Channel::Alert,
                "alert.firing",
                serde_json::json!({"bench_n": n, "summary": "benchmark event", "labels": {"service": "api"}}),
            );
            tokio::time::sleep(interval).await;
        }
        // Until every connected client has every event, or the bound.
        let complete = |tally: &Tally| {
            tally
                .count
                .iter()
                .all(|c| c.load(Ordering::Relaxed) >= connected)
        };
        while !complete(&tally) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let mut to_last: Vec<Duration> = Vec::new();
        let mut short = 0;
        for (n, sent) in published.iter().enumerate() {
            if tally.count[n].load(Ordering::Relaxed) < connected {
                short += 1;
                continue;
            }
            let last = tally.last_us[n].load(Ordering::Relaxed);
            to_last.push(Duration::from_micros(last.saturating_sub(*sent)));
        }
        to_last.sort();
        let p50 = percentile(&to_last, 0.50);
        let p99 = percentile(&to_last, 0.99);
        let max = to_last.last().copied().unwrap_or_default();
        println!(
            "{phase}: publish → last of {connected} clients over {} events: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; \
             p99 / goal (500 ms) = {:.2}{}",
            to_last.len(),
            p50.as_secs_f64() * 1000.0,
            p99.as_secs_f64() * 1000.0,
            max.as_secs_f64() * 1000.0,
            p99.as_secs_f64() / GOAL.as_secs_f64(),
            if short > 0 {
                format!("; {short} events did not reach every client")
            } else {
                String::new()
            }
        );
        stop.cancel();
        for t in tasks {
            let _ = t.await;
        }
        // Let the server notice the closed connections before the next phase.
        let until = Instant::now() + Duration::from_secs(10);
        while state.realtime.clients() > 0 && Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    cancel.cancel();
    let _ = server.await;
}
