//! What each push channel sends and how its answer reads: the signed webhook of DESIGN.md,
//! DingTalk's custom robot (加签), WeCom's group robot, Feishu's custom bot (signed). Pure
//! code: the request is built here and sent by the lane.

use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::config::ChannelKind;

use super::Push;

type HmacSha256 = Hmac<Sha256>;

/// The most text each chat service takes in one message, in bytes (WeCom: 2048; DingTalk and
/// Feishu take about 20 000, kept under).
pub const DINGTALK_TEXT_MAX: usize = 18_000;
pub const WECOM_TEXT_MAX: usize = 2048;
pub const FEISHU_TEXT_MAX: usize = 18_000;

/// How many bytes of text a message of `kind` may carry for a person to read, once the
/// mentions DingTalk needs in the text (` @mobile` each) are in.
pub fn text_budget(kind: ChannelKind, mobiles: &[String]) -> usize {
    match kind {
        ChannelKind::Dingtalk => {
            let mentions: usize = mobiles.iter().map(|m| 2 + m.len()).sum();
            DINGTALK_TEXT_MAX.saturating_sub(mentions)
        }
        ChannelKind::Wecom => WECOM_TEXT_MAX,
        ChannelKind::Feishu => FEISHU_TEXT_MAX,
        ChannelKind::Webhook | ChannelKind::Mqtt | ChannelKind::Gpio => usize::MAX,
    }
}

/// A request to send.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpRequest {
    pub url: String,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

/// How a channel took a push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Delivered,
    /// The service says "too many": wait before the next.
    Throttled(String),
    Failed(String),
}

fn hmac(key: &[u8], msg: &[u8]) -> Vec<u8> {
    // HMAC takes keys of any length; `new_from_slice` cannot fail for it.
    let mut mac = <HmacSha256 as KeyInit>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
    mac.update(msg);
    mac.finalize().into_bytes().to_vec()
}

/// `sha256=<hex of HMAC-SHA256(secret, timestamp + "." + body)>` (DESIGN.md).
pub fn webhook_signature(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let mut msg = format!("{timestamp}.").into_bytes();
    msg.extend_from_slice(body);
    format!("sha256={}", hex::encode(hmac(secret.as_bytes(), &msg)))
}

/// The webhook body: one push as DESIGN.md gives it, or several as a digest
/// (`"event":"digest"` with the pushes in `alarms`).
pub fn webhook_body(pushes: &[Push], hub_id: &str, text: &str, now: &str) -> Vec<u8> {
    let value = match pushes {
        [one] => serde_json::to_value(one),
        many => Ok(serde_json::json!({
            "hub_id": hub_id,
            "event": "digest",
            "count": many.len(),
            "message": text,
            "ts": now,
            "alarms": many,
        })),
    };
    value
        .and_then(|v| serde_json::to_vec(&v))
        .unwrap_or_default()
}

pub fn webhook(url: &str, secret: &str, body: Vec<u8>, timestamp: i64) -> HttpRequest {
    HttpRequest {
        url: url.to_string(),
        headers: vec![
            ("content-type", "application/json".into()),
            ("x-parkhub-timestamp", timestamp.to_string()),
            (
                "x-parkhub-signature",
                webhook_signature(secret, timestamp, &body),
            ),
        ],
        body,
    }
}

/// DingTalk's 加签: base64(HMAC-SHA256(secret, timestamp_ms + "\n" + secret)), URL-encoded
/// into the query.
pub fn dingtalk_sign(secret: &str, timestamp_ms: i64) -> String {
    let msg = format!("{timestamp_ms}\n{secret}");
    base64::engine::general_purpose::STANDARD.encode(hmac(secret.as_bytes(), msg.as_bytes()))
}

fn json_request(url: String, body: serde_json::Value) -> HttpRequest {
    HttpRequest {
        url,
        headers: vec![("content-type", "application/json".into())],
        body: serde_json::to_vec(&body).unwrap_or_default(),
    }
}

/// A DingTalk custom robot's text message, @-mentioning `mobiles`.
pub fn dingtalk(
    url: &str,
    secret: Option<&str>,
    text: &str,
    mobiles: &[String],
    timestamp_ms: i64,
) -> HttpRequest {
    let mut url = url.to_string();
    if let Some(secret) = secret {
        let sign: String =
            url::form_urlencoded::byte_serialize(dingtalk_sign(secret, timestamp_ms).as_bytes())
                .collect();
        let sep = if url.contains('?') { '&' } else { '?' };
        url = format!("{url}{sep}timestamp={timestamp_ms}&sign={sign}");
    }
    // The robot shows a mention only if the text names the mobile too.
    let mut content = text.to_string();
    for m in mobiles {
        content.push_str(&format!(" @{m}"));
    }
    json_request(
        url,
        serde_json::json!({
            "msgtype": "text",
            "text": { "content": super::message::fit(&content, DINGTALK_TEXT_MAX) },
            "at": { "atMobiles": mobiles, "isAtAll": false },
        }),
    )
}

/// A WeCom group robot's text message (its key is in the URL); at most 2048 bytes of text.
pub fn wecom(url: &str, text: &str, mobiles: &[String]) -> HttpRequest {
    json_request(
        url.to_string(),
        serde_json::json!({
            "msgtype": "text",
            "text": {
                "content": super::message::fit(text, WECOM_TEXT_MAX),
                "mentioned_mobile_list": mobiles,
            },
        }),
    )
}

/// Feishu's signature: base64(HMAC-SHA256 keyed with timestamp + "\n" + secret, over nothing).
pub fn feishu_sign(secret: &str, timestamp: i64) -> String {
    let key = format!("{timestamp}\n{secret}");
    base64::engine::general_purpose::STANDARD.encode(hmac(key.as_bytes(), b""))
}

/// A Feishu custom bot's text message.
pub fn feishu(url: &str, secret: Option<&str>, text: &str, timestamp: i64) -> HttpRequest {
    let mut body = serde_json::json!({
        "msg_type": "text",
        "content": { "text": super::message::fit(text, FEISHU_TEXT_MAX) },
    });
    if let Some(secret) = secret {
        body["timestamp"] = timestamp.to_string().into();
        body["sign"] = feishu_sign(secret, timestamp).into();
    }
    json_request(url.to_string(), body)
}

/// Reads a channel's answer. The chat services answer HTTP 200 with an error code inside.
pub fn judge(kind: ChannelKind, status: u16, body: &[u8]) -> Verdict {
    let text = || String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned();
    let json = serde_json::from_slice::<serde_json::Value>(body).ok();
    // The code and message of a chat service's answer, and its codes for "too many".
    let (code_keys, msg_keys, label, throttled): (&[&str], &[&str], &str, &[i64]) = match kind {
        // "send too fast": the robot is held for 10 minutes.
        ChannelKind::Dingtalk => (&["errcode"], &["errmsg"], "errcode", &[130101, 410100]),
        // "api freq out of limit"
        ChannelKind::Wecom => (&["errcode"], &["errmsg"], "errcode", &[45009]),
        // New bots answer {"code":0,"msg":…}, old ones {"StatusCode":0,"StatusMessage":…};
        // 9499 "too many request", 11232 "frequency limited".
        ChannelKind::Feishu => (
            &["code", "StatusCode"],
            &["msg", "StatusMessage"],
            "code",
            &[9499, 11232],
        ),
        ChannelKind::Webhook | ChannelKind::Mqtt | ChannelKind::Gpio => (&[], &[], "", &[]),
    };
    let code = json
        .as_ref()
        .and_then(|v| code_keys.iter().find_map(|k| v.get(*k)?.as_i64()));
    let said = |c: i64| {
        let msg = json
            .as_ref()
            .and_then(|v| msg_keys.iter().find_map(|k| v.get(*k)))
            .cloned()
            .unwrap_or_default();
        format!("{label} {c}: {msg}")
    };
    // A "too many" code counts whatever the HTTP status: Feishu's Open API sends 11232 with
    // HTTP 400. Read as a plain failure, it had a rate-limited bot retried after a second or
    // two instead of left alone.
    if let Some(c) = code.filter(|c| throttled.contains(c)) {
        return Verdict::Throttled(format!("HTTP {status}, {}", said(c)));
    }
    if status == 429 {
        return Verdict::Throttled(format!("HTTP 429: {}", text()));
    }
    if !(200..300).contains(&status) {
        return Verdict::Failed(format!("HTTP {status}: {}", text()));
    }
    match kind {
        ChannelKind::Webhook | ChannelKind::Mqtt | ChannelKind::Gpio => Verdict::Delivered,
        ChannelKind::Dingtalk | ChannelKind::Wecom | ChannelKind::Feishu => match code {
            Some(0) => Verdict::Delivered,
            Some(c) => Verdict::Failed(said(c)),
            None if json.is_none() => Verdict::Failed(format!("not JSON: {}", text())),
            None => Verdict::Failed(format!("no {label}: {}", text())),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_webhook_signature_is_hmac_of_timestamp_dot_body() {
        // Worked out independently: printf '1700000000.{}' | openssl dgst -sha256 -hmac s3cret
        assert_eq!(
            webhook_signature("s3cret", 1_700_000_000, b"{}"),
            "sha256=97926816e98fbb41ccb1673225ff29a2f35369099990e1b1561651e7bd097ebf"
        );
    }

    #[test]
    fn dingtalk_signs_timestamp_newline_secret_and_url_encodes_it() {
        let req = dingtalk(
            "https://oapi.dingtalk.com/robot/send?access_token=T",
            Some("SECabc"),
            "【火警】…",
            &["13800000000".into()],
            1_700_000_000_000,
        );
        // Worked out with Python's hmac and base64.
        let sign = dingtalk_sign("SECabc", 1_700_000_000_000);
        assert_eq!(sign, "jcUpW0QmtKduN03n4JqQ0PBosVjqnM8gU7fIIvsDmCM=");
        assert_eq!(
            feishu_sign("sec", 1_700_000_000),
            "ttGYnPblC3CcNExnS7y5igm57JhpqZJtHpJ+TURiUeg="
        );
        let encoded: String = url::form_urlencoded::byte_serialize(sign.as_bytes()).collect();
        assert_eq!(
            req.url,
            format!("https://oapi.dingtalk.com/robot/send?access_token=T&timestamp=1700000000000&sign={encoded}")
        );
        let body: serde_json::Value = serde_json::from_slice(&req.body).unwrap();
        assert_eq!(body["msgtype"], "text");
        assert_eq!(body["at"]["atMobiles"][0], "13800000000");
        assert!(body["text"]["content"]
            .as_str()
            .unwrap()
            .ends_with("@13800000000"));
    }

    #[test]
    fn answers_are_read_as_each_service_means_them() {
        use ChannelKind::*;
        assert_eq!(judge(Webhook, 204, b""), Verdict::Delivered);
        assert!(matches!(judge(Webhook, 503, b"down"), Verdict::Failed(_)));
        assert!(matches!(judge(Webhook, 429, b""), Verdict::Throttled(_)));
        assert_eq!(
            judge(Dingtalk, 200, br#"{"errcode":0,"errmsg":"ok"}"#),
            Verdict::Delivered
        );
        assert!(matches!(
            judge(
                Dingtalk,
                200,
                br#"{"errcode":130101,"errmsg":"send too fast"}"#
            ),
            Verdict::Throttled(_)
        ));
        assert!(matches!(
            judge(
                Dingtalk,
                200,
                br#"{"errcode":310000,"errmsg":"sign not match"}"#
            ),
            Verdict::Failed(_)
        ));
        assert!(matches!(
            judge(Wecom, 200, br#"{"errcode":45009}"#),
            Verdict::Throttled(_)
        ));
        assert_eq!(
            judge(Feishu, 200, br#"{"StatusCode":0}"#),
            Verdict::Delivered
        );
        assert_eq!(
            judge(Feishu, 200, br#"{"code":0,"msg":"success"}"#),
            Verdict::Delivered
        );
        assert!(matches!(
            judge(Feishu, 200, br#"{"code":19021,"msg":"sign match fail"}"#),
            Verdict::Failed(_)
        ));
        assert!(matches!(
            judge(Dingtalk, 200, b"<html>"),
            Verdict::Failed(_)
        ));
        // Feishu's frequency limit comes with HTTP 400 too: still "too many", not a failure.
        assert!(matches!(
            judge(Feishu, 400, br#"{"code":11232,"msg":"frequency limited"}"#),
            Verdict::Throttled(_)
        ));
        assert!(matches!(
            judge(Feishu, 200, br#"{"code":9499,"msg":"Too Many Request"}"#),
            Verdict::Throttled(_)
        ));
        assert!(matches!(
            judge(Feishu, 400, br#"{"code":19021,"msg":"sign match fail"}"#),
            Verdict::Failed(_)
        ));
    }

    #[test]
    fn a_wecom_message_never_exceeds_its_limit() {
        let req = wecom(
            "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=K",
            &"烟".repeat(2000),
            &[],
        );
        let body: serde_json::Value = serde_json::from_slice(&req.body).unwrap();
        assert!(body["text"]["content"].as_str().unwrap().len() <= 2048);
    }
}
