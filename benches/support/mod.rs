//! What several benchmarks share.

// Each benchmark is a crate of its own and uses some of these.
#![allow(dead_code)]

use std::sync::Arc;

use tokio_rustls::rustls;

/// A reqwest client for the hub's plain-HTTP API on loopback. The crate builds reqwest without
/// a crypto provider of its own (ring is configured where TLS is used), so one is given here.
pub fn plain_client(pool: usize) -> reqwest::Client {
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("ring supports the default protocol versions")
    .with_root_certificates(rustls::RootCertStore::empty())
    .with_no_client_auth();
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .pool_max_idle_per_host(pool)
        .build()
        .expect("a plain HTTP client builds")
}

/// A TCP port free on loopback now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// What a figure must be to pass.
#[derive(Clone, Copy)]
pub enum Target {
    AtMost(f64),
    AtLeast(f64),
    /// Shown for the record; nothing to meet.
    None,
}

/// Prints one headline figure as a machine-readable line for `scripts/bench`:
/// `FIGURE<TAB>name<TAB>value<TAB>unit<TAB>target` with target `<= X`, `>= X` or `-`. The value
/// is printed as rounded as the human line shows it (`decimals`), so that the verdict is the
/// one a reader of that line would give.
pub fn figure(name: &str, value: f64, decimals: usize, unit: &str, target: Target) {
    let target = match target {
        Target::AtMost(x) => format!("<= {x}"),
        Target::AtLeast(x) => format!(">= {x}"),
        Target::None => "-".into(),
    };
    println!("FIGURE\t{name}\t{value:.decimals$}\t{unit}\t{target}");
}
