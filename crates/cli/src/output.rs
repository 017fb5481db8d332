//! How results are printed: tables, dates, JSON shapes; and the helpers every command uses.

/// `println!` that ends the program quietly when stdout is closed (`trellisctl ... | head`).
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if let Err(e) = writeln!(std::io::stdout().lock(), $($arg)*) {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                std::process::exit(0);
            }
            eprintln!("trellisctl: cannot write the output: {e}");
            std::process::exit(1);
        }
    }};
}

pub(crate) use out;

use anyhow::{anyhow, Context, Result};
use serde_json::{json, Value};
use trellis_client::v1 as pb;

pub(crate) fn read(path: &std::path::Path) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}

pub(crate) fn api(s: tonic::Status) -> anyhow::Error {
    anyhow!("{}", trellis_client::Error::from(s))
}

/// Most pages one listing reads (a million items at 1,000 a page).
const MAX_PAGES: usize = 1_000;

/// Every item of a paged listing. `page(token)` fetches one page: its items and the next
/// token (empty after the last page).
pub(crate) async fn all_pages<T, F, Fut>(mut page: F) -> Result<Vec<T>>
where
    F: FnMut(String) -> Fut,
    Fut: std::future::Future<Output = Result<(Vec<T>, String)>>,
{
    let mut all = Vec::new();
    let mut token = String::new();
    for _ in 0..MAX_PAGES {
        let (items, next) = page(token).await?;
        all.extend(items);
        if next.is_empty() {
            return Ok(all);
        }
        token = next;
    }
    Err(anyhow!("the listing has more than {MAX_PAGES} pages"))
}

/// Epoch milliseconds as an RFC 3339 UTC time to the second; `-` for none (0).
pub(crate) fn ms(t: i64) -> String {
    match chrono::DateTime::from_timestamp_millis(t) {
        Some(d) if t != 0 => d.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        _ => "-".into(),
    }
}

/// One record as `name  value` lines, names aligned; empty values are left out.
pub(crate) fn fields(rows: &[(&str, String)]) -> Vec<String> {
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    rows.iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| format!("{k:<width$}  {v}"))
        .collect()
}

/// A duration between two epoch-millisecond times, as `1.234 s`.
pub(crate) fn took(start: i64, stop: i64) -> String {
    if start == 0 || stop == 0 || stop < start {
        return String::new();
    }
    format!("{:.3} s", (stop - start) as f64 / 1000.0)
}

/// Prints rows as a table: left-aligned columns two spaces apart, no borders, no trailing
/// spaces.
pub(crate) fn table(headers: &[&str], rows: Vec<Vec<String>>) {
    for line in render(headers, rows) {
        out!("{line}");
    }
}

fn render(headers: &[&str], rows: Vec<Vec<String>>) -> Vec<String> {
    let mut t = comfy_table::Table::new();
    t.load_preset(comfy_table::presets::NOTHING)
        .set_header(headers.iter().copied())
        .add_rows(rows);
    let last = headers.len().saturating_sub(1);
    for (i, col) in t.column_iter_mut().enumerate() {
        col.set_padding((0, if i == last { 0 } else { 2 }));
    }
    t.lines().map(|l| l.trim_end().to_string()).collect()
}

/// A state machine type's name (`STANDARD`, `EXPRESS`).
pub(crate) fn type_name(t: i32) -> &'static str {
    pb::StateMachineType::try_from(t)
        .unwrap_or(pb::StateMachineType::Standard)
        .as_str_name()
}

pub(crate) fn details(e: &pb::HistoryEvent) -> Value {
    serde_json::from_str(&e.details_json).unwrap_or(Value::Null)
}

pub(crate) fn event_json(e: &pb::HistoryEvent) -> Value {
    json!({"id": e.id, "previousEventId": e.previous_event_id, "timestamp": e.timestamp,
           "type": e.r#type, "details": details(e)})
}

pub(crate) fn state_name(e: &pb::HistoryEvent) -> Option<String> {
    let d = details(e);
    d.as_object()?
        .values()
        .find_map(|v| v.get("name").and_then(Value::as_str).map(str::to_string))
}

/// Every state machine, every page.
pub(crate) async fn all_machines(
    c: &trellis_client::Client,
) -> Result<Vec<trellis_client::v1::StateMachineListItem>> {
    all_pages(|next_token| {
        let mut sm = c.state_machines.clone();
        async move {
            let r = sm
                .list_state_machines(trellis_client::v1::ListStateMachinesRequest {
                    max_results: 1000,
                    next_token,
                })
                .await
                .map_err(api)?
                .into_inner();
            Ok((r.state_machines, r.next_token))
        }
    })
    .await
}

/// The ARN of a state machine given by ARN or by name (looked up in the listing).
pub(crate) async fn machine_arn(c: &mut trellis_client::Client, given: &str) -> Result<String> {
    if given.starts_with("arn:") {
        return Ok(given.to_string());
    }
    all_machines(c)
        .await?
        .into_iter()
        .find(|m| m.name == given)
        .map(|m| m.state_machine_arn)
        .ok_or_else(|| anyhow!("no state machine is named '{given}' (give its name or ARN)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_utc_seconds() {
        assert_eq!(ms(0), "-");
        assert_eq!(ms(1_700_000_000_123), "2023-11-14T22:13:20Z");
        assert_eq!(ms(951_782_400_000), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn tables_are_aligned_two_spaces_apart() {
        let lines = render(
            &["NODE", "STATE", "GRPC"],
            vec![
                vec!["1".into(), "UP".into(), "127.0.0.1:7301".into()],
                vec!["12".into(), "DRAINING".into(), "-".into()],
            ],
        );
        assert_eq!(
            lines,
            vec![
                "NODE  STATE     GRPC",
                "1     UP        127.0.0.1:7301",
                "12    DRAINING  -",
            ]
        );
    }

    #[test]
    fn type_names() {
        assert_eq!(type_name(1), "EXPRESS");
        assert_eq!(type_name(0), "STANDARD");
    }
}
