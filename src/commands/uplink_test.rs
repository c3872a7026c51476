//! `parkhub uplink-test`: one test batch to the cloud, and a plain answer for the installer.

use std::path::Path;
use std::process::ExitCode;

use crate::config::{self, UplinkKind};

pub async fn run(path: &Path) -> anyhow::Result<ExitCode> {
    let loaded = match config::load(path) {
        Ok(l) => l,
        Err(d) => return Ok(super::report_config_errors(&d)),
    };
    let Some(u) = &loaded.config.uplink else {
        println!(
            "{}: no [uplink] section: nothing is sent to a cloud",
            path.display()
        );
        return Ok(ExitCode::from(2));
    };
    let target = match u.kind {
        UplinkKind::Http => format!("POST {}", u.url),
        UplinkKind::Mqtt => format!("{} topic parkhub/{}/up", u.url, loaded.config.hub.id),
    };
    match crate::uplink::test(&loaded).await? {
        Ok(took) => {
            println!(
                "uplink OK: {target} accepted a test batch in {} ms (token{} accepted)",
                took.as_millis(),
                if u.secret.is_some() && u.kind == UplinkKind::Http {
                    " and signature"
                } else {
                    ""
                }
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            println!("uplink FAILED: {target}: {e}");
            println!("  {}", hint(&e));
            Ok(ExitCode::from(1))
        }
    }
}

/// What an installer should look at, for what went wrong.
fn hint(error: &str) -> &'static str {
    if error.contains("HTTP 401")
        || error.contains("HTTP 403")
        || error.contains("NotAuthorized")
        || error.contains("BadUserNamePassword")
    {
        "the receiver refused the credentials: check uplink.token (and uplink.secret, which signs each batch)"
    } else if error.contains("HTTP 404") || error.contains("HTTP 405") {
        "the server answers but not at this path: check the path in uplink.url"
    } else if error.contains("HTTP 5") {
        "the receiver is there but failing: the hub would keep its data and retry"
    } else if error.contains("HTTP ") {
        "the receiver refused the batch: see its answer above"
    } else if error.contains("certificate") || error.contains("tls") || error.contains("TLS") {
        "TLS failed: check the host name in uplink.url and the server's certificate"
    } else {
        "nothing answered: check the host and port in uplink.url, and that this box can reach it"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_failure_points_the_installer_at_one_setting() {
        assert!(hint("HTTP 401 Unauthorized: bad token").contains("uplink.token"));
        assert!(hint("HTTP 404 Not Found: ").contains("path"));
        assert!(hint("error sending request: connection refused").contains("host and port"));
        assert!(hint("HTTP 503 Service Unavailable: ").contains("retry"));
    }
}
