//! The one line a guard reads at a glance on a phone: what, where, when. zh-CN or English.
//! Pure code.

use crate::alarm::{Category, Severity};
use crate::config::Language;

use super::Push;

fn category(p: &Push) -> Option<Category> {
    p.category.parse().ok()
}

fn severity(p: &Push) -> Option<Severity> {
    p.severity.parse().ok()
}

/// `3号楼 2F 东走廊`: the parts of the location the config gives.
fn place(p: &Push) -> String {
    let l = &p.location;
    [&l.building, &l.floor, &l.zone, &l.room]
        .into_iter()
        .flatten()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(" ")
}

/// `10:02:03` of the event's time (already in the park's time zone).
fn clock(p: &Push) -> String {
    chrono::DateTime::parse_from_rfc3339(&p.ts)
        .map(|t| t.format("%H:%M:%S").to_string())
        .unwrap_or_default()
}

fn detail(p: &Push) -> String {
    match (&p.point, &p.value) {
        (Some(point), v) if !v.is_null() => format!("（{point}={v}）"),
        _ => String::new(),
    }
}

/// One line for one push.
pub fn line(p: &Push, lang: Language) -> String {
    let cat = category(p);
    let sev = severity(p);
    let place = place(p);
    let sep = if place.is_empty() { "" } else { " " };
    match lang {
        Language::ZhCn => {
            let mut tag = cat.map_or("告警", Category::zh).to_string();
            if cat != Some(Category::Fire) {
                if let Some(s) = sev {
                    tag = format!("{tag}·{}", s.zh());
                }
            }
            let event = match p.event.as_str() {
                "cleared" => "·已恢复".to_string(),
                "acknowledged" => format!("·已确认 {}", p.who.as_deref().unwrap_or("")),
                "escalated" => "·升级：无人确认".to_string(),
                "repeated" => "·未确认，再次提醒".to_string(),
                _ => String::new(),
            };
            let comment = p
                .comment
                .as_deref()
                .filter(|c| !c.is_empty())
                .map(|c| format!("「{c}」"))
                .unwrap_or_default();
            format!(
                "【{tag}{}】{place}{sep}{}：{}{}{comment} {}",
                event.trim_end(),
                p.device_name,
                p.summary,
                detail(p),
                clock(p)
            )
        }
        Language::En => {
            let mut tag = cat.map_or("Alarm", Category::en).to_string();
            if cat != Some(Category::Fire) {
                if let Some(s) = sev {
                    tag = format!("{tag}, {s}");
                }
            }
            let event = match p.event.as_str() {
                "cleared" => " · cleared".to_string(),
                "acknowledged" => format!(" · acknowledged by {}", p.who.as_deref().unwrap_or("?")),
                "escalated" => " · ESCALATED: nobody acknowledged".to_string(),
                "repeated" => " · still not acknowledged".to_string(),
                _ => String::new(),
            };
            let detail = match (&p.point, &p.value) {
                (Some(point), v) if !v.is_null() => format!(" ({point}={v})"),
                _ => String::new(),
            };
            format!(
                "[{tag}{event}] {place}{sep}{}: {}{detail} {}",
                p.device_name,
                p.summary_en,
                clock(p)
            )
        }
    }
}

/// Lines of a digest at the most; the rest are counted.
const DIGEST_LINES: usize = 30;

/// One message for several pushes (a group's window, or past a channel's rate limit).
pub fn digest(pushes: &[Push], lang: Language) -> String {
    digest_within(pushes, lang, usize::MAX)
}

/// A digest of at most `max` bytes (WeCom takes 2048): whole lines while they fit, then the
/// count of the rest. Cutting the text at the limit instead (what the channel's last-resort
/// `fit` does) dropped the alarms past the cut without a word, the count line with them.
pub fn digest_within(pushes: &[Push], lang: Language, max: usize) -> String {
    if let [one] = pushes {
        return fit(&line(one, lang), max);
    }
    let mut out = match lang {
        Language::ZhCn => format!("【告警汇总】共 {} 条", pushes.len()),
        Language::En => format!("[Alarm digest] {} alarms", pushes.len()),
    };
    let more = |n: usize| match lang {
        Language::ZhCn => format!("……另有 {n} 条，请在控制台查看"),
        Language::En => format!("… and {n} more: see the console"),
    };
    // Room kept for the count line, at its longest.
    let count_room = 1 + more(pushes.len()).len();
    // The urgent first, then as they came.
    let mut order: Vec<&Push> = pushes.iter().collect();
    order.sort_by_key(|p| {
        std::cmp::Reverse(crate::alarm::is_urgent(
            severity(p).unwrap_or(Severity::Warning),
            category(p).unwrap_or(Category::Comm),
        ))
    });
    let mut listed = 0;
    for p in order.iter().take(DIGEST_LINES) {
        let l = line(p, lang);
        let left_after = pushes.len() - listed - 1;
        let room = if left_after > 0 { count_room } else { 0 };
        if out.len() + 1 + l.len() + room > max {
            break;
        }
        out.push('\n');
        out.push_str(&l);
        listed += 1;
    }
    if listed < pushes.len() {
        out.push('\n');
        out.push_str(&more(pushes.len() - listed));
    }
    fit(&out, max)
}

/// Cuts `text` to at most `max` bytes on a character boundary, marking the cut.
pub fn fit(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max.saturating_sub('…'.len_utf8());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Location;

    pub fn smoke(event: &str) -> Push {
        Push {
            hub_id: "hz-demo-01".into(),
            alarm_id: "17".into(),
            event: event.into(),
            severity: "critical".into(),
            category: "fire".into(),
            device_id: "smoke-b3-2f-07".into(),
            device_name: "3号楼2层烟感07".into(),
            point: Some("smoke".into()),
            value: serde_json::json!(true),
            location: Location {
                building: Some("3号楼".into()),
                floor: Some("2F".into()),
                zone: Some("东走廊".into()),
                room: None,
                tenant: None,
            },
            department: "fire-control".into(),
            message: String::new(),
            raised_at: "2026-11-26T10:02:03+08:00".into(),
            ts: "2026-11-26T10:02:03+08:00".into(),
            rule: "smoke".into(),
            summary: "烟雾报警".into(),
            summary_en: "Smoke detected".into(),
            who: None,
            comment: None,
        }
    }

    #[test]
    fn a_fire_alarm_reads_what_where_and_when_in_one_line() {
        assert_eq!(
            line(&smoke("raised"), Language::ZhCn),
            "【火警】3号楼 2F 东走廊 3号楼2层烟感07：烟雾报警（smoke=true） 10:02:03"
        );
        assert_eq!(
            line(&smoke("raised"), Language::En),
            "[FIRE] 3号楼 2F 东走廊 3号楼2层烟感07: Smoke detected (smoke=true) 10:02:03"
        );
    }

    #[test]
    fn other_events_say_what_happened_to_the_alarm() {
        let mut ack = smoke("acknowledged");
        ack.who = Some("张三".into());
        ack.comment = Some("已到现场".into());
        assert!(line(&ack, Language::ZhCn).starts_with("【火警·已确认 张三】"));
        assert!(line(&ack, Language::ZhCn).contains("「已到现场」"));
        let mut lift = smoke("escalated");
        lift.category = "lift".into();
        assert!(line(&lift, Language::ZhCn).starts_with("【电梯·紧急·升级：无人确认】"));
        assert!(line(&smoke("cleared"), Language::En).starts_with("[FIRE · cleared]"));
    }

    #[test]
    fn a_digest_lists_the_urgent_first_and_counts_what_does_not_fit() {
        let mut minor = smoke("raised");
        minor.category = "comm".into();
        minor.severity = "minor".into();
        let mut pushes = vec![minor.clone(); 40];
        pushes.push(smoke("raised"));
        let d = digest(&pushes, Language::ZhCn);
        let lines: Vec<&str> = d.lines().collect();
        assert_eq!(lines[0], "【告警汇总】共 41 条");
        assert!(lines[1].starts_with("【火警】"), "{}", lines[1]);
        assert_eq!(lines.len(), 1 + 30 + 1);
        assert!(lines[31].contains("另有 11 条"));
    }

    #[test]
    fn a_digest_within_a_byte_limit_lists_whole_lines_and_counts_the_rest() {
        let pushes = vec![smoke("raised"); 40];
        let d = digest_within(&pushes, Language::ZhCn, 2048);
        assert!(d.len() <= 2048, "{}", d.len());
        let lines: Vec<&str> = d.lines().collect();
        let listed = lines.len() - 2;
        assert!(listed > 10, "{d}");
        assert!(lines[1..=listed]
            .iter()
            .all(|l| *l == line(&pushes[0], Language::ZhCn)));
        assert_eq!(
            lines[listed + 1],
            format!("……另有 {} 条，请在控制台查看", 40 - listed)
        );
        // Everything fits: nothing counted.
        let two = digest_within(&pushes[..2], Language::En, 2048);
        assert_eq!(two.lines().count(), 3);
    }

    #[test]
    fn fitting_cuts_on_a_character_boundary() {
        let s = "烟雾报警".repeat(10);
        let f = fit(&s, 20);
        assert!(f.len() <= 20);
        assert!(f.ends_with('…'));
        assert_eq!(fit("short", 20), "short");
    }
}
