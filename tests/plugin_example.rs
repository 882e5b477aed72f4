//! The example third-party plugin (examples/ip-filter), built by the build
//! script from its own crate and run by the real binary.

mod common;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_ip_filter_plugin_allows_and_denies_by_cidr() {
    let origin = Origin::start().await;
    let cfg = |allow: &str, deny: &str| {
        config(&format!(
            "[components.ip-filter]\nsource = \"{}\"\nvariables = {{ allow = \"{allow}\", deny = \"{deny}\" }}\n\n[[route]]\norigin = \"{}\"\nmiddleware = [\"ip-filter\"]\n",
            wasm("ip_filter"),
            origin.url()
        ))
    };
    let c = client();

    let allowed = Gateway::start(&cfg("127.0.0.0/8", ""));
    assert_eq!(get(&c, &allowed.url("/in")).await.status, 200);
    assert_eq!(origin.count(), 1);

    let denied = Gateway::start(&cfg("10.0.0.0/8", ""));
    let r = get(&c, &denied.url("/out")).await;
    assert_eq!(r.status, 403);
    assert_eq!(r.header("content-type"), Some("application/problem+json"));

    let deny_wins = Gateway::start(&cfg("127.0.0.0/8", "127.0.0.1/32"));
    assert_eq!(get(&c, &deny_wins.url("/out")).await.status, 403);
    assert_eq!(origin.count(), 1);

    // A bad CIDR is refused at startup (tests/filter_path.rs); nothing
    // reached the origin meanwhile.
    assert_eq!(origin.count(), 1);
}
