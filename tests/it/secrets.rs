//! Secrets given with a server (issue #23): a simulator that, as a proxy
//! in front of ComfyUI, requires a password (basic auth), a query token and
//! a header.

use base64::Engine as _;
use comfy_batch::sim::SimConfig;

use crate::harness::sim_with;

const USER: &str = "user";
const PASSWORD: &str = "s3cretpass";
const TOKEN: &str = "t0psecret";
const HEADER: &str = "h3adervalue";

/// `Authorization: Basic …` for [`USER`]:[`PASSWORD`].
fn basic() -> String {
    let pair = format!("{USER}:{PASSWORD}");
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(pair)
    )
}

/// A simulator that answers 401 unless a request carries the password (as
/// basic auth), the token and the header: a proxy in front of ComfyUI.
/// Some prompts fail (seeded) and every socket drops now and then, so
/// failures, annotations and reconnects are part of the run.
async fn guarded_sim() -> comfy_batch::sim::SimHandle {
    sim_with(SimConfig {
        require_headers: vec![
            ("Authorization".into(), basic()),
            ("X-Api-Key".into(), HEADER.into()),
        ],
        require_query: vec![("token".into(), TOKEN.into())],
        fail_rate: 0.4,
        seed: 3,
        drop_ws_every: Some(30),
        ..SimConfig::default()
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_guarded_simulator_refuses_a_request_without_every_credential() {
    let s = guarded_sim().await;
    let client = reqwest::Client::new();
    let status = |query: &'static str, headers: &[(&'static str, String)]| {
        let mut request = client.get(format!("{}/api/system_stats{query}", s.url()));
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        async move { request.send().await.unwrap().status().as_u16() }
    };
    let auth = ("Authorization", basic());
    let key = ("X-Api-Key", HEADER.to_string());
    let query = "?token=t0psecret";
    assert_eq!(status(query, &[auth.clone(), key.clone()]).await, 200);
    assert_eq!(status("", &[auth.clone(), key.clone()]).await, 401);
    assert_eq!(
        status("?token=other", &[auth.clone(), key.clone()]).await,
        401
    );
    assert_eq!(status(query, &[key]).await, 401);
    assert_eq!(status(query, &[auth]).await, 401);
    // The websocket handshake is refused the same way.
    let ws = format!("{}/ws?clientId=x", s.url().replace("http://", "ws://"));
    let refused = tokio_tungstenite::connect_async(ws.as_str()).await;
    assert!(refused.is_err(), "a handshake without credentials");
}
